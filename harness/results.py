"""Versioned evaluation results with a JSON form; every accuracy carries its 95 % Wilson interval."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.atomic import write_json
from harness.errors import UsageError
from harness.schema import ANY, COUNT, FINITE, FRACTION, INT, NUMBER, STR, Leaf, ListOf, MapOf, Obj, Opt, conform
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
    # Attack groups: the threat model as people write it (``L∞ 8/255``, `harness.labels.threat_label`),
    # for display beside the key, which keeps its decimal form for compatibility.
    label: str | None = None
    # Threat models with [[verify]] entries: the share proven robust, the lower end of the interval
    # [verified, accuracy] (issue 22; exact where the two are equal). None: no verifier ran.
    verified: Accuracy | None = None


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
        """A result from its JSON form, every field's type checked; `UsageError` when it is not one."""
        if not isinstance(d, dict):
            raise UsageError(f"a result must be a JSON object, not {type(d).__name__}", _RERUN)
        if d.get("schema_version") != RESULT_SCHEMA:
            raise UsageError(f"result schema_version {d.get('schema_version')!r}, this harness reads {RESULT_SCHEMA}")
        try:
            return cls._from_checked(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UsageError(f"not a valid result ({type(e).__name__}: {e})", _RERUN) from None

    @classmethod
    def _from_checked(cls, d: dict[str, Any]) -> Result:
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown field(s) {unknown[:5]}")
        if not isinstance(d.get("name"), str):
            raise TypeError("name is not a string")
        for key in ("model", "dataset", "suite", "config", "environment"):
            if not isinstance(d.get(key), dict):
                raise TypeError(f"{key} is {type(d.get(key)).__name__}, not an object")
        for key in ("record", "timing", "extra"):
            if not isinstance(d.get(key, {}), dict):
                raise TypeError(f"{key} is not an object")
        if not _fractions(d.get("per_class_clean", [])):
            raise TypeError("per_class_clean is not a list of fractions in [0, 1] (NaN: class absent)")
        conform(d, _PARTS, "result")
        d["clean"] = _acc(d["clean"])
        d["groups"] = [_group(g) for g in _objects(d.get("groups", []))]
        n_classes = len(d.get("per_class_clean", []))
        if any(g.per_class and len(g.per_class) != n_classes for g in d["groups"]):
            raise ValueError(f"a group's per_class does not hold the {n_classes} classes of per_class_clean")
        d["findings"] = [_finding(f) for f in _objects(d.get("findings", []))]
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> Result:
        p = Path(path)
        if p.is_dir():
            p = p / "result.json"
        if not p.is_file():
            raise UsageError(f"no result at {p}", "pass a run directory that holds result.json")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise UsageError(f"{p} is not a valid result file ({type(e).__name__}: {e})", _RERUN) from None
        try:
            return cls.from_dict(d)
        except UsageError as e:
            raise UsageError(f"{p}: {e.what}", e.hint or _RERUN) from None


_RERUN = "it is torn or was edited; run the same `harness evaluate` again to recompute it from the record"


# The nested parts of a result that its readers (reports, comparisons, exports, the gate) index or
# format, with the shapes the engine writes them in; other keys are free.
def _derived(a: dict[str, Any]) -> bool:
    """An accuracy is k of n: its fraction and Wilson interval are those of its counts (`Accuracy.of`)."""
    k, n = a["correct"], a["n"]
    want = (k / n if n else 0.0, *wilson(k, n)) if k <= n else ()
    return len(want) == 3 and all(abs(x - y) <= 1e-9 for x, y in zip((a["accuracy"], *a["ci95"]), want))


_ACCURACY = Obj(
    {"correct": COUNT, "n": COUNT, "accuracy": FRACTION, "ci95": ListOf(FRACTION, length=2)},
    required=("correct", "n", "accuracy", "ci95"),
    rule=(_derived, "its accuracy and ci95 do not follow from correct and n"),
)
_RELIABILITY = Obj(
    {"edges": ListOf(FINITE, min_length=1), "accuracy": ListOf(Opt(FRACTION))},
    required=("edges", "accuracy"),
    rule=(lambda d: len(d["edges"]) == len(d["accuracy"]) + 1, "edges must be one more than the bins"),
)
_CAL_STATS = {
    **dict.fromkeys(("ece", "ece_adaptive", "nll", "brier", "conf_errors"), Opt(NUMBER)),
    "ci95": MapOf(Opt(ListOf(Opt(NUMBER)))),
    "reliability": _RELIABILITY,
}
_CAL_GROUP = Obj(
    {**_CAL_STATS, "scaled": Obj(_CAL_STATS, required=("reliability",)), "severity": Opt(INT)},
    required=("reliability",),
    rule=(
        lambda d: d.get("kind") != "corruption" or isinstance(d.get("severity"), int),
        "a corruption needs a severity",
    ),
)


def _clean_ece(cal: dict[str, Any]) -> bool:
    """The clean group is there, with its ECE (and the temperature-scaled one) a number."""
    clean = cal["groups"].get("clean")
    return clean is not None and all(_is_number(g.get("ece")) for g in (clean, clean.get("scaled", clean)))


def _band_ok(d: dict[str, Any]) -> bool:
    """The band: eps ascending from 0, both shares non-increasing, verified <= attacked unless a violation
    was reported (then the band shows it rather than hides it)."""
    b = d["band"]
    eps = [r[0] for r in b]
    if eps[0] != 0 or any(a > c for a, c in zip(eps, eps[1:])):
        return False
    ver, att = [r[1] for r in b], [r[2] for r in b]
    mono = all(a >= c for a, c in zip(ver, ver[1:])) and all(a >= c for a, c in zip(att, att[1:]))
    return mono and (d["counts"]["violations"] > 0 or all(v <= a for v, a in zip(ver, att)))


_RADIUS = Obj(
    {"config": Obj({"norm": STR, "max_eps": FINITE, "attack": ANY, "verifier": STR, "steps": COUNT},
                   required=("norm", "max_eps", "attack", "verifier", "steps")),
     "counts": Obj(dict.fromkeys(("n", "clean_correct", "found", "beyond_max_eps", "unconfirmed", "timeouts",
                                  "violations"), COUNT),
                   required=("n", "clean_correct", "unconfirmed", "timeouts", "violations")),
     "violation_ids": ListOf(INT),
     "table": ListOf(Obj({"eps": FINITE, "verified": _ACCURACY, "attacked": _ACCURACY},
                         required=("eps", "verified", "attacked"))),
     "band": ListOf(ListOf(FINITE, length=3), min_length=2),
     "agreement": ListOf(Obj({"group": STR, "eps": FINITE, "fixed": _ACCURACY, "attacked": _ACCURACY,
                              "disagreements": COUNT, "ids": ListOf(INT)},
                             required=("group", "eps", "fixed", "attacked", "disagreements")))},
    required=("config", "counts", "violation_ids", "table", "band", "agreement"),
    rule=(_band_ok, "its band is not ascending in eps from 0, not non-increasing, or has verified above attacked"),
)  # fmt: skip

_PARTS = Obj(
    {
        "model": Obj({"condition": Opt(MapOf(ANY)), "objective_params": Opt(MapOf(ANY))}),
        "dataset": Obj({"name": STR, "info": Opt(MapOf(ANY))}, required=("name",)),
        "config": Obj({"surrogate": Opt(MapOf(ANY)), "eot_samples_used": Opt(INT)}),
        "environment": Obj({"versions": MapOf(ANY)}),
        "clean": _ACCURACY,
        "groups": ListOf(
            Obj(
                {"accuracy": _ACCURACY,
                 "verified": Opt(_ACCURACY),
                 "attack_basis": Opt(STR),
                 "entries": ListOf(Obj({"key": STR, "cumulative": _ACCURACY, "seconds": NUMBER},
                                       required=("key", "cumulative"))),
                 "eps": Opt(Leaf("a finite number >= 0", lambda v: _is_number(v) and 0 <= v < math.inf))},
                required=("accuracy",),
            )
        ),
        "extra": Obj(
            {
                "class_counts": ListOf(COUNT),
                "calibration": Opt(
                    Obj(
                        {"groups": MapOf(_CAL_GROUP),
                         "temperature": Opt(Obj({"value": NUMBER}, required=("value", "split", "n")))},
                        required=("groups",),
                        rule=(_clean_ece, "the clean group or its ECE is missing"),
                    )
                ),
                "certified": Opt(
                    MapOf(
                        Obj(
                            {"config": Obj({"sigma": NUMBER, "alpha": NUMBER}, required=(
                                "sigma", "n0", "n", "alpha", "attack_steps", "eot_samples", "n_verdict")),
                             "abstain": NUMBER,
                             "table": ListOf(Obj({"radius": FINITE, "certified": _ACCURACY, "empirical": _ACCURACY},
                                                 required=("radius", "certified", "empirical", "violations"))),
                             "curve": ListOf(ListOf(FINITE, length=2), min_length=1)},
                            required=("config", "abstain", "table", "curve"),
                        )
                    )
                ),
                "radius": Opt(MapOf(_RADIUS)),
                "unit_test": Opt(
                    Obj({"threats": ListOf(Obj({"fraction": NUMBER},
                                               required=("key", "found", "valid", "fraction", "too_weak")))})
                ),
                "corruptions": Opt(
                    Obj(dict.fromkeys(("mean_accuracy", "mce", "relative_mce"), Opt(NUMBER)))
                ),
            }
        ),
    },
    required=("clean",),
)  # fmt: skip

_GROUP_OPTIONAL = {"norm": str, "corruption": str, "severity": int, "eps": (int, float), "label": str}
_FINDING_OPTIONAL = {"related": str}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fractions(v: Any) -> bool:
    """A list of per-class accuracies: each in [0, 1], or NaN for a class with no samples."""
    return isinstance(v, list) and all(_is_number(x) and (0 <= x <= 1 or math.isnan(x)) for x in v)


def _check_types(d: dict[str, Any], required: tuple[str, ...], optional: dict[str, Any], what: str) -> None:
    for k in required:
        if not isinstance(d.get(k), str):
            raise TypeError(f"{what} field {k!r} is not a string")
    for k, t in optional.items():
        v = d.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, t)):
            raise TypeError(f"{what} field {k!r} is {v!r}")


