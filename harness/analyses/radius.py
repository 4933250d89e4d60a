"""The robustness band of radius entries: robust accuracy against every eps up to max_eps, from one run.

Per sample the record holds the interval [lower, upper] of its robust radius (harness.engine.runners.
radius). At eps the band is [verified(eps), attacked(eps)]:

- attacked(eps) = share of samples with upper > eps — an upper bound on robust accuracy: the threat
  model is the closed ball ||delta|| <= eps, so a sample whose confirmed adversarial point lies at
  distance exactly eps is broken at eps;
- verified(eps) = share of clean-correct samples with lower >= eps — a lower bound: the verifier proved
  the closed ball of radius lower, hence every eps <= lower.

Both equal the clean accuracy at eps = 0. A sample with lower > upper (beyond rounding) is a soundness
bug: counted, its ids listed, an error finding — never repaired. Where the run also has fixed-eps
attack groups of the same norm, the band's attacked side is compared per sample with them: a sample
the fixed-eps attacks broke whose upper end is not <= eps is a disagreement, reported per eps; a
warning when attacked(eps) exceeds the fixed-eps robust accuracy by more than AGREEMENT_TOLERANCE, and
one on the fixed-eps group when attacked(eps) is below it by more (that number overstates robustness).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.records import schema as col
from harness.records.outcome import beyond, disagreements, group_bits, read_radius
from harness.results import Accuracy, Finding
from harness.suites import Entry, group_entries

# Points of the band's curve between 0 and max_eps (plus the dataset's grid and the run's fixed eps).
CURVE_STEPS = 50
# attacked(eps) may exceed the fixed-eps robust accuracy by this share before a warning (0.01: one point
# in a hundred; the min-norm attack and the fixed-eps attacks are different searches).
AGREEMENT_TOLERANCE = 0.01
# Sample ids listed per violation or disagreement (the counts are complete).
MAX_IDS = 50


def attacked_count(upper: np.ndarray, eps: float) -> int:
    """Samples not broken at eps by the attack: upper > eps (a point at distance exactly eps breaks it)."""
    return int(beyond(upper, eps).sum())


def verified_count(lower: np.ndarray, correct: np.ndarray, eps: float) -> int:
    """Samples proven robust at eps: clean-correct with lower >= eps."""
    return int((correct & (lower >= eps)).sum())


def band_grid(max_eps: float, extra: Sequence[float] = ()) -> list[float]:
    """0..max_eps in CURVE_STEPS steps, with the ``extra`` eps (at most max_eps) merged in, sorted."""
    pts = set(np.linspace(0.0, max_eps, CURVE_STEPS + 1).tolist()) | {float(e) for e in extra if 0 <= e <= max_eps}
    return sorted(pts)


def band(lower: np.ndarray, upper: np.ndarray, correct: np.ndarray, grid: Sequence[float]) -> list[list[float]]:
    """[[eps, verified share, attacked share], ...] over ``grid`` (shares of all samples)."""
    n = max(1, len(upper))
    return [[float(e), verified_count(lower, correct, e) / n, attacked_count(upper, e) / n] for e in grid]


def _fixed_groups(entries: Sequence[Entry], norm: str, max_eps: float) -> list[tuple[str, float, list[int]]]:
    """The run's attack groups (threat models) of ``norm`` with eps <= max_eps: (key, eps, members)."""
    out = []
    for g, members in group_entries(list(entries)):
        e = entries[members[0]]
        if e.kind == "attack" and e.norm == norm and e.eps is not None and e.eps <= max_eps:
            out.append((g, float(e.eps), members))
    return out


