"""Robustness assertions for test suites (pytest or any other runner).

::

    from harness.testing import assert_robust

    def test_model_stays_robust():
        assert_robust(model, baseline="tests/data/baseline.json")               # no significant regression
        assert_robust(model, "digits", suite="quick", min_robust={"linf-0.1": 0.8})  # hard floors only

A failure raises ``AssertionError`` whose message is the same table `harness check` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from harness.api import evaluate
from harness.atomic import temporary_directory
from harness.errors import UsageError
from harness.gate import Baseline, GateReport, check, decide, read_run


def assert_robust(
    model: nn.Module | str | Path,
    dataset: Any = None,
    *,
    suite: Any = None,
    baseline: Baseline | str | Path | None = None,
    min_robust: dict[str, float] | None = None,
    tolerance: float | None = None,
    alpha: float | None = None,
    correction: str = "none",
    seed: int | None = None,
    max_samples: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> GateReport:
    """Evaluate ``model`` and assert it is no less robust than ``baseline`` and above ``min_robust``.

    With a baseline, its dataset, samples, suite and seed are used (``dataset``/``suite`` given
    here must match it). Without one, ``model`` is evaluated on ``dataset`` (default digits) with
    ``suite`` (default quick) and only the floors apply. Returns the report when the gate passes.
    """
    if baseline is None and not min_robust:
        raise UsageError("assert_robust needs a baseline, min_robust floors, or both")
    if baseline is not None:
        if max_samples is not None:
            raise UsageError("max_samples does not apply with a baseline: its samples are fixed")
        report = check(
            model,
            baseline,
            tolerance=tolerance,
            alpha=alpha,
            min_robust=min_robust,
            correction=correction,
            seed=seed,
            dataset=dataset,
            suite=suite,
            device=device,
            batch_size=batch_size,
        )
    else:
        with temporary_directory("harness-assert-") as tmp:
            evaluate(
                model,
                dataset if dataset is not None else "digits",
                suite if suite is not None else "quick",
                out=tmp,
                name="assert",
                seed=0 if seed is None else seed,
                device=device,
                batch_size=batch_size,
                max_samples=max_samples,
                progress=False,
            )
            outcome = read_run(Path(tmp) / "assert")
        outcome.source = str(model) if isinstance(model, (str, Path)) else type(model).__name__
        report = decide(outcome, None, tolerance=tolerance, alpha=alpha, min_robust=min_robust, correction=correction)
    if not report.passed:
        raise AssertionError("\n" + report.text())
    return report
