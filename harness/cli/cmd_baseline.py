"""`harness baseline RUN --out baseline.json`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from .app import app, console


@app.command()
def baseline(
    run: Path = typer.Argument(..., help="a finished run directory (holds result.json and records/)"),
    out: Path = typer.Option(Path("baseline.json"), "--out", "-o", help="where to write the baseline"),
    dataset: str | None = typer.Option(None, help="dataset spec reproducing the run's data (default: derived)"),
    tolerance: float = typer.Option(0.02, help="default allowed accuracy drop (fraction) for `harness check`"),
    alpha: float = typer.Option(0.05, help="default significance level of the paired McNemar test"),
    min_robust: list[str] = typer.Option([], "--min-robust", help="default hard floor METRIC=FRACTION (repeatable)"),
) -> None:
    """Write a small, reviewable baseline (accuracies, suite, data hash, per-sample bits) from a run."""
    from harness.gate import make_baseline, parse_floors

    b = make_baseline(run, dataset=dataset, tolerance=tolerance, alpha=alpha, min_robust=parse_floors(min_robust))
    b.save(out)
    console.print(f"baseline: {b.n} samples of {b.dataset['spec']}, suite {b.suite.get('name')}, seed {b.seed}")
    t = Table(box=box.SIMPLE)
    t.add_column("metric")
    t.add_column("accuracy %", justify="right")
    t.add_column("floor %", justify="right")
    for m in b.metrics:
        fl = b.min_robust.get(m["key"])
        t.add_row(m["key"], f"{100 * m['accuracy']:.1f}", "–" if fl is None else f"{100 * fl:.1f}")
    console.print(t)
    console.print(f"wrote [bold]{out}[/] ({out.stat().st_size} bytes)")
