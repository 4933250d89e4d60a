"""The robustness-band section: per model, a table per radius entry at the dataset's eps grid and the band
plot (`harness.reporting.radius`). Reads ``result.extra["radius"]`` (`harness.analyses.radius`)."""

from __future__ import annotations

from collections.abc import Sequence

from harness.reporting.radius import AGREE_NOTE, HEAD, band_plot, caption, radius_of, table_rows
from harness.reporting.sections.base import Figure, Section, Table, register_section
from harness.results import Result

INTRO = (
    "Per sample, the robust radius lies in [lower, upper]: upper from a minimum-norm attack whose point the "
    "engine re-checked, lower from a verifier. Robust accuracy at every eps up to max_eps then lies in the band "
    "[verified(eps), attacked(eps)]."
)


@register_section("radius", order=7)
def radius_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """One section per model with radius entries: a table per entry, the band plot, the agreement note."""
    out = []
    for i, (lab, r) in enumerate(zip(labels, results)):
        rad = radius_of(r)
        if not rad:
            continue
        tables = tuple(
            Table(HEAD, tuple(table_rows(d)), caption=caption(key, d), css="radius") for key, d in rad.items()
        )
        notes = [AGREE_NOTE]
        for key, d in rad.items():
            if d["counts"]["violations"]:
                notes.append(
                    f"{key}: {d['counts']['violations']} sample(s) with the lower end above the upper end "
                    f"(a soundness bug), ids {d['violation_ids']}"
                )
            for a in d.get("agreement", []):
                if a["disagreements"]:
                    notes.append(
                        f"{key} at eps {a['eps']:g}: {a['disagreements']} sample(s) broken by {a['group']} but not "
                        f"within eps by the minimum-norm attack (ids {a['ids'][:10]})"
                    )
        fig = Figure(f"radius-{i}", "robustness band: verified and attacked against eps", lambda r=r: band_plot(r))
        out.append(
            Section(
                f"Robustness band — {lab}",
                f"radius-{i}",
                intro=INTRO,
                tables=tables,
                figures=(fig,),
                notes=tuple(notes),
            )
        )
    return out