def aggregate_radius(view: RunView) -> tuple[dict[str, Any], list[Finding]]:
    """``{group: summary}`` for every radius entry of the run, and its findings."""
    entries = view.entries
    out: dict[str, Any] = {}
    findings: list[Finding] = []
    for k, entry in enumerate(entries):
        if entry.kind != "radius":
            continue
        search = view.attackers[k]
        d = read_radius(view.store, k)
        n, correct, lower, upper, flags = len(d["id"]), d["correct"].astype(bool), d["lower"], d["upper"], d["flags"]
        max_eps, norm = float(search.max_eps), str(entry.norm)
        fixed = _fixed_groups(entries, norm, max_eps)
        grid_eps = sorted({*view.dataset.eps_grid.get(norm, ()), *(e for _, e, _ in fixed)})
        grid_eps = [e for e in grid_eps if e <= max_eps]
        viol = (flags & col.RADIUS_VIOLATION) != 0
        found = correct & np.isfinite(upper)
        counts = {
            "n": n,
            "clean_correct": int(correct.sum()),
            "found": int(found.sum()),
            "beyond_max_eps": int((correct & beyond(upper, max_eps)).sum()),
            "unconfirmed": int(((flags & col.RADIUS_UNCONFIRMED) != 0).sum()),
            "timeouts": int(((flags & col.RADIUS_TIMEOUT) != 0).sum()),
            "violations": int(viol.sum()),
        }
        capped_up = np.minimum(upper[correct], max_eps)
        summary: dict[str, Any] = {
            "config": search.config(),
            "counts": counts,
            "violation_ids": d["id"][viol][:MAX_IDS].tolist(),
            "median_upper": float(np.median(capped_up)) if len(capped_up) else 0.0,
            "median_lower": float(np.median(lower[correct])) if correct.any() else 0.0,
            "table": [
                {
                    "eps": e,
                    "verified": Accuracy.of(verified_count(lower, correct, e), n).__dict__,
                    "attacked": Accuracy.of(attacked_count(upper, e), n).__dict__,
                }
                for e in grid_eps
            ],
            "band": band(lower, upper, correct, band_grid(max_eps, grid_eps)),
            "agreement": _agreement(view, fixed, d, entry, findings),
        }
        out[entry.group] = summary
        if counts["violations"]:
            findings.append(
                Finding(
                    "radius-violation",
                    "error",
                    f"{counts['violations']} sample(s) of {entry.key} have a proven radius above the attack's "
                    "confirmed smallest adversarial distance (lower > upper): the verifier or the engine is unsound "
                    "here, so neither side of the band can be trusted",
                    related=entry.group,
                    data={"samples": counts["violations"], "ids": summary["violation_ids"]},
                )
            )
        if counts["unconfirmed"]:
            findings.append(
                Finding(
                    "radius-unconfirmed",
                    "warning",
                    f"{entry.key}: {counts['unconfirmed']} point(s) the attack called adversarial are not "
                    "misclassified by the engine's fp32 forward pass: their upper end is +inf (not broken), "
                    "reported, never counted",
                    related=entry.group,
                    data={"samples": counts["unconfirmed"]},
                )
            )
    return out, findings


def _agreement(
    view: RunView, fixed: list[tuple[str, float, list[int]]], d: dict[str, np.ndarray], entry: Entry, findings: list
) -> list[dict[str, Any]]:
    """Per fixed-eps attack group of the norm: its robust accuracy beside attacked(eps), and disagreements."""
    if not fixed:
        return []
    bits: dict[str, list[np.ndarray]] = {g: [] for g, _, _ in fixed}
    for chunk in view.store.iter_chunks():
        for g, _, members in fixed:
            bits[g].append(group_bits(chunk, "attack", members))
    n = len(d["id"])
    rows = []
    for g, eps, _ in fixed:
        robust = np.concatenate(bits[g]) if bits[g] else np.zeros(0, bool)
        missed = disagreements(robust, d["upper"], eps)
        att = attacked_count(d["upper"], eps)
        row = {
            "group": g,
            "eps": eps,
            "fixed": Accuracy.of(int(robust.sum()), n).__dict__,
            "attacked": Accuracy.of(att, n).__dict__,
            "disagreements": int(missed.sum()),
            "ids": d["id"][missed][:MAX_IDS].tolist(),
            "stronger": int((robust & ~beyond(d["upper"], eps)).sum()),
        }
        rows.append(row)
        if n and att / n > robust.sum() / n + AGREEMENT_TOLERANCE:
            findings.append(
                Finding(
                    "radius-weaker-than-fixed",
                    "warning",
                    f"{entry.key} at eps {eps:g}: attacked {100 * att / n:.1f}% above the fixed-eps robust accuracy "
                    f"{100 * robust.sum() / n:.1f}% of {g} (tolerance {100 * AGREEMENT_TOLERANCE:g} points); "
                    f"{row['disagreements']} sample(s) the fixed-eps attacks broke have no adversarial point within "
                    "eps from the minimum-norm attack: raise its steps or restarts",
                    related=entry.group,
                    data={"eps": eps, "group": g, "disagreements": row["disagreements"]},
                )
            )
        elif n and att / n < robust.sum() / n - AGREEMENT_TOLERANCE:
            # the other way round the fixed-eps number is the one in doubt: it overstates robustness
            findings.append(
                Finding(
                    "fixed-weaker-than-radius",
                    "warning",
                    f"{g}: robust accuracy {100 * robust.sum() / n:.1f}% overstates robustness at eps {eps:g}: "
                    f"the minimum-norm attacks of {entry.key} found adversarial points within eps for "
                    f"{row['stronger']} sample(s) the fixed-eps attacks left robust (attacked {100 * att / n:.1f}%; "
                    f"tolerance {100 * AGREEMENT_TOLERANCE:g} points): strengthen the fixed-eps attacks",
                    related=g,
                    data={"eps": eps, "radius": entry.group, "stronger": row["stronger"]},
                )
            )
    return rows


@register_analysis
class Radius(Analysis):
    """``result.extra["radius"]`` (only with radius entries): the band, its counts, and the agreement rows."""

    name = "radius"
    order = 25

    def run(self, view: RunView) -> AnalysisOutput:
        out, findings = aggregate_radius(view)
        return AnalysisOutput(out or None, tuple(findings))
