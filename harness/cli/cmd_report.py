"""`harness report RUN...`: report.md, report.html and figures from run folders (no models needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console


@app.command()
def report(
    runs: list[Path] = typer.Argument(
        ..., help="run folders (each holds result.json), folders of runs, or a sweep's output root"
    ),
    out: Path | None = typer.Option(None, help="output folder (default: the single run folder, else ./report)"),
    title: str = typer.Option("Robustness report", help="report title"),
    threat: str | None = typer.Option(None, help="threat model of the trade-off plot, e.g. linf-0.1"),
) -> None:
    """Build report.md and a self-contained report.html (plots embedded) from finished runs.

    For a sweep's output root (it holds sweep.json) the report covers that sweep's finished cells
    and goes to OUT/report, as `harness sweep` writes it.
    """
    from harness.reporting import build_report
    from harness.reporting.runs import SWEEP_MANIFEST, find_runs, sweep_cells

    found = find_runs(runs)
    sweep_root = runs[0] if len(runs) == 1 and (runs[0] / SWEEP_MANIFEST).is_file() else None
    if sweep_root is not None:  # a sweep's output root: its report goes where `harness sweep` puts it
        missing = sweep_cells(sweep_root)[1]
        if missing:
            console.print(f"[yellow]note[/] {len(missing)} sweep cell(s) not finished, left out: {', '.join(missing)}")
    target = out or (sweep_root / "report" if sweep_root else found[0] if len(found) == 1 else Path("report"))
    rep = build_report(runs, target, title=title, threat=threat, clean=sweep_root is not None and out is None)
    board = f" and the leaderboard [bold]{rep.leaderboard}[/]" if rep.leaderboard else ""
    console.print(
        f"{len(rep.results)} run(s); wrote [bold]{rep.html}[/], [bold]{rep.markdown}[/]{board}", highlight=False
    )
