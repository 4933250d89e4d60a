"""`harness export RUN --format robustbench`: a run as RobustBench model-info JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.errors import UsageError

from .app import app, console

FORMATS = ("robustbench",)


@app.command()
def export(
    run: Path = typer.Argument(..., help="a run folder (holds result.json)"),
    format: str = typer.Option("robustbench", "--format", help="export format: robustbench"),
    out: Path | None = typer.Option(None, help="output folder (default: RUN/export)"),
    threat: str | None = typer.Option(
        None, help="threat model key to export, e.g. linf-0.0313725 (default: RobustBench's eps, else the largest)"
    ),
) -> None:
    """Export a run's clean, robust (worst-case) and corruption accuracies for use beside a leaderboard."""
    from harness.reporting import export_robustbench

    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}", f"choose one of {', '.join(FORMATS)}")
    for p in export_robustbench(run, out, threat=threat):
        console.print(f"wrote [bold]{p}[/]", highlight=False)
