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

The package: `encoding`, `run` (a finished run's per-sample outcome), `baseline` (file schema,
thresholds, compatibility), `decide` (the decision and its renderers); this module evaluates a
model for a baseline and runs the gate (`check`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import evaluate
from harness.atomic import temporary_directory
from harness.errors import UsageError
from harness.gate.baseline import (
    BASELINE_KIND,
    BASELINE_SCHEMA,
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    Baseline,
    check_floor_keys,
    check_samples,
    check_suite,
    make_baseline,
    parse_floors,
    validate_thresholds,
)
from harness.gate.decide import GateReport, MetricCheck, MetricDecision, decide
from harness.gate.encoding import BITS_ENCODING, IDS_ENCODING, decode_ids, encode_ids, pack_bits, unpack_bits
from harness.gate.run import Outcome, read_run
from harness.loading import dataset_spec_of, load_dataset, select_ids
from harness.paths import safe_join
from harness.suites import Suite, load_suite

# `compare` was the decision's name before it became `decide`; kept as a documented import path.
compare = decide

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
            verify=list(s.get("verify") or []),
            radius=list(s.get("radius") or []),
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
    check_floor_keys({**b.min_robust, **(min_robust or {})}, b.metric_keys())
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
    report = decide(
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


__all__ = [
    "BASELINE_KIND",
    "BASELINE_SCHEMA",
    "BITS_ENCODING",
    "DEFAULT_ALPHA",
    "DEFAULT_TOLERANCE",
    "IDS_ENCODING",
    "Baseline",
    "GateReport",
    "MetricCheck",
    "MetricDecision",
    "Outcome",
    "check",
    "check_floor_keys",
    "check_samples",
    "check_suite",
    "compare",
    "dataset_spec_of",
    "decide",
    "decode_ids",
    "encode_ids",
    "evaluate_for_baseline",
    "is_run_dir",
    "make_baseline",
    "pack_bits",
    "parse_floors",
    "prepare",
    "read_run",
    "select_ids",
    "unpack_bits",
    "validate_thresholds",
]
