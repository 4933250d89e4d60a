"""The interval section: per model and threat model the verified / open / broken shares, the interval
[verified, attacked] and the verifiers' counts, with a stacked bar (`harness.reporting.verified`)."""

from __future__ import annotations

from collections.abc import Sequence

from harness.reporting.sections.base import Figure, Section, Table, register_section
from harness.reporting.verified import HEAD, rows, stacked_bar
from harness.results import Result

INTRO = (
    "Per sample and threat model: verified (a sound verifier proved no input of the ball changes the "
    "prediction), broken (an attack, or a verifier's counterexample confirmed by the engine's fp32 verdict, "
    "changed it) or open. The true robust accuracy lies in [verified, attacked]; exact where they meet."
)


@register_section("verified", order=5)
def verified_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """One section over every result with [[verify]] entries: a table and a stacked bar per model."""
    tables, figures = [], []
    for i, (lab, r) in enumerate(zip(labels, results)):
        rs = rows(r)
        if not rs:
            continue
        tables.append(Table(HEAD, tuple(tuple(row) for row in rs), caption=lab, css="verified"))
        figures.append(Figure(f"verified-{i}", "verified / open / broken per threat model", lambda r=r: stacked_bar(r)))
    if not tables:
        return []
    return [
        Section(
            "Robust accuracy as an interval (verified, attacked)",
            "verified",
            intro=INTRO,
            tables=tuple(tables),
            figures=tuple(figures),
        )
    ]
