"""The attack unit test (``--checks full``): per model and threat model, how many planted adversarial
examples the suite found and the verdict. Reads ``result.extra["unit_test"]``
(`harness.analyses.binarization`)."""

from __future__ import annotations

from collections.abc import Sequence

from harness.labels import key_label
from harness.reporting.sections.base import Section, Table, register_section
from harness.results import Result

HEAD = ("model", "threat model", "attacks", "found / valid", "found (%)", "verdict")


@register_section("unit_test", order=40)
def unit_test_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """One section over every model that ran the attack unit test."""
    rows = []
    threshold = None
    for lab, r in zip(labels, results):
        ut = r.extra.get("unit_test")
        if not isinstance(ut, dict):
            continue
        threshold = ut.get("threshold", threshold)
        for t in ut.get("threats", []):
            rows.append(
                (
                    lab,
                    key_label(str(t["key"])),
                    ", ".join(t.get("attacks", [])),
                    f"{t['found']}/{t['valid']}",
                    f"{100 * t['fraction']:.1f}",
                    "too weak" if t["too_weak"] else "passed",
                )
            )
    if not rows:
        return []
    intro = (
        "Each sample gets a readout with an adversarial example planted inside the ball (Zimmermann et al., "
        "NeurIPS 2022); the suite is too weak for a model when its attacks find fewer than "
        f"{100 * float(threshold or 0):.0f} % of them."
    )
    return [Section("Attack unit test", "unit-test", intro, (Table(HEAD, tuple(rows), css="unit-test"),))]
