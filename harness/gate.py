"""The CI robustness-regression gate: baselines, paired per-sample comparison, CI-native reports.

A baseline is a small JSON file written from a finished run: the suite (and its resolved entries),
the dataset spec and content hash, the sample ids, and per metric (clean accuracy, each threat
model, each corruption x severity) the accuracy plus every sample's correct/robust bit, bit-packed.
A check evaluates a model on exactly those samples with that suite (or reads a finished run) and
pairs the bits sample by sample. A metric regresses only when its drop exceeds the tolerance AND a
one-sided exact McNemar test on the discordant pairs is significant at ``alpha``: evaluation noise
(another attack seed, another machine's float rounding) flips a few samples both ways and passes;
a genuinely weaker model loses many more than it gains and fails. Hard floors
(``min_robust={"linf-0.1": 0.85}``) fail whenever the current accuracy is below them.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from harness import __version__
from harness.api import evaluate
from harness.atomic import append_text, temporary_directory, write_json, write_text
from harness.data.base import MAX_SAMPLES
from harness.errors import DataError, UsageError
from harness.loading import dataset_spec_of, load_dataset, select_ids
from harness.paths import safe_join
from harness.records import check_result_matches_record
from harness.records.outcome import members_by_group, read_bits
from harness.results import Result
from harness.stats import holm, mcnemar_one_sided
from harness.suites import Suite, load_suite

BASELINE_SCHEMA = 1
BASELINE_KIND = "harness-baseline"
DEFAULT_TOLERANCE = 0.02
DEFAULT_ALPHA = 0.05
IDS_ENCODING = "int64le-delta-zlib-base64"
BITS_ENCODING = "packbits-base64"

# ---- compact encodings ---------------------------------------------------------------------------


def pack_bits(bits: np.ndarray) -> str:
    """Booleans -> base64 of ``np.packbits`` (8 samples per byte, big-endian bit order)."""
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Inverse of `pack_bits` for ``n`` samples."""
    try:
        raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    except (ValueError, TypeError) as e:
        raise DataError(f"baseline bits are not valid base64 ({e})", "re-create the baseline") from e
    if len(raw) != (n + 7) // 8:
        raise DataError(f"baseline bits hold {len(raw) * 8} samples, expected {n}", "re-create the baseline")
    return np.unpackbits(raw, count=n).astype(bool)


def encode_ids(ids: np.ndarray) -> str:
    """Sample ids -> base64(zlib(int64 little-endian first differences)); sorted ids compress well."""
    ids = np.asarray(ids, dtype=np.int64)
    deltas = np.diff(ids, prepend=np.int64(0)).astype("<i8")
    return base64.b64encode(zlib.compress(deltas.tobytes(), 9)).decode("ascii")


def decode_ids(text: str, n: int) -> np.ndarray:
    """Inverse of `encode_ids`."""
    stream = zlib.decompressobj()
    try:
        # At most the n ids promised (plus a byte to notice more): a small zlib bomb allocates nothing.
        raw = stream.decompress(base64.b64decode(text, validate=True), 8 * n + 1)
    except (ValueError, TypeError, zlib.error) as e:
        raise DataError(f"baseline sample ids are not valid ({e})", "re-create the baseline") from e
    if len(raw) != 8 * n or not stream.eof:
        what = "more" if len(raw) > 8 * n else f"{len(raw) // 8}" if stream.eof else "a truncated stream of"
        raise DataError(f"baseline holds {what} sample ids, expected {n}", "re-create the baseline")
    return np.cumsum(np.frombuffer(raw, dtype="<i8")).astype(np.int64)


# ---- per-sample outcomes of one evaluation --------------------------------------------------------


@dataclass
class Outcome:
    """Per-sample bits of one finished evaluation: ``bits[metric]`` is aligned with ``ids``."""

    ids: np.ndarray
    metrics: list[dict[str, Any]]  # key, kind (+ norm/eps or corruption/severity), in suite order
    bits: dict[str, np.ndarray]
    entries: list[dict[str, Any]]
    dataset: dict[str, Any]
    suite: dict[str, Any]
    seed: int
    model: dict[str, Any]
    source: str = ""
    calibration: dict[str, float] = field(default_factory=dict)  # group -> ECE (result.extra)


