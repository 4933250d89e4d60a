"""The baseline file: its schema, validation, thresholds and floors, how one is made from a run, and
the compatibility checks (same suite, same samples) before a comparison."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.atomic import write_json
from harness.data.base import MAX_SAMPLES
from harness.errors import DataError, UsageError
from harness.gate.encoding import BITS_ENCODING, IDS_ENCODING, decode_ids, encode_ids, pack_bits, unpack_bits
from harness.gate.run import read_run
from harness.loading import dataset_spec_of, load_dataset, select_ids

BASELINE_SCHEMA = 1
BASELINE_KIND = "harness-baseline"
DEFAULT_TOLERANCE = 0.02
DEFAULT_ALPHA = 0.05
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
        kinds = ("attacks", "corruptions", "verify", "radius")
        listed = [suite.get(k) for k in kinds if suite.get(k) is not None]
        if not all(_objects(v) for v in [suite.get("entries", []), *listed]):
            raise TypeError("suite.entries, suite.attacks, suite.corruptions or suite.verify is not a list of objects")
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
    check_floor_keys(floors, [m["key"] for m in metrics])
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
        suite={
            **{k: out.suite.get(k) for k in ("name", "summary", "attacks", "corruptions")},
            **({"verify": out.suite["verify"]} if out.suite.get("verify") else {}),
            **({"radius": out.suite["radius"]} if out.suite.get("radius") else {}),
            "entries": out.entries,
        },
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


def check_floor_keys(floors: dict[str, float], keys: list[str]) -> None:
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
