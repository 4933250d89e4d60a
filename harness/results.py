"""Versioned evaluation results with a JSON form; every accuracy carries its 95 % Wilson interval."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.atomic import write_json
from harness.errors import UsageError
from harness.stats import wilson

RESULT_SCHEMA = 1


@dataclass
class Accuracy:
    """k correct of n, with the fraction and its 95 % Wilson interval."""

    correct: int
    n: int
    accuracy: float = 0.0
    ci95: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def of(cls, correct: int, n: int) -> Accuracy:
        return cls(int(correct), int(n), correct / n if n else 0.0, wilson(int(correct), int(n)))

    def pct(self) -> str:
        return f"{100 * self.accuracy:.1f}"

    def pct_ci(self) -> str:
        return f"{100 * self.accuracy:.1f} [{100 * self.ci95[0]:.1f}, {100 * self.ci95[1]:.1f}]"


@dataclass
class Finding:
    """A sanity-check result: what was seen, how serious, and which number it casts doubt on."""

    check: str
    severity: str  # "info" | "warning" | "error"
    message: str
    related: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroupResult:
    """Accuracy under one threat model (worst case over its attacks) or one corruption x severity."""

    key: str
    kind: str
    accuracy: Accuracy
    norm: str | None = None
    eps: float | None = None
    corruption: str | None = None
    severity: int | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    per_class: list[float] = field(default_factory=list)
    # Attack groups: what the number rests on. "white-box" (the model's own usable gradients),
    # "surrogate" (BPDA/transfer gradients of a surrogate, plus gradient-free attacks), "gradient-free"
    # (only gradient-free attacks: the model's gradients are missing or obfuscated), "none" (nothing ran).
    attack_basis: str | None = None


@dataclass
class Result:
    """What one evaluation of one model on one dataset found."""

    name: str
    model: dict[str, Any]
    dataset: dict[str, Any]
    suite: dict[str, Any]
    config: dict[str, Any]
    environment: dict[str, Any]
    clean: Accuracy
    groups: list[GroupResult] = field(default_factory=list)
    per_class_clean: list[float] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = RESULT_SCHEMA

    @property
    def threat_models(self) -> list[GroupResult]:
        return [g for g in self.groups if g.kind == "attack"]

    @property
    def corruptions(self) -> list[GroupResult]:
        return [g for g in self.groups if g.kind == "corruption"]

    def group(self, key: str) -> GroupResult:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(f"no threat model {key!r} in result; have {[g.key for g in self.groups]}")

    def robust_accuracy(self, key: str) -> float:
        return self.group(key).accuracy.accuracy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        if d.get("schema_version") != RESULT_SCHEMA:
            raise UsageError(f"result schema_version {d.get('schema_version')!r}, this harness reads {RESULT_SCHEMA}")
        d = dict(d)
        d["clean"] = _acc(d["clean"])
        d["groups"] = [GroupResult(**{**g, "accuracy": _acc(g["accuracy"])}) for g in d.get("groups", [])]
        d["findings"] = [Finding(**f) for f in d.get("findings", [])]
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> Result:
        p = Path(path)
        if p.is_dir():
            p = p / "result.json"
        if not p.is_file():
            raise UsageError(f"no result at {p}", "pass a run directory that holds result.json")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UsageError(
                f"{p} is not a valid result file ({e})",
                "it is torn or was edited; run the same `harness evaluate` again to recompute it from the record",
            ) from e


def _acc(a: dict[str, Any]) -> Accuracy:
    return Accuracy(a["correct"], a["n"], a["accuracy"], tuple(a["ci95"]))  # type: ignore[arg-type]
