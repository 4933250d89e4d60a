"""One pass over a finished record: the counts a Result is built from (per group, entry, class, chunk).

The per-sample worst case is `harness.records.outcome`'s rule (clean right AND every member left the
sample robust, for threat-model kinds); this module only counts it, plus what the findings need:
non-finite verdicts, float-level ties and the batch plan actually used.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.records import schema as col
from harness.records.kinds import entry_kind
from harness.records.outcome import clean_correct, group_start, survived
from harness.results import Finding
from harness.suites import Entry, group_entries
from harness.ties import TIE_ULPS


@dataclass
class Tally:
    """Counts over a whole record; arrays are per group (``g_*``), per entry (``e_*``) or per class."""

    groups: list[tuple[str, list[int]]]
    num_classes: int
    n: int = 0
    clean_correct: int = 0
    clean_ties: int = 0
    clean_nonfinite: int = 0
    reruns: int = 0
    # Per chunk: the batch size used, or the sizes in order after an OOM back-off mid-chunk.
    plan: list[Any] = field(default_factory=list)
    class_n: np.ndarray = field(init=False)
    class_clean: np.ndarray = field(init=False)
    g_correct: np.ndarray = field(init=False)
    g_class: np.ndarray = field(init=False)
    g_ties: np.ndarray = field(init=False)  # group verdicts that rest on a tie
    e_cum: np.ndarray = field(init=False)  # still robust after this entry (and every earlier one of its group)
    e_first: np.ndarray = field(init=False)  # broken by this entry and no earlier one
    e_tried: np.ndarray = field(init=False)
    e_nonfinite: np.ndarray = field(init=False)  # verdicts from non-finite logits (margin -inf)
    e_ties: np.ndarray = field(init=False)  # broken at a float-level tie (harness/ties.py)
    e_inherited: np.ndarray = field(init=False)  # verdicts taken from a smaller eps (nested eps, h{k} >= 0)

    def __post_init__(self) -> None:
        G, K = len(self.groups), self.num_classes
        E = sum(len(m) for _, m in self.groups)
        self.class_n, self.class_clean = np.zeros(K, np.int64), np.zeros(K, np.int64)
        self.g_correct, self.g_ties = np.zeros(G, np.int64), np.zeros(G, np.int64)
        self.g_class = np.zeros((G, K), np.int64)
        self.e_cum, self.e_first, self.e_tried = (np.zeros(E, np.int64) for _ in range(3))
        self.e_nonfinite, self.e_ties = np.zeros(E, np.int64), np.zeros(E, np.int64)
        self.e_inherited = np.zeros(E, np.int64)

    def per_class(self, counts: np.ndarray) -> list[float]:
        """Accuracy per class (NaN for a class with no samples)."""
        return [float(a / b) if b else float("nan") for a, b in zip(counts, self.class_n)]

    @property
    def used_batch_sizes(self) -> list[int]:
        return sorted({b for c in self.plan for b in (c if isinstance(c, list) else [c])}, reverse=True)

    def tie_groups(self) -> dict[str, int]:
        return {gkey: int(self.g_ties[gi]) for gi, (gkey, _) in enumerate(self.groups)}


def tally(store: Any, entries: list[Entry], num_classes: int) -> Tally:
    """Count every chunk of ``store`` (a finished record of ``entries``)."""
    t = Tally(group_entries(entries), num_classes)
    K = num_classes
    for chunk in store.iter_chunks():
        t.reruns += int(chunk[col.RERUNS].sum()) if col.RERUNS in chunk else 0
        if col.BATCH in chunk:
            sizes = [int(b) for b, _ in itertools.groupby(chunk[col.BATCH].tolist())]
            t.plan.append(sizes[0] if len(sizes) == 1 else sizes)
        lab = chunk[col.LABEL]
        ok = clean_correct(chunk)
        tie0 = chunk[col.CLEAN_TIE].astype(bool) if col.CLEAN_TIE in chunk else np.zeros(len(lab), bool)
        t.clean_ties += int(tie0.sum())
        t.clean_nonfinite += int(np.isneginf(chunk[col.CLEAN_MARGIN]).sum())
        for k, e in enumerate(entries):
            if entry_kind(e.kind).logit_margin:
                t.e_nonfinite[k] += int(np.isneginf(chunk[col.margin(k)]).sum())
        t.n += len(lab)
        t.clean_correct += int(ok.sum())
        t.class_n += np.bincount(lab, minlength=K)
        t.class_clean += np.bincount(lab[ok], minlength=K)
        for gi, (_, members) in enumerate(t.groups):
            kind = entries[members[0]].kind
            alive = group_start(ok, kind)
            on_tie = ok & tie0 if entry_kind(kind).threat_model else np.zeros(len(lab), bool)
            for k in members:
                s_k = chunk[col.status(k)]
                t_k = (chunk[col.tie(k)] == 1) & (s_k == 0) if col.tie(k) in chunk else np.zeros(len(lab), bool)
                t.e_first[k] += int((s_k == 0).sum())
                t.e_tried[k] += int((s_k >= 0).sum())
                t.e_ties[k] += int(t_k.sum())
                if col.inherited(k) in chunk:  # absent: not a taking entry, or a record of independent eps
                    t.e_inherited[k] += int((chunk[col.inherited(k)] >= 0).sum())
                on_tie |= alive & t_k  # broken first by this entry, at a tie
                alive &= survived(chunk, k)
                t.e_cum[k] += int(alive.sum())
            t.g_correct[gi] += int(alive.sum())
            t.g_ties[gi] += int(on_tie.sum())
            t.g_class[gi] += np.bincount(lab[alive], minlength=K)
    return t


def tie_findings(clean: int, groups: dict[str, int]) -> list[Finding]:
    """An info finding when some verdicts rest on a float-level tie (decided by the tie rule, harness/ties.py)."""
    tied = {g: n for g, n in groups.items() if n}
    if not clean and not tied:
        return []
    parts = [f"{n} at {g}" for g, n in tied.items()] + ([f"{clean} clean"] if clean else [])
    return [
        Finding(
            "ties",
            "info",
            f"verdicts at a float-level tie (|margin| within {TIE_ULPS} float32 ulps of the logit scale), "
            f"counted as not robust: {', '.join(parts)}; on other hardware their argmax could go either way",
            data={"clean": clean, "groups": tied, "tolerance_ulps": TIE_ULPS},
        )
    ]


def nonfinite_findings(entries: list[Entry], clean: int, per_entry: np.ndarray, n: int) -> list[Finding]:
    """One finding for non-finite clean logits, one per entry whose inputs gave non-finite logits."""
    out = []
    if clean:
        out.append(
            Finding(
                "nonfinite-logits",
                "error",
                _nonfinite_msg(clean, n, "on clean images"),
                data={"samples": clean, "n": n, "entry": "clean"},
            )
        )
    for k, e in enumerate(entries):
        if per_entry[k]:
            out.append(
                Finding(
                    "nonfinite-logits",
                    "warning",
                    _nonfinite_msg(int(per_entry[k]), n, f"{entry_kind(e.kind).inputs} {e.key}"),
                    related=e.group,
                    data={"samples": int(per_entry[k]), "n": n, "entry": e.key},
                )
            )
    return out


def _nonfinite_msg(count: int, n: int, where: str) -> str:
    return (
        f"the model returned NaN or Inf logits {where} for {count} of {n} samples; each counts as a wrong "
        "prediction (non-finite logits predict nothing)"
    )
