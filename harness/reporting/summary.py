"""Numbers a report is built from: labels, the headline threat model, Pareto fronts, findings by number."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import UsageError
from harness.labels import key_label, threat_label
from harness.results import Accuracy, Finding, GroupResult, Result
from harness.stats import wilson

CLEAN = "clean"  # the key findings use when they cast doubt on the clean accuracy or the model as a whole


def model_name(r: Result) -> str:
    return str(r.model.get("name") or r.name)


def condition_text(r: Result) -> str:
    cond = r.model.get("condition") or {}
    return ", ".join(f"{k}={v}" for k, v in cond.items())


def label(r: Result) -> str:
    """``name (objective) [condition]``: how a model is named in tables and plots."""
    bits = [model_name(r)]
    obj = r.model.get("objective")
    if obj and obj != "unknown" and str(obj) not in bits[0]:
        bits.append(f"({obj})")
    cond = condition_text(r)
    if cond:
        bits.append(f"[{cond}]")
    return " ".join(bits)


def short_label(r: Result) -> str:
    """Objective and training condition (the point label in the trade-off plot)."""
    obj = r.model.get("objective")
    base = str(obj) if obj and obj != "unknown" else model_name(r)
    cond = condition_text(r)
    return f"{base} [{cond}]" if cond else base


def unique_labels(results: Sequence[Result], fn=label) -> list[str]:
    """Labels made unique by appending the run name where two models would read the same."""
    labels = [fn(r) for r in results]
    out = []
    for lab, r in zip(labels, results):
        out.append(f"{lab} <{r.name}>" if labels.count(lab) > 1 else lab)
    if len(set(out)) < len(out):
        out = [f"{lab} #{i + 1}" for i, lab in enumerate(out)]
    return out


def threat_keys(results: Sequence[Result]) -> list[str]:
    """Attack group keys over all results, ordered by norm then eps."""
    seen: dict[str, GroupResult] = {}
    for r in results:
        for g in r.threat_models:
            seen.setdefault(g.key, g)
    return sorted(seen, key=lambda k: (seen[k].norm or "", seen[k].eps or 0.0))


def group_text(g: GroupResult) -> str:
    """What a person reads for a group: ``L∞ 8/255`` for a threat model (from its norm and eps, so a
    result.json written before labels existed reads the same), the key for anything else."""
    if g.kind == "attack" and g.norm and isinstance(g.eps, (int, float)):
        return threat_label(g.norm, g.eps)
    return g.key


def entry_text(entry: Mapping[str, Any], g: GroupResult) -> str:
    """An attack entry of a group without its ``@key`` suffix (the threat model is shown beside it)."""
    key = str(entry.get("key", ""))
    suffix = f"@{g.key}"
    return key[: -len(suffix)] if key.endswith(suffix) and len(key) > len(suffix) else key


def key_text(results: Sequence[Result], key: str | None) -> str:
    """`group_text` of the group with this key in ``results`` (else `harness.labels.key_label` of the key)."""
    if key is None:
        return ""
    for r in results:
        for g in r.groups:
            if g.key == key:
                return group_text(g)
    return key_label(key)


def corruption_names(results: Sequence[Result]) -> list[str]:
    names: list[str] = []
    for r in results:
        for g in r.corruptions:
            if g.corruption not in names:
                names.append(str(g.corruption))
    return names


def canonical_threat(text: str) -> str | None:
    """``NORM-EPS`` in the form of a result's group keys (``linf-0.0313725``), or None if it is not one.

    Spellings of the same threat model are equal: the norm in any case, and the eps as any decimal
    or ``k/255`` that rounds to the same 6 significant digits as the key (``linf-0.3`` ==
    ``linf-0.30``, ``Linf-8/255`` == ``linf-0.0313725``).
    """
    norm, sep, eps = text.strip().partition("-")
    if not sep:
        return None
    try:
        if "/" in eps:
            num, den = eps.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(eps)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(value):
        return None
    return f"{norm.strip().lower()}-{value:.6g}"


def headline_threat(results: Sequence[Result], prefer: str | None = None) -> str | None:
    """The threat model of the trade-off plot: ``prefer`` if given, else the one the models were
    adversarially trained at (objective_params norm/eps), else the middle L-inf eps shared by most."""
    keys = threat_keys(results)
    if not keys:
        return None
    if prefer:
        want = canonical_threat(prefer)
        same = [k for k in keys if k == prefer or (want is not None and canonical_threat(k) == want)]
        if not same:
            raise UsageError(f"no threat model {prefer!r} in these runs", f"choose one of {', '.join(keys)}")
        return same[0]
    count = {k: sum(any(g.key == k for g in r.threat_models) for r in results) for k in keys}
    best = max(count.values())
    common = [k for k in keys if count[k] == best]
    for r in results:
        p = r.model.get("objective_params") or {}
        if isinstance(p.get("eps"), (int, float)):
            for k in common:
                g = next(g for rr in results for g in rr.threat_models if g.key == k)
                if g.norm == p.get("norm", "linf") and math.isclose(g.eps or 0.0, float(p["eps"]), rel_tol=1e-6):
                    return k
    linf = [k for k in common if k.startswith("linf")] or common
    return linf[(len(linf) - 1) // 2]


def pooled(groups: Sequence[GroupResult]) -> Accuracy | None:
    """Mean accuracy over groups (pooled counts) with a Wilson interval.

    The interval treats every corrupted copy as an independent sample, so it is narrower than an
    interval over the test images would be; it is reported as the pooled-count interval.
    """
    if not groups:
        return None
    return Accuracy.of(sum(g.accuracy.correct for g in groups), sum(g.accuracy.n for g in groups))


def mean_corruption(r: Result) -> Accuracy | None:
    return pooled(r.corruptions)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated (no other point is >= in both coordinates and > in one).

    Both coordinates are maximised; the returned indices are ordered by the first coordinate.
    NaN points are never on the front.
    """
    idx = [i for i, (a, b) in enumerate(points) if not (math.isnan(a) or math.isnan(b))]
    front = []
    for i in idx:
        ai, bi = points[i]
        dominated = any(
            (points[j][0] >= ai and points[j][1] >= bi) and (points[j][0] > ai or points[j][1] > bi) for j in idx
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


# Threat-model numbers that do not rest on the model's own gradients (GroupResult.attack_basis):
# the marker beside the number in the summary tables, and what it means.
BASIS_MARKS = {"gradient-free": "†", "surrogate": "‡"}
BASIS_TEXT = {
    "gradient-free": "from gradient-free attacks only (the model's input gradients are missing or obfuscated)",
    "surrogate": "from surrogate gradients (BPDA/transfer) and gradient-free attacks only",
}


def basis_mark(g: GroupResult | None) -> str:
    """The marker for a threat model whose number comes from gradient-free or surrogate attacks only."""
    return BASIS_MARKS.get(str(g.attack_basis), "") if g is not None else ""


def basis_notes(r: Result) -> list[tuple[GroupResult, str]]:
    """(threat model, what its number rests on) for every number not from the model's own gradients."""
    return [(g, BASIS_TEXT[str(g.attack_basis)]) for g in r.threat_models if g.attack_basis in BASIS_TEXT]


def basis_legend(results: Sequence[Result]) -> list[str]:
    """One line per marker used in these results: ``† robust accuracy from ...``."""
    used = {str(g.attack_basis) for r in results for g in r.threat_models}
    return [f"{BASIS_MARKS[b]} robust accuracy {BASIS_TEXT[b]}" for b in BASIS_MARKS if b in used]


def findings_by_key(r: Result) -> dict[str, list[Finding]]:
    """Findings grouped by the number they cast doubt on (`Finding.related`; `CLEAN` for the model)."""
    out: dict[str, list[Finding]] = {}
    keys = {g.key for g in r.groups}
    for f in r.findings:
        k = f.related if f.related in keys else CLEAN
        out.setdefault(k, []).append(f)
    return out


def precision_text(config: Mapping[str, Any]) -> str:
    """How the attacks searched: 'fp32', or 'bf16 search, fp32 verdicts (N re-attacked in fp32)', plus compile."""
    p = str(config.get("precision") or "fp32")
    text = p if p == "fp32" else f"{p} search, fp32 verdicts"
    reruns = config.get("precision_reruns")
    if p != "fp32" and reruns:
        text += f" ({reruns} re-attacked in fp32)"
    if config.get("compile"):
        text += "; torch.compile " + ("search" if config.get("compiled_search") else "failed, eager search")
    return text


def serious(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ("warning", "error")]


def class_counts(r: Result) -> list[int] | None:
    c = r.extra.get("class_counts") if isinstance(r.extra, dict) else None
    return [int(v) for v in c] if isinstance(c, list) else None


def class_ci(acc: float, n: int) -> tuple[float, float]:
    if n <= 0 or math.isnan(acc):
        return (float("nan"), float("nan"))
    return wilson(round(acc * n), n)
