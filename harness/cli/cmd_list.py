"""`harness list KIND [PATTERN]`."""

from __future__ import annotations

import typer
from rich.table import Table

from .app import app, console


@app.command("list")
def list_cmd(
    kind: str = typer.Argument(..., help="datasets, models, attacks, corruptions, objectives, suites or recipes"),
    pattern: str = typer.Argument("*", help="wildcard filter, e.g. 'pgd*'"),
) -> None:
    """List registered datasets, models, attacks, corruptions, objectives, suites or recipes.

    With an exact NAME as the pattern, also print that entry's declared parameters (type, allowed
    values, default) and its reference budget.
    """
    from harness.api import describe_entry, list_registry

    t = Table(title=kind)
    t.add_column("name", style="bold")
    t.add_column("summary")
    rows = list_registry(kind, pattern)
    for name, summary in rows:
        t.add_row(name, summary)
    console.print(t)
    if kind == "recipes" and [n for n, _ in rows] == [pattern]:
        from harness.recipes import load_recipe

        r = load_recipe(pattern)
        p = Table(title=f"{pattern}: settings (flags given to harness train override them)")
        p.add_column("setting")
        p.add_column("value")
        for key, value in r.train_kwargs().items():
            p.add_row(key, repr(value))
        console.print(p)
        return
    if [n for n, _ in rows] == [pattern]:
        d = describe_entry(kind, pattern)
        p = Table(title=f"{pattern}: parameters")
        for col in ("parameter", "allowed", "default", "description"):
            p.add_column(col)
        for row in d["params"]:
            p.add_row(row["name"], row["allowed"], repr(row["default"]), row["doc"])
        console.print(p)
        if d["reference"]:
            budget = ", ".join(f"{k} >= {v}" for k, v in d["reference"]["budget"].items())
            console.print(f"reference budget: {budget} — {d['reference']['source']}", highlight=False)