def _group(g: dict[str, Any]) -> GroupResult:
    _check_types(g, ("key", "kind"), _GROUP_OPTIONAL, "group")
    if not isinstance(g.get("entries", []), list) or not all(isinstance(e, dict) for e in g.get("entries", [])):
        raise TypeError("group entries are not a list of objects")
    if not _fractions(g.get("per_class", [])):
        raise TypeError("group per_class is not a list of fractions in [0, 1] (NaN: class absent)")
    verified = g.get("verified")
    if verified is not None and verified["correct"] > g["accuracy"]["correct"]:
        raise ValueError(f"group {g['key']!r}: verified {verified['correct']} above robust {g['accuracy']['correct']}")
    return GroupResult(
        **{**g, "accuracy": _acc(g["accuracy"]), "verified": None if verified is None else _acc(verified)}
    )


def _finding(f: dict[str, Any]) -> Finding:
    _check_types(f, ("check", "severity", "message"), _FINDING_OPTIONAL, "finding")
    if not isinstance(f.get("data", {}), dict):
        raise TypeError("finding data is not an object")
    return Finding(**f)


def _objects(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise TypeError("groups and findings must be lists of objects")
    return items


def _acc(a: dict[str, Any]) -> Accuracy:
    """An accuracy whose shape `conform` has checked (`_ACCURACY`)."""
    return Accuracy(a["correct"], a["n"], a["accuracy"], tuple(a["ci95"]))  # type: ignore[arg-type]