def read_run(run_dir: str | Path) -> Outcome:
    """Per-sample clean/robust bits of a finished run directory (``result.json`` + ``records/``).

    Attack group bit = clean correct AND every entry of the threat model left the sample robust
    (status 1); corruption group bit = the corrupted image is classified correctly.
    """
    d = Path(run_dir)
    result = Result.load(d)
    rec = d / "records"
    if not (rec / "index.json").is_file():
        raise UsageError(
            f"{d} has no per-sample record (records/index.json)",
            "pass a run directory written by `harness evaluate` that finished",
        )
    check_result_matches_record(d, result.record, result.record.get("config_hash") or result.config.get("config_hash"))
    rb = read_bits(rec)
    entries, groups = rb.entries, members_by_group(rb.entries)
    bits = {"clean": rb.clean, **rb.groups}
    metrics: list[dict[str, Any]] = [{"key": "clean", "kind": "clean"}]
    for g, members in groups.items():
        e = entries[members[0]]
        m = {"key": g, "kind": e["kind"]}
        m.update({"norm": e["norm"], "eps": e["eps"]} if e["kind"] == "attack" else {"severity": e.get("severity")})
        metrics.append(m)
    # The record and result.json must tell the same story; anything else means a tampered run.
    if int(bits["clean"].sum()) != result.clean.correct:
        raise DataError(f"{d}: records and result.json disagree on clean accuracy", "re-run the evaluation")
    for g in result.groups:
        if g.key in bits and int(bits[g.key].sum()) != g.accuracy.correct:
            raise DataError(f"{d}: records and result.json disagree on {g.key}", "re-run the evaluation")
    return Outcome(
        ids=rb.ids,
        metrics=metrics,
        bits=bits,
        entries=entries,
        dataset=dict(result.dataset),
        suite=dict(result.suite),
        seed=int(result.config.get("seed", 0)),
        model=dict(result.model),
        source=str(d),
        calibration={
            k: float(v["ece"])
            for k, v in (result.extra.get("calibration") or {}).get("groups", {}).items()
            if isinstance(v, dict) and v.get("ece") is not None
        },
    )


# ---- the baseline ------------------------------------------------------------------------------


