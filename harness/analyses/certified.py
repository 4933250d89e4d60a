"""Aggregation of randomized-smoothing entries: certified accuracy against L2 radius beside the
empirical robust accuracy of the same smoothed classifier, and the sanity check between them.

Certified accuracy at r: the fraction of samples whose smoothed prediction is the label with
certified radius >= r. Empirical: the fraction still predicted correctly (majority of noisy draws)
after an EOT L2 PGD attack of radius r. A certificate is a proof, so certified must not exceed
empirical: a sample certified at r that the attack flips significantly within r is an error
finding (a bug in the certifier, the attack's verification or the model wrapper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.records import RecordStore
from harness.records import schema as col
from harness.results import Accuracy, Finding
from harness.suites import Entry

CURVE_POINTS = 41


class Certifier(Protocol):
    """What the aggregation reads of a built certifier (e.g. ``smoothing-l2``)."""

    radii: list[float]
    alpha: float

    def config(self) -> dict[str, Any]: ...


def aggregate_certified(
    entries: Sequence[Entry], certifiers: Sequence[Any], store: RecordStore
) -> tuple[dict[str, Any], list[Finding]]:
    """``{group: summary}`` for every smoothing entry, and its findings.

    ``certifiers[k]`` is the built certifier of ``entries[k]`` (other kinds' items are not read);
    the record's columns are indexed by the entry's position.
    """
    ks = [k for k, e in enumerate(entries) if e.kind == "smoothing"]
    if not ks:
        return {}, []
    out: dict[str, Any] = {}
    findings: list[Finding] = []
    for k in ks:
        entry = entries[k]
        cert: Certifier = certifiers[k]
        e_col, v_col, _ = col.smoothing_columns(k)
        lab, pred, rad, emp, viol = [], [], [], [], []
        for chunk in store.iter_chunks():
            lab.append(chunk["label"])
            pred.append(chunk[col.pred(k)])
            rad.append(chunk[col.margin(k)])
            emp.append(chunk[e_col])
            viol.append(chunk[v_col])
        y, p, r = np.concatenate(lab), np.concatenate(pred), np.concatenate(rad)
        e, v = np.concatenate(emp), np.concatenate(viol)
        n = len(y)
        ok = (p == y) & ~np.isnan(r)
        radius = np.where(ok, r, -1.0)
        rows = []
        for j, rr in enumerate(cert.radii):
            c = Accuracy.of(int((radius >= rr).sum()), n)
            em = Accuracy.of(int(e[:, j].sum()), n)
            rows.append(
                {"radius": rr, "certified": c.__dict__, "empirical": em.__dict__, "violations": int(v[:, j].sum())}
            )
        top = float(np.nanmax(r)) if np.isfinite(r).any() else 0.0
        grid = np.linspace(0.0, max(top, max(cert.radii, default=0.0)), CURVE_POINTS)
        curve = [[float(g), float((radius >= g).mean()) if n else 0.0] for g in grid]
        out[entry.group] = {
            "config": cert.config(),
            "n": n,
            "abstain": float((p < 0).mean()) if n else 0.0,
            "smoothed_accuracy": Accuracy.of(int(ok.sum()), n).__dict__,
            "mean_radius_correct": float(r[ok].mean()) if ok.any() else 0.0,
            "table": rows,
            "curve": curve,
        }
        for row in rows:
            rr, c, em = row["radius"], row["certified"], row["empirical"]
            if row["violations"]:
                findings.append(
                    Finding(
                        "certified-above-empirical",
                        "error",
                        f"{row['violations']} sample(s) certified at L2 radius {rr:g} were flipped by the EOT attack "
                        f"within that radius with significance (alpha={cert.alpha}): the certificate or the attack "
                        "verification is wrong",
                        related=entry.group,
                        data={"radius": rr, "violations": row["violations"]},
                    )
                )
            elif c["correct"] > em["correct"]:
                findings.append(
                    Finding(
                        "certified-above-empirical",
                        "warning",
                        f"certified accuracy {100 * c['accuracy']:.1f}% exceeds the empirical robust accuracy "
                        f"{100 * em['accuracy']:.1f}% at L2 radius {rr:g} (not significant per sample: Monte Carlo "
                        "noise near the boundary; raise n_verdict to resolve)",
                        related=entry.group,
                        data={"radius": rr},
                    )
                )
    return out, findings


@register_analysis
class Certified(Analysis):
    """``result.extra["certified"]`` (only with smoothing entries) and the certified-above-empirical findings."""

    name = "certified"
    order = 20

    def run(self, view: RunView) -> AnalysisOutput:
        cert, findings = aggregate_certified(view.entries, view.attackers, view.store)
        return AnalysisOutput(cert or None, tuple(findings))
