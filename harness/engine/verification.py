"""Robust accuracy as an interval: the verify entries' counts over a finished record (issue 22).

Per threat model with verify entries, a sample is **broken** (an attack, or a verifier's confirmed
counterexample, broke it), **verified** (robust, and some verifier of the group proved it) or
**open**; robust accuracy is the interval [verified, attacked], exact where the two meet. Per verify
entry: how many points it proved, left open, ran out of time on, and the counterexamples it returned
(confirmed by the engine's fp32 verdict, or not — then reported, never counted). A sample both
proven and broken contradicts soundness and is an error finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.records import schema as col
from harness.records.kinds import entry_kind
from harness.records.outcome import group_bits, proven
from harness.results import Accuracy, Finding
from harness.suites import Entry, group_entries

# Per verify entry, the counts result.json carries (the proof column's values by name).
COUNTS = ("verified", "open", "timeouts", "unconfirmed", "broken")


@dataclass
class Verification:
    """Counts over a record: per group with verifiers (verified, contradictions), per verify entry."""

    n: int = 0
    verified: dict[str, int] = field(default_factory=dict)
    contradictions: dict[str, int] = field(default_factory=dict)
    entries: dict[int, dict[str, int]] = field(default_factory=dict)

    def accuracy(self, group: str) -> Accuracy | None:
        """The group's verified share (None for a group without verify entries)."""
        return Accuracy.of(self.verified[group], self.n) if group in self.verified else None

    def entry_fields(self, k: int) -> dict[str, Any]:
        return dict(self.entries[k]) if k in self.entries else {}


def verification(store: Any, entries: list[Entry]) -> Verification:
    """Count the verify entries of a finished record (one pass; nothing to do without verify entries)."""
    v = Verification()
    groups = []
    for g, members in group_entries(entries):
        lower = [k for k in members if entry_kind(entries[k].kind).lower_bound]
        if lower:
            groups.append((g, members, lower))
            v.verified[g] = v.contradictions[g] = 0
            v.entries.update({k: dict.fromkeys(COUNTS, 0) for k in lower})
    if not groups:
        return v
    by_code = {
        col.PROOF_VERIFIED: "verified",
        col.PROOF_OPEN: "open",
        col.PROOF_TIMEOUT: "timeouts",
        col.PROOF_UNCONFIRMED: "unconfirmed",
        col.PROOF_BROKEN: "broken",
    }
    for chunk in store.iter_chunks():
        v.n += len(chunk[col.LABEL])
        for g, members, lower in groups:
            robust = group_bits(chunk, entries[members[0]].kind, members)
            proof = proven(chunk, lower)
            v.verified[g] += int((robust & proof).sum())
            v.contradictions[g] += int((proof & ~robust).sum())  # robust implies clean-correct
            for k in lower:
                q = chunk[col.proof(k)]
                for code, name in by_code.items():
                    v.entries[k][name] += int((q == code).sum())
    # An open point is open whatever kept it so: the time limit and unconfirmed counterexamples are details.
    for counts in v.entries.values():
        counts["open"] += counts["timeouts"] + counts["unconfirmed"]
        # The points it ran on (not those an earlier verifier of the group had proven already).
        counts["attacked"] = counts["verified"] + counts["open"] + counts["broken"]
    return v


def verification_findings(v: Verification, entries: list[Entry]) -> list[Finding]:
    """Contradictions (error), breaks the attacks missed (warning), unconfirmed counterexamples (warning)."""
    out = []
    for g, bad in v.contradictions.items():
        if bad:
            out.append(
                Finding(
                    "verified-contradiction",
                    "error",
                    f"{bad} sample(s) at {g} are proven robust by a verifier and yet broken or wrong when clean: "
                    "a verifier or the engine is unsound here, so neither end of the interval can be trusted",
                    related=g,
                    data={"samples": bad},
                )
            )
    for k, counts in v.entries.items():
        e = entries[k]
        if counts["broken"]:
            out.append(
                Finding(
                    "verifier-broke",
                    "warning",
                    f"{e.key} found {counts['broken']} counterexample(s), confirmed by the fp32 verdict, on samples "
                    f"every attack of {e.group} left robust: the attacks were too weak there (the robust accuracy "
                    "counts these samples as broken)",
                    related=e.group,
                    data={"entry": e.key, "samples": counts["broken"]},
                )
            )
        if counts["unconfirmed"]:
            out.append(
                Finding(
                    "verifier-unconfirmed",
                    "warning",
                    f"{e.key} returned {counts['unconfirmed']} counterexample(s) that the engine's fp32 forward pass "
                    "does not confirm (the exact-arithmetic network and the fp32 model disagree there): reported, "
                    "never counted; those samples stay open",
                    related=e.group,
                    data={"entry": e.key, "samples": counts["unconfirmed"]},
                )
            )
    return out
