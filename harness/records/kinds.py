"""What each kind of suite entry means in the record, as data: the readers and the engine ask here.

A kind's entries either search inside a threat model (their group's worst case starts from the
clean-correct samples and ANDs every member) or stand alone (a corruption or a certifier judges every
sample on its own inputs). A lower-bound kind (a verifier) belongs to a threat model but proves
instead of searching: it runs last in its group, and only a confirmed counterexample of it breaks a
sample. Adding a kind is one `EntryKind` here plus its runner
(`harness.engine.runners`) and its suite table (`harness.suites`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import DataError


@dataclass(frozen=True)
class EntryKind:
    """The record-level properties of one kind of suite entry."""

    name: str
    # Entries search points inside a (norm, eps) ball: a group's AND starts from the clean-correct samples.
    threat_model: bool
    # m{k} is a logit margin (so -inf marks non-finite logits); otherwise it holds another quantity (a radius).
    logit_margin: bool
    # The entry records calibration statistics c{k} at its inputs.
    calibrated: bool
    # How findings name the inputs the entry's verdicts were taken on, e.g. "at the points of".
    inputs: str
    # A verifier: it runs after its group's attacks on the samples they left, and proves robustness (a lower
    # bound) in its proof column q{k}; its status s{k} is 0 only where its counterexample passed the engine's
    # contract and fp32 verdict (then it broke the sample like an attack), else 1 (not broken) or -1 (not run).
    lower_bound: bool = False


ENTRY_KINDS: dict[str, EntryKind] = {
    k.name: k
    for k in (
        EntryKind("attack", threat_model=True, logit_margin=True, calibrated=True, inputs="at the points of"),
        EntryKind("corruption", threat_model=False, logit_margin=True, calibrated=True, inputs="on the images of"),
        EntryKind(
            "smoothing", threat_model=False, logit_margin=False, calibrated=False, inputs="on the noisy draws of"
        ),
        EntryKind(
            "verify",
            threat_model=True,
            logit_margin=False,
            calibrated=False,
            inputs="at the counterexamples of",
            lower_bound=True,
        ),
        # Per-sample radius interval [lower, upper] under one norm (issue 22 section 2): stands alone like a
        # certifier; its status says whether the attack's smallest point lies beyond max_eps.
        EntryKind("radius", threat_model=False, logit_margin=True, calibrated=False, inputs="at the minimal points of"),
    )
}


def entry_kind(name: str) -> EntryKind:
    """The declared kind ``name``; a record naming an unknown kind is refused in one line."""
    try:
        return ENTRY_KINDS[name]
    except KeyError:
        raise DataError(
            f"unknown suite entry kind {name!r} (this harness knows {', '.join(ENTRY_KINDS)})",
            "the record was written by another version of the harness: run the evaluation again",
        ) from None
