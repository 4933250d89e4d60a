"""Nested eps (issue 23 §1): within one norm, a sample broken at a smaller eps is broken at every larger one.

The chunk loop runs the threat-model groups of each norm in ascending eps (`evaluation_order`: the one
place that order is decided). Per batch, `Witnesses` holds for each norm the adversarial point that
last broke each sample and the entry that found it. At a larger eps, the group's first entry that takes
part (`NestedPlan.takers`) re-checks those points before it attacks (`inherit`): the threat model's
contract at its own eps (`check_contract`: a point of the smaller ball lies in the larger one) and the
engine's fp32 verdict (`Engine.score`). A confirmed point is the sample's verdict there (status broken,
``h{k}`` = the entry that found the point) and the sample is not attacked again at that eps. A point the
verdict does not confirm (EOT majority, a stochastic model, a float-level tie) counts for nothing: the
sample is attacked as usual. Only survivors are attacked, by the whole group, in order.

An attack entry with ``nested = false`` takes no points and gives none: its eps are attacked
independently, as before nested eps existed. The witnesses live per batch, so a record stays a
function of its chunk: resumes and ranks give the record of one uninterrupted process with the same
batch plan (docs/reliability.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from harness.records.kinds import entry_kind
from harness.records.schema import BROKEN
from harness.suites import Entry, group_entries
from harness.threat import check_contract

if TYPE_CHECKING:
    from harness.engine.runners.base import Batch, Engine


def evaluation_order(entries: list[Entry]) -> list[tuple[str, list[int]]]:
    """Groups in the order the chunk loop runs them: suite order, except that the threat-model groups of
    each norm take the slots that norm's groups hold in ascending eps (stable for equal eps).

    Only the order of work changes; the record and result.json keep suite order (`group_entries`).
    """
    groups = group_entries(entries)
    slots: dict[str, list[int]] = {}
    for i, (_, members) in enumerate(groups):
        e = entries[members[0]]
        if entry_kind(e.kind).threat_model:
            slots.setdefault(str(e.norm), []).append(i)
    out = list(groups)
    for held in slots.values():
        ordered = sorted(held, key=lambda i: float(entries[groups[i][1][0]].eps))  # type: ignore[arg-type]
        for slot, i in zip(held, ordered):
            out[slot] = groups[i]
    return out


@dataclass(frozen=True)
class NestedPlan:
    """Which attack entries give witnesses (their broken points) and which take them (one per group at most)."""

    givers: frozenset[int] = frozenset()
    takers: frozenset[int] = frozenset()

    @classmethod
    def of(cls, entries: list[Entry], skipped: dict[int, str] | None = None) -> NestedPlan:
        """The plan of ``entries``; a ``skipped`` entry (not run) neither gives nor takes.

        A group's taker is its first nested entry that runs, when some smaller eps of its norm has a
        giver; a group with no such smaller eps has nothing to take.
        """
        skipped = skipped or {}
        # Searching entries only: a verifier (lower_bound) neither offers nor takes points.
        runs = [
            entry_kind(e.kind).threat_model and not entry_kind(e.kind).lower_bound and e.nested and k not in skipped
            for k, e in enumerate(entries)
        ]
        givers = frozenset(k for k, ok in enumerate(runs) if ok)
        takers: set[int] = set()
        given: dict[str, bool] = {}
        for _, members in evaluation_order(entries):
            e0 = entries[members[0]]
            if not entry_kind(e0.kind).threat_model:
                continue
            norm = str(e0.norm)
            if given.get(norm):
                first = next((k for k in members if runs[k]), None)
                if first is not None:
                    takers.add(first)
            given[norm] = given.get(norm, False) or any(runs[k] for k in members)
        return cls(givers, frozenset(takers))

    @property
    def applies(self) -> bool:
        """Some entry can inherit a verdict (its evaluation's records differ from independent attacks)."""
        return bool(self.takers)


class Witnesses:
    """One batch's adversarial points, per norm: the point that last broke each sample and its entry (-1: none)."""

    def __init__(self, x: Tensor) -> None:
        self.like = x
        self.points: dict[str, Tensor] = {}
        self.source: dict[str, Tensor] = {}

    def offer(self, norm: str, pos: Tensor, points: Tensor, k: int) -> None:
        """Samples at batch positions ``pos`` were broken by entry k at ``points`` (confirmed by the verdict)."""
        if not len(pos):
            return
        if norm not in self.points:
            self.points[norm] = torch.empty_like(self.like)
            self.source[norm] = torch.full((len(self.like),), -1, dtype=torch.long, device=self.like.device)
        self.points[norm][pos] = points.detach().to(self.like.dtype)
        self.source[norm][pos] = k

    def held(self, norm: str, alive: Tensor) -> Tensor:
        """Batch positions of samples still ``alive`` that hold a point of ``norm``."""
        src = self.source.get(norm)
        if src is None:
            return alive.new_zeros(0, dtype=torch.long)
        return (alive & (src >= 0)).nonzero().squeeze(1)


@dataclass
class Inherited:
    """Verdicts entry k took from witnesses: batch positions, source entries, and the re-scored verdict's values."""

    pos: np.ndarray
    source: np.ndarray
    margin: np.ndarray
    pred: np.ndarray
    calib: np.ndarray
    tie: np.ndarray


def inherit(engine: Engine, k: int, batch: Batch) -> Inherited | None:
    """Re-check at entry k's eps the witnesses of the samples still alive; take the confirmed ones.

    Each point goes through the contract at k's threat model and the fp32 verdict; a sample whose point
    the verdict calls broken is cleared from ``batch.alive`` (not attacked again). None: nothing to take.
    """
    entry = engine.entries[k]
    if batch.witnesses is None:
        return None
    norm = str(entry.norm)
    pos = batch.witnesses.held(norm, batch.alive)
    if not len(pos):
        return None
    xw = batch.witnesses.points[norm][pos]
    check_contract(batch.x[pos], xw, entry.threat, who=f"the nested-eps witness re-checked at {entry.key}")  # type: ignore[arg-type]
    status, m, p, cal, tie = engine.score(xw, batch.y[pos])
    keep = (status == BROKEN).nonzero().squeeze(1)
    if not len(keep):
        return None
    taken = pos[keep]
    batch.alive[taken] = False
    return Inherited(
        pos=taken.cpu().numpy(),
        source=batch.witnesses.source[norm][taken].cpu().numpy().astype(np.int32),
        margin=m[keep].cpu().numpy(),
        pred=p[keep].cpu().numpy(),
        calib=cal[keep].cpu().numpy(),
        tie=tie[keep].cpu().numpy(),
    )
