"""Common-corruption metrics from `Result`s (Hendrycks & Dietterich, 2019, section 3).

With E the top-1 error of model f on corruption c at severity s:

- mean corruption accuracy: the mean of the accuracies over all corruption x severity groups;
- CE_c = sum_s E_{s,c}(f) / sum_s E_{s,c}(ref), mCE = mean_c CE_c;
- relative CE_c = sum_s (E_{s,c}(f) - E_clean(f)) / sum_s (E_{s,c}(ref) - E_clean(ref)), relative mCE its mean.

The paper's reference is AlexNet; here it is any model evaluated on the same suite (default in
`harness run`: the plain cross-entropy model), named in the output. A corruption whose reference
denominator is not positive has no CE (``None``) and is left out of the mean, with a note.
"""

from __future__ import annotations

import math
from typing import Any

from harness.results import Result


def accuracy_table(result: Result) -> dict[str, dict[int, float]]:
    """{corruption: {severity: accuracy}} in suite order."""
    out: dict[str, dict[int, float]] = {}
    for g in result.corruptions:
        out.setdefault(str(g.corruption), {})[int(g.severity or 0)] = g.accuracy.accuracy
    return out


def mean_corruption_accuracy(result: Result) -> float | None:
    accs = [g.accuracy.accuracy for g in result.corruptions]
    return sum(accs) / len(accs) if accs else None


def _errors(result: Result) -> dict[str, dict[int, float]]:
    return {c: {s: 1.0 - a for s, a in sev.items()} for c, sev in accuracy_table(result).items()}


def corruption_errors(result: Result, reference: Result) -> dict[str, dict[str, float | None]]:
    """Per corruption: CE and relative CE of ``result`` normalised by ``reference`` (shared severities only)."""
    mine, ref = _errors(result), _errors(reference)
    e_clean, r_clean = 1.0 - result.clean.accuracy, 1.0 - reference.clean.accuracy
    out: dict[str, dict[str, float | None]] = {}
    for c, sev in mine.items():
        shared = sorted(set(sev) & set(ref.get(c, {})))
        if not shared:
            continue
        num = sum(sev[s] for s in shared)
        den = sum(ref[c][s] for s in shared)
        rnum = sum(sev[s] - e_clean for s in shared)
        rden = sum(ref[c][s] - r_clean for s in shared)
        out[c] = {"ce": num / den if den > 0 else None, "relative_ce": rnum / rden if rden > 0 else None}
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def reference_name(result: Result) -> str:
    return str(result.model.get("name") or result.name)


def corruption_summary(result: Result, reference: Result | None = None) -> dict[str, Any]:
    """The corruption block of result.json: accuracies, their mean, and (with a reference) mCE and relative mCE."""
    table = accuracy_table(result)
    out: dict[str, Any] = {
        "accuracy": {c: {str(s): a for s, a in sev.items()} for c, sev in table.items()},
        "mean_accuracy": mean_corruption_accuracy(result),
    }
    if reference is not None:
        ce = corruption_errors(result, reference)
        out.update(
            reference=reference_name(reference),
            reference_clean_accuracy=reference.clean.accuracy,
            ce=ce,
            mce=_mean([v["ce"] for v in ce.values()]),
            relative_mce=_mean([v["relative_ce"] for v in ce.values()]),
        )
        undefined = sorted(c for c, v in ce.items() if v["ce"] is None or v["relative_ce"] is None)
        if undefined:
            out["note"] = f"reference makes no (relative) error on {', '.join(undefined)}: left out of the means"
    return out


def attach(result: Result, reference: Result | None = None) -> Result:
    """Store `corruption_summary` in ``result.extra["corruptions"]`` (no-op without corruption groups)."""
    if result.corruptions:
        result.extra["corruptions"] = corruption_summary(result, reference)
    return result