@dataclass
class Baseline:
    """What a check compares against; see the module docstring. Round-trips through JSON."""

    model: dict[str, Any]
    dataset: dict[str, Any]  # spec, name, split, n, sha256
    suite: dict[str, Any]  # name, summary, attacks, corruptions, source, entries (resolved)
    seed: int
    ids: np.ndarray
    metrics: list[dict[str, Any]]  # key, kind, ..., correct, n, accuracy, bits (packed)
    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = DEFAULT_ALPHA
    min_robust: dict[str, float] = field(default_factory=dict)
    harness_version: str = ""
    created: str = ""
    source_run: str = ""
    path: str = ""
    calibration: dict[str, float] = field(default_factory=dict)  # group -> ECE of the baseline run

    @property
    def n(self) -> int:
        return len(self.ids)

    def bits(self, key: str) -> np.ndarray:
        for m in self.metrics:
            if m["key"] == key:
                return unpack_bits(m["bits"], self.n)
        raise KeyError(key)

    def metric_keys(self) -> list[str]:
        return [m["key"] for m in self.metrics]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": BASELINE_KIND,
            "schema_version": BASELINE_SCHEMA,
            "harness_version": self.harness_version,
            "created": self.created,
            "source_run": self.source_run,
            "model": self.model,
            "dataset": self.dataset,
            "suite": self.suite,
            "seed": self.seed,
            "tolerances": {"tolerance": self.tolerance, "alpha": self.alpha, "min_robust": self.min_robust},
            "samples": {
                "n": self.n,
                "encoding": IDS_ENCODING,
                "ids": encode_ids(self.ids),
            },
            "bits_encoding": BITS_ENCODING,
            "metrics": self.metrics,
            **({"calibration": {"ece": self.calibration}} if self.calibration else {}),
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, where: str = "baseline") -> Baseline:
        if not isinstance(d, dict) or d.get("kind") != BASELINE_KIND:
            raise UsageError(f"{where} is not a harness baseline", "create one with `harness baseline RUN --out FILE`")
        if d.get("schema_version") != BASELINE_SCHEMA:
            raise UsageError(
                f"{where}: baseline schema_version {d.get('schema_version')!r}, this harness reads {BASELINE_SCHEMA}",
                "re-create the baseline with this version (docs/ci.md: updating a baseline)",
            )
        try:
            b = cls._from_checked(d, where)
        except (TypeError, ValueError) as e:
            raise UsageError(
                f"{where}: {e}", "the baseline is torn or was edited; re-create it with `harness baseline`"
            ) from None
        validate_thresholds(b.tolerance, b.alpha, b.min_robust)
        return b

    @classmethod
    def _from_checked(cls, d: dict[str, Any], where: str) -> Baseline:
        """Every field's type and range checked (a TypeError or ValueError naming the field otherwise)."""
        samples, tol = _object(d.get("samples"), "samples"), _object(d.get("tolerances", {}), "tolerances")
        if samples.get("encoding") != IDS_ENCODING or d.get("bits_encoding") != BITS_ENCODING:
            raise UsageError(f"{where}: unknown encoding of ids or bits", "re-create the baseline")
        n = _count(samples.get("n"), "samples.n")
        if n > MAX_SAMPLES:
            raise ValueError(f"samples.n is {n}, more than the {MAX_SAMPLES} samples the harness reads")
        if not isinstance(samples.get("ids"), str):
            raise TypeError("samples.ids is not a string")
        dataset, suite = _object(d.get("dataset"), "dataset"), _object(d.get("suite"), "suite")
        if not isinstance(dataset.get("spec"), str) or not isinstance(dataset.get("sha256"), str | None):
            raise TypeError("dataset.spec or dataset.sha256 is not a string")
        listed = [suite.get(k) for k in ("attacks", "corruptions") if suite.get(k) is not None]
        if not all(_objects(v) for v in [suite.get("entries", []), *listed]):
            raise TypeError("suite.entries, suite.attacks or suite.corruptions is not a list of objects")
        seed = d.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed is {seed!r}, not an integer")
        metrics = d.get("metrics")
        if not _objects(metrics):
            raise TypeError("metrics is not a list of objects")
        for i, m in enumerate(metrics):
            if not all(isinstance(m.get(k), str) for k in ("key", "kind", "bits")):
                raise TypeError(f"metric #{i + 1} lacks a key, kind or bits string")
            correct = _count(m.get("correct"), f"metric {m['key']!r} correct")
            bits = unpack_bits(m["bits"], n)
            if int(bits.sum()) != correct:
                raise DataError(
                    f"{where}: metric {m['key']!r} says {correct} correct but its bits hold {int(bits.sum())}",
                    "the baseline was edited by hand; re-create it",
                )
        keys = [m["key"] for m in metrics]
        if "clean" not in keys or len(set(keys)) != len(keys):
            raise ValueError(f"metric keys {keys} lack 'clean' or repeat one")
        calibration = _object(_object(d.get("calibration", {}), "calibration").get("ece", {}), "calibration.ece")
        return cls(
            model=_object(d.get("model", {}), "model"),
            dataset=dataset,
            suite=suite,
            seed=seed,
            ids=decode_ids(samples.get("ids"), n),
            metrics=list(metrics),
            tolerance=_real(tol.get("tolerance", DEFAULT_TOLERANCE), "tolerance"),
            alpha=_real(tol.get("alpha", DEFAULT_ALPHA), "alpha"),
            min_robust={
                str(k): _real(v, f"floor {k}") for k, v in _object(tol.get("min_robust", {}), "min_robust").items()
            },
            harness_version=str(d.get("harness_version", "")),
            created=str(d.get("created", "")),
            source_run=str(d.get("source_run", "")),
            path=where,
            calibration={str(k): _fraction(v, f"calibration ECE {k}") for k, v in calibration.items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"no baseline at {p}", "create one with `harness baseline RUN --out FILE`")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"{p} is not valid JSON ({e})") from e
        return cls.from_dict(d, str(p))


def _object(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{what} is {type(v).__name__}, not an object")
    return dict(v)


def _objects(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) for x in v)


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError(f"{what} is {v!r}, not an integer >= 0")
    return v


def _real(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"{what} is {v!r}, not a number")
    return float(v)


def _fraction(v: Any, what: str) -> float:
    x = _real(v, what)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{what} is {v!r}, not a fraction in [0, 1]")
    return x


