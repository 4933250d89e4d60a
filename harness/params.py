"""Declared parameters: a type, a range, choices and a doc line for every parameter of a registry entry.

An entry declares its parameters as data next to its code: a ``PARAMS`` class attribute (merged over
the class's bases) or the ``params=`` argument of ``Registry.register``. The type, the default and
whether ``None`` is allowed come from the factory's typed signature; the declaration adds the range
(``ge``/``gt``/``le``/``lt``), the choices and the doc. `Registry.create` checks every value once,
from the declaration, before the factory runs:

- a bool is never taken as a number, and a number never as a bool;
- NaN and infinities are refused unless a parameter declares ``finite=False``;
- an integral float (``20.0``) is accepted as an integer, any other float is not;
- lists are checked item by item against ``item``.

Errors are one line naming the entry, the parameter, the value and what is allowed
(`harness.errors.UsageError`). Command-line text (``-p key=value``, dataset specs) is converted by
the declared type first (`Param.parse`), so ``label_smoothing=abc`` is "not a number", not a crash.
This module is a leaf (it imports only `harness.errors`), so attacks/ and defenses/ can both use it.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import difflib
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError

KINDS = ("bool", "int", "float", "str", "list", "dict", "callable", "any")
# How each kind is named in messages and in `harness list KIND NAME`.
KIND_NAMES = {
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "str": "string",
    "list": "list",
    "dict": "table",
    "callable": "function",
    "any": "any value",
}


class _Missing:
    """The default of a required parameter."""

    def __repr__(self) -> str:
        return "required"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Param:
    """One parameter's declaration: kind(s), range, choices, nullability and a doc line.

    Fields left at None are filled from the factory's signature by `resolve` (``kind`` from the
    annotation, ``nullable`` from ``X | None``, ``default`` from the default value).
    """

    doc: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    kind: str | tuple[str, ...] | None = None  # a string is one kind
    nullable: bool | None = None
    finite: bool = True
    item: Param | None = None
    max_len: int | None = None
    # Canonicalises an accepted value (e.g. norm aliases); may raise UsageError.
    convert: Callable[[Any], Any] | None = None
    default: Any = MISSING
    declared: bool = True  # False for parameters the entry did not declare (derived from the signature only)

    def __post_init__(self) -> None:
        if isinstance(self.kind, str):
            object.__setattr__(self, "kind", (self.kind,))
        for k in self.kind or ():
            if k not in KINDS:
                raise ValueError(f"unknown parameter kind {k!r}")

    # ---- description -----------------------------------------------------------------------------
    @property
    def kinds(self) -> tuple[str, ...]:
        return self.kind or ("any",)

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def interval(self) -> str:
        """The numeric range in interval notation, e.g. ``[1, ∞)`` or ``(0, 1]``; '' when unbounded."""
        lo, lo_open = (self.gt, True) if self.gt is not None else (self.ge, False)
        hi, hi_open = (self.lt, True) if self.lt is not None else (self.le, False)
        if lo is None and hi is None:
            return ""
        left = "(-∞" if lo is None else f"{'(' if lo_open else '['}{_num(lo)}"
        right = "∞)" if hi is None else f"{_num(hi)}{')' if hi_open else ']'}"
        return f"{left}, {right}"

    def type_name(self) -> str:
        parts = []
        for k in self.kinds:
            name = KIND_NAMES[k]
            if k == "list" and self.item is not None:
                name = f"list of {self.item.allowed(plural=True)}"
                if self.max_len is not None:
                    name += f" (at most {self.max_len})"
            parts.append(name)
        return " or ".join(parts)

    def allowed(self, plural: bool = False) -> str:
        """What is accepted, in words: 'integer in [1, ∞)', "one of 'ce', 'margin'", '... or None'."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
            if "callable" in self.kinds:
                text += " (or a function)"
        else:
            text = self.type_name()
            if plural and text in KIND_NAMES.values() and text != "any value":
                text += "s"
            iv = self.interval()
            if iv:
                text += f" in {iv}"
            if not self.finite and ("float" in self.kinds):
                text += " (inf allowed)"
        if self.nullable:
            text += " or None"
        return text

    # ---- command-line text -------------------------------------------------------------------------
    def parse(self, text: str) -> Any:
        """Command-line text converted by the declared kind; text that fits no kind is returned as is
        (the check then says what was wrong with it)."""
        t = text.strip()
        kinds = self.kinds
        if t.lower() in ("none", "null") and (self.nullable or "any" in kinds):
            return None
        if "bool" in kinds and t.lower() in ("true", "false"):
            return t.lower() == "true"
        if "int" in kinds:
            try:
                return int(t)
            except ValueError:
                pass
            f = _float(t)
            if f is not None and f.is_integer() and "float" not in kinds:
                return int(f)
        if "float" in kinds:
            f = _float(t)
            if f is not None:
                return f
        if "list" in kinds:
            value = _literal(t) if t[:1] in "[(" else [t]
            if isinstance(value, str):  # [a, b] with bare words: split on the commas
                value = [v.strip() for v in t[1:-1].split(",") if v.strip()] if t[-1:] in "])" else value
            if isinstance(value, (list, tuple)):
                item = self.item or Param()
                return [item.parse(v) if isinstance(v, str) else v for v in value]
        if "dict" in kinds and t[:1] == "{":
            return _literal(t)
        if "str" in kinds:
            return _unquote(t)
        if "any" in kinds:
            return _generic(t)
        return _unquote(t)

    # ---- the check ---------------------------------------------------------------------------------
    def check(self, value: Any, name: str, where: str) -> Any:
        """``value`` accepted (and normalised: int for integer kinds, float for numbers), else UsageError."""
        if value is None:
            if self.nullable or "any" in self.kinds:
                return None
            self._fail(value, name, where, "is not allowed (None)")
        out = self._typed(value, name, where)
        if isinstance(out, float) and not math.isfinite(out) and (self.finite or math.isnan(out)):
            self._fail(value, name, where, "is not a finite number")
        if (
            isinstance(out, (int, float))
            and not isinstance(out, bool)
            and (
                (self.ge is not None and not out >= self.ge)
                or (self.gt is not None and not out > self.gt)
                or (self.le is not None and not out <= self.le)
                or (self.lt is not None and not out < self.lt)
            )
        ):
            self._fail(value, name, where, "is out of range")
        if isinstance(out, (list, tuple)) and self.max_len is not None and len(out) > self.max_len:
            self._fail(value, name, where, f"has {len(out)} items, more than {self.max_len}")
        if self.convert is not None:
            try:
                out = self.convert(out)
            except UsageError as e:
                raise UsageError(f"{where}: {name} = {_short(value)}: {e.what}", e.hint) from None
        if self.choices is not None and not callable(out) and out not in self.choices:
            close = difflib.get_close_matches(out, [c for c in self.choices if isinstance(c, str)], n=1, cutoff=0.6)
            suggestion = f" (did you mean {close[0]!r}?)" if isinstance(out, str) and close else ""
            self._fail(value, name, where, f"is not a valid choice{suggestion}")
        return out

    def _typed(self, value: Any, name: str, where: str) -> Any:
        kinds = self.kinds
        if "any" in kinds:
            return value
        is_bool = isinstance(value, bool)
        if "bool" in kinds and is_bool:
            return value
        if not is_bool and isinstance(value, numbers.Real):
            if "int" in kinds:
                if isinstance(value, numbers.Integral):
                    return int(value)
                f = float(value)
                if f.is_integer() and "float" not in kinds:
                    return int(f)
            if "float" in kinds:
                try:
                    return float(value)
                except OverflowError:
                    self._fail(value, name, where, "is too large for a number")
            if "int" in kinds and math.isfinite(float(value)):
                self._fail(value, name, where, "is not an integer")
        if "str" in kinds and isinstance(value, str):
            return value
        if "list" in kinds and isinstance(value, (list, tuple)):
            item = self.item or Param()
            checked = [item.check(v, f"{name}[{i}]", where) for i, v in enumerate(value)]
            return type(value)(checked) if isinstance(value, tuple) else checked
        if "dict" in kinds and isinstance(value, Mapping):
            return value
        if "callable" in kinds and callable(value) and not isinstance(value, (str, type)):
            return value
        if is_bool and {"int", "float"} & set(kinds):
            self._fail(value, name, where, "is a boolean, not a number")
        if {"int", "float"} & set(kinds) and isinstance(value, float):
            self._fail(value, name, where, "is not a finite number")
        self._fail(value, name, where, f"is {_article(_type_word(value))}")
        raise AssertionError("unreachable")

    def _fail(self, value: Any, name: str, where: str, problem: str) -> None:
        hint = f"{name}: {self.doc}" if self.doc else f"{name}: see the entry's parameter table"
        raise UsageError(f"{where}: {name} = {_short(value)} {problem}; allowed: {self.allowed()}", hint)


