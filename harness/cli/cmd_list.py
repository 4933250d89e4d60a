"""`harness list KIND [PATTERN]`."""

from __future__ import annotations

import typer
from rich.table import Table

from .app import app, console


@app.command("list")
def list_cmd(
    kind: str = typer.Argument(..., help="datasets, models, attacks, corruptions, objectives or suites"),
    pattern: str = typer.Argument("*", help="wildcard filter, e.g. 'pgd*'"),
) -> None:
    """List registered datasets, models, attacks, corruptions, objectives or suites."""
    from harness.api import list_registry

    t = Table(title=kind)
    t.add_column("name", style="bold")
    t.add_column("summary")
    for name, summary in list_registry(kind, pattern):
        t.add_row(name, summary)
    console.print(t)
