"""`harness report RUN...`: report.md, report.html and figures from run folders (no models needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="run folders (each holds result.json) or folders of runs"),
    out: Path | None = typer.Option(None, help="output folder (default: the single run folder, else ./report)"),
    title: str = typer.Option("Robustness report", help="report title"),
    threat: str | None = typer.Option(None, help="threat model of the trade-off plot, e.g. linf-0.1"),
) -> None:
    """Build report.md and a self-contained report.html (plots embedded) from finished runs."""
    from harness.reporting import build_report
    from harness.reporting.runs import find_runs

    found = find_runs(runs)
    target = out or (found[0] if len(found) == 1 else Path("report"))
    rep = build_report(runs, target, title=title, threat=threat)
    console.print(f"{len(rep.results)} run(s); wrote [bold]{rep.html}[/] and [bold]{rep.markdown}[/]", highlight=False)