@dataclass(frozen=True)
class Reference:
    """An attack's reference budget: the minimum of each budget parameter, and where it comes from.

    A suite entry below it gets a ``weaker-than-reference`` finding beside its number.
    """

    budget: Mapping[str, int] = field(default_factory=dict)
    source: str = ""


# ---- declarations from signatures --------------------------------------------------------------------
def declared_params(factory: Any, extra: Mapping[str, Param] | None = None) -> dict[str, Param]:
    """The ``PARAMS`` declarations of a class and its bases (subclass wins), plus ``extra``."""
    out: dict[str, Param] = {}
    if isinstance(factory, type):
        for cls in reversed(factory.__mro__):
            out.update(vars(cls).get("PARAMS", {}) or {})
    out.update(extra or {})
    return out


def resolve(factory: Any, declared: Mapping[str, Param] | None = None) -> tuple[dict[str, Param], bool]:
    """Complete declarations of every public keyword parameter of ``factory``, and whether it takes ``**kwargs``.

    The kind and nullability come from the type annotation unless declared; the default from the
    signature (or the dataclass field). Parameters whose names start with '_' are private: not listed.
    """
    declared = dict(declared or {})
    hints = _hints(factory)
    out: dict[str, Param] = {}
    takes_any = False
    for pname, default in _signature(factory):
        if pname is None:
            takes_any = True
            continue
        if pname.startswith("_"):
            continue
        decl = declared.get(pname)
        kind, nullable, item_tp = _kind_of(hints.get(pname, Any))
        p = decl or Param(declared=False)
        changes: dict[str, Any] = {"default": default}
        if p.kind is None:
            changes["kind"] = kind
        if p.nullable is None:
            changes["nullable"] = nullable or (default is None)
        if "list" in (p.kind or kind) and p.item is None:
            ik, inull, _ = _kind_of(item_tp)
            changes["item"] = Param(kind=ik, nullable=inull, declared=p.declared)
        elif p.item is not None and p.item.kind is None:
            ik, inull, _ = _kind_of(item_tp)
            changes["item"] = dataclasses.replace(p.item, kind=ik, nullable=p.item.nullable or inull)
        out[pname] = dataclasses.replace(p, **changes)
    return out, takes_any


