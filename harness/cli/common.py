"""Rendering helpers shared by the subcommands."""

from __future__ import annotations

from rich.table import Table

from harness.labels import relabel
from harness.reporting.summary import basis_legend, basis_mark, key_text
from harness.results import Result


def results_table(
    results: list[Result], title: str = "clean vs robust accuracy (%)", labels: list[str] | None = None
) -> Table:
    """One row per result (labelled by ``labels``, default the model name), one column per threat model.

    A number that does not rest on the model's own gradients carries the report's marker (†, ‡),
    explained under the table.
    """
    keys: list[str] = []
    for r in results:
        keys += [g.key for g in r.threat_models if g.key not in keys]
    t = Table(title=title)
    t.add_column("model")
    t.add_column("clean", justify="right")
    for k in keys:
        t.add_column(key_text(results, k), justify="right")
    for i, r in enumerate(results):
        have = {g.key: g for g in r.threat_models}
        t.add_row(
            labels[i] if labels else str(r.model.get("name") or r.name),
            r.clean.pct(),
            *[have[k].accuracy.pct() + basis_mark(have[k]) if k in have else "–" for k in keys],
        )
    legend = basis_legend(results)
    if legend:
        t.caption = "\n".join(legend)
    return t


def print_findings(console, results: list[Result]) -> None:
    for r in results:
        for f in r.findings:
            if f.severity in ("warning", "error"):
                color = "red" if f.severity == "error" else "yellow"
                console.print(
                    f"[{color}]{f.severity}[/] {r.model.get('name') or r.name}: {relabel(f.message)}", highlight=False
                )
