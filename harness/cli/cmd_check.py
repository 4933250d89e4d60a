"""`harness check CHECKPOINT_or_RUN --baseline baseline.json`: the CI robustness-regression gate."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from harness.errors import ExitCode, HarnessError

from .app import app, console, print_error


@app.command()
def check(
    subject: str = typer.Argument(..., help="a checkpoint (x.safetensors) to evaluate, or a finished run directory"),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="baseline file written by `harness baseline`"),
    tolerance: float | None = typer.Option(None, help="allowed accuracy drop, a fraction (default: the baseline's)"),
    alpha: float | None = typer.Option(None, help="significance level of the McNemar test (default: the baseline's)"),
    min_robust: list[str] = typer.Option([], "--min-robust", help="hard floor METRIC=FRACTION, e.g. linf-0.1=0.85"),
    correction: str = typer.Option("none", help="multiple-comparison correction over metrics: none or holm"),
    max_ece_rise: float | None = typer.Option(
        None, help="fail when any group's ECE exceeds the baseline's by more than this (absolute, e.g. 0.02)"
    ),
    junit: Path | None = typer.Option(None, help="write JUnit XML here (one test case per metric)"),
    summary: Path | None = typer.Option(
        None, help="write a Markdown summary here ($GITHUB_STEP_SUMMARY: appended too)"
    ),
    seed: int | None = typer.Option(None, help="evaluation seed (default: the baseline's)"),
    dataset: str | None = typer.Option(None, help="dataset spec (default: the baseline's; must hash the same)"),
    suite: str | None = typer.Option(None, help="suite (default: the baseline's; must resolve to the same entries)"),
    out: Path | None = typer.Option(None, help="keep the evaluation as a run under OUT/check (default: temporary)"),
    device: str = typer.Option("auto"),
    batch_size: int = typer.Option(256),
    progress: bool = typer.Option(False, "--progress/--no-progress"),
) -> None:
    """Fail (exit 1) when the model is significantly less robust than the baseline or below a floor.

    Exit codes: 0 pass, 1 regression or floor breach, 2 usage, input or storage error (including a
    suite, dataset or sample mismatch with the baseline, and a --junit/--summary file that cannot be
    written after a pass), 3 internal error, 130 interrupted.
    """
    from harness.gate import check as gate_check
    from harness.gate import parse_floors

    report = gate_check(
        subject,
        baseline,
        tolerance=tolerance,
        alpha=alpha,
        min_robust=parse_floors(min_robust),
        correction=correction,
        max_ece_rise=max_ece_rise,
        seed=seed,
        dataset=dataset,
        suite=suite,
        out=out,
        device=device,
        batch_size=batch_size,
        progress=progress,
    )
    console.print(report.table())
    for c in report.failures:
        console.print(f"[red]{c.reason(report.tolerance, report.alpha)}[/]", highlight=False)
    for line in report.ece_reasons():
        console.print(f"[red]{line}[/]", highlight=False)
    if report.passed and any(c.improved for c in report.metrics):
        console.print("significantly better than the baseline: consider updating it (docs/ci.md)")
    # Every output is attempted; one that cannot be written is an error line after the verdict. The
    # exit code stays the verdict's when it is a regression (1), else a storage error (2): never 1.
    writes = [(junit, report.write_junit), (summary, report.write_summary)]
    writes.append((os.environ.get("GITHUB_STEP_SUMMARY") or None, lambda p: report.write_summary(p, append=True)))
    failed = False
    for path, write in writes:
        if path is None:
            continue
        try:
            write(path)
        except HarnessError as e:
            print_error(e)
            failed = True
    if not report.passed:
        raise typer.Exit(int(ExitCode.REGRESSION))
    if failed:
        raise typer.Exit(int(ExitCode.USAGE))