def validate_thresholds(tolerance: float, alpha: float, min_robust: dict[str, float]) -> None:
    if not (0.0 <= tolerance <= 1.0):
        raise UsageError(f"tolerance {tolerance} is outside [0, 1]", "give an accuracy drop as a fraction, e.g. 0.02")
    if not (0.0 < alpha < 1.0):
        raise UsageError(f"alpha {alpha} is outside (0, 1)", "e.g. 0.05")
    for k, v in min_robust.items():
        if not (0.0 <= v <= 1.0) or math.isnan(v):
            raise UsageError(f"floor {k}={v} is outside [0, 1]", "floors are fractions: linf-0.1=0.85")


def parse_floors(items: list[str] | None) -> dict[str, float]:
    """``["linf-0.1=0.85", "clean=0.9"]`` -> ``{"linf-0.1": 0.85, "clean": 0.9}``."""
    out: dict[str, float] = {}
    for item in items or []:
        for part in item.split(","):
            key, sep, val = part.strip().rpartition("=")
            if not sep or not key:
                raise UsageError(f"floor {part!r} is not METRIC=FRACTION", "e.g. --min-robust linf-0.1=0.85")
            try:
                out[key.strip()] = float(val)
            except ValueError:
                raise UsageError(
                    f"floor {part!r}: {val!r} is not a number", "e.g. --min-robust linf-0.1=0.85"
                ) from None
    return out


def make_baseline(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
    min_robust: dict[str, float] | None = None,
) -> Baseline:
    """A baseline from a finished run; ``dataset`` is the spec that reproduces its data (derived if None).

    The spec is verified now (its data, restricted to the run's ids, must hash like the run's), so
    a baseline that could not be checked later is never written.
    """
    out = read_run(run_dir)
    spec = dataset or dataset_spec_of(out.dataset)
    ds = select_ids(load_dataset(spec), out.ids)
    if ds.content_hash() != out.dataset.get("sha256"):
        raise UsageError(
            f"dataset spec {spec!r} does not reproduce the data of {run_dir} (content hash differs)",
            "pass --dataset with the spec used for the evaluation",
        )
    floors = dict(min_robust or {})
    validate_thresholds(tolerance, alpha, floors)
    metrics = []
    for m in out.metrics:
        b = out.bits[m["key"]]
        k = int(b.sum())
        metrics.append({**m, "correct": k, "n": len(b), "accuracy": round(k / len(b), 6) if len(b) else 0.0})
        metrics[-1]["bits"] = pack_bits(b)
    _check_floor_keys(floors, [m["key"] for m in metrics])
    model_keys = ("name", "architecture", "objective", "sha256_state", "weights_sha256", "source")
    return Baseline(
        model={k: out.model[k] for k in model_keys if k in out.model},
        dataset={
            "spec": spec,
            "name": out.dataset.get("name"),
            "split": out.dataset.get("split"),
            "n": len(out.ids),
            "sha256": out.dataset.get("sha256"),
        },
        suite={**{k: out.suite.get(k) for k in ("name", "summary", "attacks", "corruptions")}, "entries": out.entries},
        seed=out.seed,
        ids=out.ids,
        metrics=metrics,
        tolerance=tolerance,
        alpha=alpha,
        min_robust=floors,
        harness_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        source_run=str(run_dir),
        calibration=dict(out.calibration),
    )


def _check_floor_keys(floors: dict[str, float], keys: list[str]) -> None:
    bad = sorted(set(floors) - set(keys))
    if bad:
        raise UsageError(f"floor(s) for unknown metric(s) {bad}", f"metrics of this suite: {', '.join(keys)}")


# ---- compatibility ------------------------------------------------------------------------------


def _canon(entries: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e, sort_keys=True, default=str) for e in entries]


def check_suite(baseline: Baseline, entries: list[dict[str, Any]], where: str) -> None:
    """The resolved entries must be the baseline's, in the same order (same attacks, eps, params)."""
    want, have = _canon(baseline.suite.get("entries", [])), _canon(entries)
    if want != have:
        wk = [e.get("key") for e in baseline.suite.get("entries", [])]
        hk = [e.get("key") for e in entries]
        detail = f"{wk} vs {hk}" if wk != hk else "same entries, different parameters"
        raise UsageError(
            f"suite mismatch: {where} was not evaluated with the baseline's suite ({detail})",
            "check with the baseline's suite (omit --suite), or update the baseline (docs/ci.md)",
        )


