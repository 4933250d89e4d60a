"""ε as people write it: ``8/255`` on 8-bit data, the plain number otherwise, in labels and on input.

Keys in result.json and baselines keep their decimal form (``linf-0.0313725``) for compatibility;
the labels here are for what a person reads (tables, plots, the CLI), and `parse_eps` accepts what a
person types (``8/255``, ``0.1``, ``1/4``).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from harness.errors import UsageError

NORM_TEXT = {"linf": "L∞", "l2": "L2", "l1": "L1"}
# eps * (2**bits - 1) counts as the whole number k when it is this close: float32 rounding of k/255
# and the 6 significant digits of a key (relative error <= 5e-7) both stay far below it, while the
# nearest non-integer eps a person would write (e.g. 0.1 = 25.5/255) is 0.5 away.
LEVEL_TOLERANCE = 1e-4


def eps_label(eps: float, *, bits: int = 8) -> str:
    """``8/255`` when ``eps`` is k / (2**bits - 1) up to float tolerance, else the short decimal (``0.1``).

    A decimal of one or two significant digits stays one: 0.2 is 51/255 but people write 0.2.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        return str(eps)
    if eps == 0 or math.isclose(float(f"{eps:.2g}"), eps, rel_tol=1e-6):
        return f"{eps:.2g}"
    levels = 2**bits - 1
    k = eps * levels
    whole = round(k)
    if whole > 0 and abs(k - whole) <= LEVEL_TOLERANCE:
        return f"{whole}/{levels}"
    return f"{eps:.6g}"


def threat_label(norm: str | None, eps: float | None, *, bits: int = 8) -> str:
    """``L∞ 8/255``, ``L2 0.5``: a threat model as papers write it."""
    name = NORM_TEXT.get(str(norm), str(norm or "?"))
    return name if eps is None else f"{name} {eps_label(eps, bits=bits)}"


def parse_eps(text: object, *, norm: str | None = None, what: str = "eps") -> float:
    """A radius from ``8/255``, ``0.1``, ``1e-2`` or a number: finite and > 0 (and <= 1 for L-inf).

    Anything else is one-line `UsageError` naming ``what``.
    """
    hint = "write a positive number or a fraction, e.g. 8/255 or 0.1"
    if isinstance(text, bool):
        raise UsageError(f"{what} must be a positive number, not {text!r}", hint)
    if isinstance(text, (int, float)):
        value = float(text)
    elif isinstance(text, str):
        s = text.strip()
        try:
            if "/" in s:
                num, den = (part.strip() for part in s.split("/", 1))
                q = Fraction(num) / Fraction(den)  # exact: "8/255" is the float nearest 8/255
                value = float(q)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise UsageError(f"{what} {text!r} is not a number or a fraction a/b", hint) from None
    else:
        raise UsageError(f"{what} must be a number or text like '8/255', not {type(text).__name__}", hint)
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what} {text!r} is not a positive finite radius", hint)
    if norm == "linf" and value > 1:
        raise UsageError(f"{what} {text!r} exceeds 1, the whole L-inf pixel range", "8/255 is 0.0314")
    return value


def key_label(key: str) -> str:
    """A group key as people read it: ``linf-0.0313725`` -> ``L∞ 8/255``; any other key unchanged."""
    norm, sep, eps = key.partition("-")
    if not sep or norm not in NORM_TEXT:
        return key
    try:
        value = float(eps)
    except ValueError:
        return key
    return threat_label(norm, value) if math.isfinite(value) and value > 0 else key


# A group key inside free text (a finding's message): ``linf-0.0313725``, ``l2-0.5``, ``fgsm@linf-0.3``.
_KEY_IN_TEXT = re.compile(r"(?<![\w.-])(linf|l2)-(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?![\w.]*\d)")


def relabel(text: str) -> str:
    """``text`` with every group key in it written as people read it (``linf-0.0313725`` -> ``L∞ 8/255``);
    for messages stored with keys (findings), so stored text stays as it was."""
    return _KEY_IN_TEXT.sub(lambda m: key_label(m.group(0)), text)
