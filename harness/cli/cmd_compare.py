"""`harness compare RUN_A RUN_B ...`: side by side, with paired McNemar tests where the runs allow."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.atomic import write_json, write_text
from harness.errors import UsageError

from .app import app, console


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="run folders; the first is the baseline"),
    out: Path | None = typer.Option(None, help="folder for compare.md and compare.json (default: ./comparison)"),
    alpha: float = typer.Option(0.05, help="significance level (Holm-corrected over the comparison)"),
) -> None:
    """Compare runs against the first: accuracies with CIs, differences, exact McNemar p-values."""
    from rich.table import Table

    from harness.reporting import compare_runs

    if not 0 < alpha < 1:
        raise UsageError(f"alpha must lie in (0, 1), got {alpha}")
    cmp = compare_runs(runs, alpha=alpha)
    t = Table(title=f"comparison against {cmp.runs[0]} (accuracy %, 95 % CI; Δ with McNemar p, * Holm p < {alpha:g})")
    t.add_column("metric")
    for r in cmp.runs:
        t.add_column(r, justify="right")
    for m in cmp.metrics:
        cells = []
        for j, a in enumerate(cmp.table[m]):
            if a is None:
                cells.append("–")
                continue
            s = f"{100 * a['accuracy']:.1f} [{100 * a['ci95'][0]:.1f}, {100 * a['ci95'][1]:.1f}]"
            test = cmp.test(m, cmp.runs[j]) if j else None
            if test is not None:
                s += f"\nΔ {100 * test.diff:+.1f}"
                if test.p_value is not None:
                    s += f" p={test.p_value:.2g}" + (" [bold]*[/]" if test.significant else "")
            cells.append(s)
        t.add_row(cmp.label(m), *cells)
    console.print(t)
    for s in cmp.sentences():
        console.print(f"- {s}", highlight=False, markup=False)
    for line in cmp.band_lines():  # the robustness band per run, and its agreement with fixed-eps runs
        console.print(line, highlight=False, markup=False)
    for n in cmp.notes:
        console.print(f"[yellow]note[/] {n}", highlight=False)
    target = out or Path("comparison")
    write_text(target / "compare.md", cmp.to_markdown())
    write_json(target / "compare.json", cmp.to_dict())
    console.print(f"wrote [bold]{target / 'compare.md'}[/] and [bold]{target / 'compare.json'}[/]", highlight=False)
