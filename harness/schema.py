"""Declared shapes of the JSON the harness reads back, checked once where a file is read.

A shape is a `Leaf` (a type test, e.g. `NUMBER`), `Opt` (None allowed), `ListOf`, `MapOf` (an
object with any keys) or `Obj` (an object whose listed keys are checked when present, some of them
required, other keys left alone, and an optional rule across them). `conform` raises a `TypeError`
naming the first field that does not fit, so the readers behind it (reports, comparisons, exports)
can index and format without guarding each use. A bool is never a number; NaN and Infinity are
numbers only where a shape allows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Leaf:
    what: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class Opt:
    shape: Any


@dataclass(frozen=True)
class ListOf:
    item: Any
    length: int | None = None  # exact length, when fixed
    min_length: int = 0


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Obj:
    fields: dict[str, Any]
    required: tuple[str, ...] = ()
    rule: tuple[Callable[[dict[str, Any]], bool], str] | None = None  # (holds, what it demands)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


ANY = Leaf("anything", lambda v: True)
STR = Leaf("a string", lambda v: isinstance(v, str))
INT = Leaf("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
COUNT = Leaf("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
NUMBER = Leaf("a number", _is_number)
FINITE = Leaf("a finite number", lambda v: _is_number(v) and math.isfinite(v))
FRACTION = Leaf("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def conform(value: Any, shape: Any, where: str) -> None:
    """Raise a `TypeError` naming ``where`` (a dotted path) when ``value`` does not fit ``shape``."""
    if isinstance(shape, Opt):
        if value is not None:
            conform(value, shape.shape, where)
    elif isinstance(shape, Leaf):
        if not shape.test(value):
            raise TypeError(f"{where} is {_show(value)}, not {shape.what}")
    elif isinstance(shape, ListOf):
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where} is {_show(value)}, not a list")
        if (shape.length is not None and len(value) != shape.length) or len(value) < shape.min_length:
            want = shape.length if shape.length is not None else f"at least {shape.min_length}"
            raise TypeError(f"{where} holds {len(value)} items, not {want}")
        for i, item in enumerate(value):
            conform(item, shape.item, f"{where}[{i}]")
    elif isinstance(shape, MapOf | Obj):
        if not isinstance(value, dict):
            raise TypeError(f"{where} is {_show(value)}, not an object")
        if isinstance(shape, MapOf):
            for k, v in value.items():
                conform(v, shape.value, f"{where}.{k}")
            return
        lacking = [k for k in shape.required if k not in value]
        if lacking:
            raise TypeError(f"{where} has no {', '.join(lacking)}")
        for k, sub in shape.fields.items():
            if k in value:
                conform(value[k], sub, f"{where}.{k}")
        if shape.rule is not None and not shape.rule[0](value):
            raise TypeError(f"{where}: {shape.rule[1]}")
    else:
        raise AssertionError(f"not a shape: {shape!r}")