def check_samples(baseline: Baseline, ids: np.ndarray, sha256: str | None, where: str) -> None:
    """Same sample ids in the same order, and the same image/label content."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != baseline.n or not np.array_equal(ids, baseline.ids):
        extra = len(set(ids.tolist()) - set(baseline.ids.tolist()))
        lack = len(set(baseline.ids.tolist()) - set(ids.tolist()))
        raise UsageError(
            f"sample mismatch: {where} covers {len(ids)} samples, the baseline {baseline.n} "
            f"({lack} of the baseline's missing, {extra} extra"
            + (", same set in another order" if not extra and not lack else "")
            + ")",
            "evaluate on the baseline's samples: pass the checkpoint instead of a run, or update the baseline",
        )
    if sha256 != baseline.dataset.get("sha256"):
        raise UsageError(
            f"dataset mismatch: {where} has content hash {str(sha256)[:12]}…, the baseline "
            f"{str(baseline.dataset.get('sha256'))[:12]}… (same ids, different images or labels)",
            f"use the baseline's dataset ({baseline.dataset.get('spec')}) or update the baseline",
        )


# ---- decisions ------------------------------------------------------------------------------------


@dataclass
class MetricCheck:
    """The verdict on one metric: paired counts, the McNemar p-value, the floor."""

    key: str
    kind: str
    n: int
    current: float
    baseline: float | None = None
    lost: int = 0  # baseline right, current wrong
    gained: int = 0  # baseline wrong, current right
    p_value: float | None = None
    floor: float | None = None
    drop_exceeds: bool = False
    significant: bool = False
    improved: bool = False  # significantly better than the baseline by more than the tolerance

    @property
    def regression(self) -> bool:
        return self.drop_exceeds and self.significant

    @property
    def below_floor(self) -> bool:
        return self.floor is not None and self.current < self.floor - 1e-12

    @property
    def failed(self) -> bool:
        return self.regression or self.below_floor

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None else self.current - self.baseline

    @property
    def verdict(self) -> str:
        parts = []
        if self.regression:
            parts.append("REGRESSION")
        if self.below_floor:
            parts.append("BELOW FLOOR")
        if parts:
            return " + ".join(parts)
        if self.improved:
            return "ok (improved)"
        if self.drop_exceeds:
            return "ok (not significant)"
        if self.significant:
            return "ok (within tolerance)"
        return "ok"

    def reason(self, tolerance: float, alpha: float) -> str:
        out = []
        if self.regression:
            out.append(
                f"{self.key}: {100 * self.baseline:.1f}% -> {100 * self.current:.1f}% "  # type: ignore[operator]
                f"(drop {100 * -self.delta:.1f} pp > {100 * tolerance:.1f} pp; "  # type: ignore[operator]
                f"{self.lost} samples lost, {self.gained} gained; McNemar p = {self.p_value:.2g} <= {alpha})"
            )
        if self.below_floor:
            out.append(f"{self.key}: {100 * self.current:.1f}% is below the floor {100 * self.floor:.1f}%")  # type: ignore[operator]
        return "; ".join(out)


@dataclass
class GateReport:
    """All metric verdicts of one check, with renderers for the log, JUnit and Markdown."""

    checks: list[MetricCheck]
    tolerance: float
    alpha: float
    n: int
    seed: int
    subject: str
    baseline_path: str = ""
    dataset: str = ""
    suite: str = ""
    correction: str = "none"
    seconds: float = 0.0
    # ECE gate: (group, baseline ECE, current ECE) for every group whose ECE rose more than allowed.
    ece_failures: list[tuple[str, float, float]] = field(default_factory=list)
    max_ece_rise: float | None = None

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks) and not self.ece_failures

    def ece_reasons(self) -> list[str]:
        return [
            f"{k}: ECE rose from {b:.4f} to {c:.4f} (more than the allowed {self.max_ece_rise:g})"
            for k, b, c in self.ece_failures
        ]

    @property
    def failures(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.failed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def _has_floors(self) -> bool:
        return any(c.floor is not None for c in self.checks)

    def _rows(self) -> list[list[str]]:
        rows = []
        floors = self._has_floors()
        for c in self.checks:
            row = [
                c.key,
                "–" if c.baseline is None else f"{100 * c.baseline:.1f}",
                f"{100 * c.current:.1f}",
                "–" if c.delta is None else f"{100 * c.delta:+.1f}",
                "–" if c.baseline is None else f"{c.lost}/{c.gained}",
                "–" if c.p_value is None else f"{c.p_value:.2g}",
            ]
            if floors:
                row.append("–" if c.floor is None else f"{100 * c.floor:.1f}")
            rows.append([*row, c.verdict])
        return rows

    def headers(self) -> list[str]:
        h = ["metric", "base %", "now %", "Δ pp", "lost/gain", "p"]
        return [*h, "floor %", "verdict"] if self._has_floors() else [*h, "verdict"]

    def headline(self) -> str:
        state = "PASS" if self.passed else f"FAIL ({len(self.failures)} of {len(self.checks)} metrics)"
        return f"robustness gate: {state}"

    def rule(self) -> str:
        corr = "" if self.correction == "none" else f", {self.correction}-corrected"
        return (
            f"n = {self.n} samples{f' of {self.dataset}' if self.dataset else ''}"
            f"{f', suite {self.suite}' if self.suite else ''}, evaluation seed {self.seed}; "
            f"regression = drop > {100 * self.tolerance:.1f} pp AND one-sided exact McNemar p <= {self.alpha}{corr}"
        )

    def table(self) -> Any:
        """A rich Table (the one printed in the log)."""
        from rich import box
        from rich.table import Table

        t = Table(
            title=self.headline(), caption=self.rule(), title_justify="left", caption_justify="left", box=box.SIMPLE
        )
        for h in self.headers():
            t.add_column(h, justify="left" if h in ("metric", "verdict") else "right")
        for row, c in zip(self._rows(), self.checks):
            style = "bold red" if c.failed else None
            t.add_row(*row, style=style)
        return t

    def text(self, width: int = 110) -> str:
        """The same table as plain text (AssertionError messages, JUnit system-out)."""
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False).print(self.table())
        return buf.getvalue().rstrip() + "\n"

    def markdown(self) -> str:
        mark = "✅" if self.passed else "❌"
        lines = [f"### {mark} {self.headline()}", "", f"`{self.subject}` vs baseline `{self.baseline_path or '–'}`", ""]
        hs = self.headers()
        lines.append("| " + " | ".join(hs) + " |")
        lines.append("|" + "|".join([":--"] + ["--:"] * (len(hs) - 2) + [":--"]) + "|")
        for row, c in zip(self._rows(), self.checks):
            if c.failed:
                row = [*row[:-1], f"**{row[-1]}**"]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", self.rule() + "."]
        lines += [f"- ECE: {r}" for r in self.ece_reasons()]
        for c in self.failures:
            lines.append(f"- {c.reason(self.tolerance, self.alpha)}")
        if self.passed and any(c.improved for c in self.checks):
            lines.append("- significantly better than the baseline: consider updating it (docs/ci.md)")
        return "\n".join(lines) + "\n"

    def junit_xml(self) -> str:
        """JUnit XML: one testcase per metric; a failure element for each regression or floor breach."""
        suite = ET.Element(
            "testsuite",
            name="harness.check",
            tests=str(len(self.checks)),
            failures=str(len(self.failures)),
            errors="0",
            skipped="0",
            time=f"{self.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for k, v in (
            ("subject", self.subject),
            ("baseline", self.baseline_path),
            ("dataset", self.dataset),
            ("suite", self.suite),
            ("n", str(self.n)),
            ("seed", str(self.seed)),
            ("tolerance", str(self.tolerance)),
            ("alpha", str(self.alpha)),
        ):
            ET.SubElement(props, "property", name=k, value=v)
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="harness.check", name=c.key, time="0")
            if c.failed:
                kind = "regression" if c.regression else "floor"
                f = ET.SubElement(case, "failure", message=c.reason(self.tolerance, self.alpha), type=kind)
                f.text = c.reason(self.tolerance, self.alpha)
        out = ET.SubElement(suite, "system-out")
        out.text = self.text()
        root = ET.Element(
            "testsuites", name="harness", tests=str(len(self.checks)), failures=str(len(self.failures)), errors="0"
        )
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def write_junit(self, path: str | Path) -> None:
        write_text(path, self.junit_xml())

    def write_summary(self, path: str | Path | None, append: bool = False) -> None:
        if path is None:
            return
        p = Path(path)
        if append:
            append_text(p, self.markdown() + "\n")
        else:
            write_text(p, self.markdown())


def compare(
    outcome: Outcome,
    baseline: Baseline | None = None,
    *,
    tolerance: float | None = None,
    alpha: float | None = None,
    min_robust: dict[str, float] | None = None,
    correction: str = "none",
    max_ece_rise: float | None = None,
) -> GateReport:
    """Decide every metric of ``outcome`` against ``baseline`` (paired) and the floors.

    With ``max_ece_rise`` the calibration error (ECE, 15 bins) of every group the baseline recorded
    must not exceed the baseline's by more than that absolute amount.

    Without a baseline only floors apply. Thresholds default to the baseline's (then to 2 pp and
    0.05); ``min_robust`` is merged over the baseline's floors. ``correction="holm"`` adjusts the
    McNemar p-values for the number of metrics (Holm-Bonferroni).
    """
    tol = tolerance if tolerance is not None else (baseline.tolerance if baseline else DEFAULT_TOLERANCE)
    a = alpha if alpha is not None else (baseline.alpha if baseline else DEFAULT_ALPHA)
    floors = {**(baseline.min_robust if baseline else {}), **(min_robust or {})}
    validate_thresholds(tol, a, floors)
    if correction not in ("none", "holm"):
        raise UsageError(f"unknown correction {correction!r}", "use 'none' or 'holm'")
    keys = [m["key"] for m in outcome.metrics]
    _check_floor_keys(floors, keys)
    if baseline is not None:
        check_samples(baseline, outcome.ids, outcome.dataset.get("sha256"), outcome.source or "the evaluation")
        check_suite(baseline, outcome.entries, outcome.source or "the evaluation")
        lacking = [k for k in keys if k not in baseline.metric_keys()]
        if lacking:
            raise UsageError(
                f"the baseline {baseline.path} has no bits for metric(s) {lacking} of the same suite",
                "it was edited by hand; re-create it (docs/ci.md: updating a baseline)",
            )
    checks = []
    for m in outcome.metrics:
        cur = outcome.bits[m["key"]]
        n = len(cur)
        c = MetricCheck(m["key"], m["kind"], n, float(cur.mean()) if n else 0.0, floor=floors.get(m["key"]))
        if baseline is not None:
            ref = baseline.bits(m["key"])
            c.baseline = float(ref.mean()) if n else 0.0
            c.lost = int((ref & ~cur).sum())
            c.gained = int((~ref & cur).sum())
            # mcnemar_one_sided(b, c): b = A wrong & B right, c = A right & B wrong; A = baseline.
            c.p_value = mcnemar_one_sided(c.gained, c.lost)
            # Integer comparison of the paired drop (lost - gained) with tolerance * n avoids float ties.
            c.drop_exceeds = (c.lost - c.gained) > tol * n + 1e-9
            # The mirror test flags a stale baseline (never a failure): update it to keep the gate tight.
            c.improved = (c.gained - c.lost) > tol * n + 1e-9 and mcnemar_one_sided(c.lost, c.gained) <= a
        checks.append(c)
    if correction == "holm":
        for c, p in zip(checks, holm([c.p_value for c in checks])):
            c.p_value = p
    for c in checks:
        c.significant = c.p_value is not None and c.p_value <= a
    ece_failures = []
    if max_ece_rise is not None:
        if not (max_ece_rise >= 0):
            raise UsageError(f"max ECE rise {max_ece_rise} must be >= 0", "e.g. --max-ece-rise 0.02")
        if baseline is None or not baseline.calibration:
            raise UsageError("--max-ece-rise needs a baseline with calibration numbers", "re-create the baseline")
        for k, b in baseline.calibration.items():
            cur = outcome.calibration.get(k)
            if cur is not None and cur - b > max_ece_rise + 1e-12:
                ece_failures.append((k, b, cur))
    return GateReport(
        checks=checks,
        tolerance=tol,
        alpha=a,
        n=len(outcome.ids),
        seed=outcome.seed,
        subject=str(outcome.model.get("source") or outcome.model.get("name") or outcome.source),
        baseline_path=baseline.path if baseline else "",
        dataset=(baseline.dataset.get("spec") if baseline else "") or str(outcome.dataset.get("name", "")),
        suite=str((baseline.suite if baseline else outcome.suite).get("name", "")),
        correction=correction,
        ece_failures=ece_failures,
        max_ece_rise=max_ece_rise,
    )


# ---- evaluating a model for a baseline ----------------------------------------------------------


def prepare(baseline: Baseline, *, dataset: Any = None, suite: Any = None) -> tuple[Any, Any]:  # (ImageDataset, Suite)
    """The baseline's samples and suite, checked before any evaluation (a mismatch costs nothing)."""
    ds_full = load_dataset(dataset if dataset is not None else baseline.dataset["spec"])
    ds = select_ids(ds_full, baseline.ids)
    where = f"dataset {dataset if isinstance(dataset, str) else getattr(ds_full, 'name', '?')}"
    check_samples(baseline, np.asarray(ds.ids), ds.content_hash(), where)
    if suite is None:
        s = baseline.suite
        suite_obj = Suite(
            str(s.get("name", "baseline")),
            str(s.get("summary", "")),
            list(s.get("attacks") or []),
            list(s.get("corruptions") or []),
            f"baseline {baseline.path}",
        )
    else:
        suite_obj = load_suite(suite)
    entries = [e.describe() for e in suite_obj.resolve(ds.eps_grid)]
    check_suite(baseline, entries, f"suite {suite_obj.name!r}")
    return ds, suite_obj


