"""`harness run`: the end-to-end main job on the embedded digits data."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console
from .common import print_findings, results_table


@app.command()
def run(
    objectives: str = typer.Option(
        "default", help="comma-separated objectives; default (one per family: ce, mixup, pgd-at, odnl) or all"
    ),
    dataset: str = typer.Option("digits"),
    model: str = typer.Option("cnn"),
    suite: str = typer.Option("quick"),
    out: Path = typer.Option(Path("runs")),
    name: str = typer.Option("main"),
    epochs: int = typer.Option(30),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train each objective, evaluate every model with the suite, write one report."""
    from harness.api import resolve_objectives
    from harness.api import run as api_run

    objs = resolve_objectives(objectives, dataset)
    console.print(f"objectives: {', '.join(objs)}", highlight=False)
    results = api_run(
        objs,
        dataset=dataset,
        model=model,
        suite=suite,
        out=out,
        name=name,
        epochs=epochs,
        seed=seed,
        device=device,
        progress=progress,
    )
    console.print(results_table(results))
    print_findings(console, results)
    console.print(f"report: [bold]{out / name / 'report.html'}[/] (and report.md beside it)", highlight=False)