def _signature(factory: Any) -> list[tuple[str | None, Any]]:
    """(name, default) of the keyword parameters; (None, None) for a ``**kwargs`` catch-all."""
    if dataclasses.is_dataclass(factory):
        out: list[tuple[str | None, Any]] = []
        for f in dataclasses.fields(factory):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out.append((f.name, f.default))
            elif f.default_factory is not dataclasses.MISSING:
                out.append((f.name, f.default_factory()))
            else:
                out.append((f.name, MISSING))
        return out
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return [(None, None)]
    out = []
    for n, p in sig.parameters.items():
        if n == "self":
            continue
        if p.kind == p.VAR_KEYWORD:
            out.append((None, None))
        elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            out.append((n, MISSING if p.default is p.empty else p.default))
    return out


def _hints(factory: Any) -> dict[str, Any]:
    target = factory
    if isinstance(factory, type) and not dataclasses.is_dataclass(factory):
        target = factory.__init__
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to "any value"
        return {}


def _kind_of(tp: Any) -> tuple[tuple[str, ...], bool, Any]:
    """(kinds, nullable, item type) of a type annotation."""
    if tp is Any or tp is inspect.Parameter.empty:
        return ("any",), False, Any
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        kinds: list[str] = []
        nullable, item = False, Any
        for a in typing.get_args(tp):
            if a is type(None):
                nullable = True
                continue
            k, n, it = _kind_of(a)
            nullable |= n
            item = it if it is not Any else item
            kinds += [x for x in k if x not in kinds]
        return tuple(kinds) or ("any",), nullable, item
    if origin is typing.Literal:
        return ("str",), False, Any
    if tp is bool:
        return ("bool",), False, Any
    if tp is int:
        return ("int",), False, Any
    if tp is float:
        return ("float",), False, Any
    if tp is str:
        return ("str",), False, Any
    seq = (list, tuple, collections.abc.Sequence, set, frozenset)
    if tp in seq or origin in seq:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return ("list",), False, (args[0] if args else Any)
    if tp in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return ("dict",), False, Any
    if tp is collections.abc.Callable or origin is collections.abc.Callable:
        return ("callable",), False, Any
    return ("any",), False, Any


# ---- small helpers -----------------------------------------------------------------------------------
def _num(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_word(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        tuple: "list",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _article(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _generic(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return _literal(text)


__all__ = ["KINDS", "MISSING", "Param", "Reference", "declared_params", "resolve"]
