"""The common-corruptions summary: mean corruption accuracy, mCE and relative mCE per model, with the
reference model named. Reads ``result.extra["corruptions"]`` (`harness.analyses.corruptions`, and
`corruption_metrics.attach` with a reference), computing it for an older result without it."""

from __future__ import annotations

from collections.abc import Sequence

from harness.corruption_metrics import corruption_summary
from harness.reporting.sections.base import Section, Table, register_section
from harness.results import Result

HEAD = ("model", "mean corruption accuracy (%)", "mCE", "relative mCE")


def _fmt(v: float | None, pct: bool = False) -> str:
    return "–" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")


@register_section("corruptions", order=10)
def corruption_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """One section over every model with corruption groups."""
    rows = [
        (lab, r.extra.get("corruptions") or corruption_summary(r)) for lab, r in zip(labels, results) if r.corruptions
    ]
    if not rows:
        return []
    refs = sorted({str(s["reference"]) for _, s in rows if s.get("reference")})
    intro = f"Corruption errors are normalised by the reference model {', '.join(refs)}." if refs else ""
    notes = tuple(f"{lab}: {s['note']}" for lab, s in rows if s.get("note"))
    table = Table(
        HEAD,
        tuple(
            (lab, _fmt(s.get("mean_accuracy"), True), _fmt(s.get("mce")), _fmt(s.get("relative_mce")))
            for lab, s in rows
        ),
        css="corruption-summary",
    )
    return [Section("Common corruptions", "corruptions", intro, (table,), notes=notes)]
