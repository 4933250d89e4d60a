"""``name:key=value,key=value`` specs for datasets, models and attacks given on the command line."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from harness.errors import UsageError


def parse_value(text: str) -> Any:
    """A literal (number, bool, list, quoted string) or else the bare string."""
    low = text.strip()
    if low.lower() in ("true", "false"):
        return low.lower() == "true"
    if low.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(low)
    except (ValueError, SyntaxError):
        return low


def parse_kv(items: list[str] | None, what: str = "parameter") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values as Python literals, else strings)."""
    return {k: parse_value(v) for k, v in split_kv(items, what).items()}


def split_kv(items: list[str] | None, what: str = "parameter") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``: the text of each value, for a declared conversion
    (`harness.registry.Registry.parse`)."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in _split(item):
            if "=" not in part:
                raise UsageError(f"{what} {part!r} is not key=value", "e.g. -p steps=20 or --model-arg hidden=[64]")
            k, v = part.split("=", 1)
            key = k.strip().replace("-", "_")
            if not key:
                raise UsageError(f"{what} {part!r} has no name before '='", "write key=value, e.g. steps=20")
            out[key] = v.strip()
    return out


def _split(text: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", ""
    for ch in text:
        if quote:  # commas inside quotes belong to the value (e.g. aux='synthetic:channels=1,size=8')
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"digits:split=train,size=32"`` -> ``("digits", {"split": "train", "size": 32})``."""
    name, raw = split_spec(spec)
    return name, {k: parse_value(v) for k, v in raw.items()}


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"digits:split=train,size=32"`` -> ``("digits", {"split": "train", "size": "32"})`` (value text)."""
    if not isinstance(spec, str):
        raise UsageError(f"a spec must be text like name:key=value, not {spec!r}", "e.g. digits:split=train")
    name, _, rest = spec.partition(":")
    return name.strip(), split_kv([rest] if rest else [], f"spec {spec!r}: argument")


def default_run_name(model: str, suite: str) -> str:
    """A valid run name from the model spec: checkpoint stem, RobustBench name or factory name."""
    if model.startswith("robustbench:"):
        base = model.split(":", 1)[1]
    elif re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", model) and not Path(model).exists():
        base = model.rpartition(":")[2]
    else:
        base = Path(model).stem
    return re.sub(r"[^\w.+-]", "-", f"{base}-{Path(suite).stem}").strip("._-")[:120] or "model"