def evaluate_for_baseline(
    model: Any,
    baseline: Baseline,
    *,
    seed: int | None = None,
    dataset: Any = None,
    suite: Any = None,
    out: str | Path | None = None,
    name: str = "check",
    device: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
) -> Outcome:
    """Evaluate ``model`` (module or checkpoint) on the baseline's samples and suite.

    ``seed`` defaults to the baseline's; with ``out`` the evaluation is kept as a normal run
    (``out/name``), otherwise it lives in a temporary directory.
    """
    ds, suite_obj = prepare(baseline, dataset=dataset, suite=suite)
    s = baseline.seed if seed is None else int(seed)
    kw = dict(seed=s, device=device, batch_size=batch_size, progress=progress)
    if out is not None:
        evaluate(model, ds, suite_obj, out=out, name=name, overwrite=True, **kw)
        return read_run(safe_join(out, name, what="run name"))
    with temporary_directory("harness-check-") as tmp:
        evaluate(model, ds, suite_obj, out=tmp, name=name, **kw)
        outcome = read_run(Path(tmp) / name)
    outcome.source = (
        str(getattr(model, "__class__", type(model)).__name__) if not isinstance(model, (str, Path)) else str(model)
    )
    return outcome


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "result.json").is_file()


def check(
    subject: Any,
    baseline: Baseline | str | Path,
    *,
    tolerance: float | None = None,
    alpha: float | None = None,
    min_robust: dict[str, float] | None = None,
    correction: str = "none",
    seed: int | None = None,
    dataset: Any = None,
    suite: Any = None,
    out: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
    max_ece_rise: float | None = None,
) -> GateReport:
    """The gate: a checkpoint/module is evaluated on the baseline's samples, a run directory is read."""
    t0 = time.perf_counter()
    b = baseline if isinstance(baseline, Baseline) else Baseline.load(baseline)
    validate_thresholds(
        tolerance if tolerance is not None else b.tolerance,
        alpha if alpha is not None else b.alpha,
        {**b.min_robust, **(min_robust or {})},
    )
    _check_floor_keys({**b.min_robust, **(min_robust or {})}, b.metric_keys())
    if correction not in ("none", "holm"):
        raise UsageError(f"unknown correction {correction!r}", "use 'none' or 'holm'")
    if isinstance(subject, (str, Path)) and is_run_dir(subject):
        if seed is not None or dataset is not None or suite is not None:
            raise UsageError(
                "--seed, --dataset and --suite apply to evaluating a checkpoint, not to reading a finished run"
            )
        outcome = read_run(subject)
    else:
        outcome = evaluate_for_baseline(
            subject,
            b,
            seed=seed,
            dataset=dataset,
            suite=suite,
            out=out,
            device=device,
            batch_size=batch_size,
            progress=progress,
        )
    report = compare(
        outcome,
        b,
        tolerance=tolerance,
        alpha=alpha,
        min_robust=min_robust,
        correction=correction,
        max_ece_rise=max_ece_rise,
    )
    report.seconds = time.perf_counter() - t0
    return report
