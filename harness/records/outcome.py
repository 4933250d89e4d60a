"""The one reader of a finished record: per-sample correctness, clean and per group (worst case).

The core rule lives here once: a sample is robust at a threat model when it is correct on the clean
image AND no attack of that threat model broke it (every member's status is ROBUST); a corruption or
smoothing group stands alone (its entries' statuses only). A threat model with verify entries also
has its verified bits (robust AND proven by one of them: the lower end of the interval [verified,
attacked]). The engine's aggregation, the gate, run comparison, calibration and the benchmarks all
use these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.records.kinds import entry_kind
from harness.records.schema import CLEAN_PRED, ID, LABEL, PROOF_VERIFIED, ROBUST, proof, radius_columns, status
from harness.records.store import RERUN, open_record, read_index


def clean_correct(chunk: dict[str, np.ndarray]) -> np.ndarray:
    """Per sample: the clean prediction is the label."""
    return chunk[CLEAN_PRED] == chunk[LABEL]


def read_radius(store: Any, k: int) -> dict[str, np.ndarray]:
    """Radius entry k's per-sample columns over the whole record: id, correct, lower, upper, flags."""
    lo_c, up_c, fl_c = radius_columns(k)
    parts: dict[str, list[np.ndarray]] = {"id": [], "correct": [], "lower": [], "upper": [], "flags": []}
    for chunk in store.iter_chunks():
        parts["id"].append(chunk[ID].astype(np.int64))
        parts["correct"].append(clean_correct(chunk))
        parts["lower"].append(chunk[lo_c])
        parts["upper"].append(chunk[up_c])
        parts["flags"].append(chunk[fl_c])
    return {k2: np.concatenate(v) if v else np.zeros(0) for k2, v in parts.items()}


def beyond(upper: np.ndarray, eps: float) -> np.ndarray:
    """Per sample: no confirmed adversarial point within eps (upper > eps; one at distance exactly eps breaks it)."""
    return upper > eps


def disagreements(fixed_robust: np.ndarray, upper: np.ndarray, eps: float) -> np.ndarray:
    """Per sample: the fixed-eps attacks broke it, yet the minimum-norm upper end lies beyond eps."""
    return ~fixed_robust & beyond(upper, eps)


def group_start(clean_ok: np.ndarray, kind: str) -> np.ndarray:
    """A group's per-sample bits before any of its entries: clean-correct for threat-model kinds (attacks),
    all True for kinds whose entries stand alone (corruptions, certifiers)."""
    return clean_ok.copy() if entry_kind(kind).threat_model else np.ones(len(clean_ok), bool)


def survived(chunk: dict[str, np.ndarray], k: int) -> np.ndarray:
    """Per sample: entry k left it robust (a sample it did not run on did not survive it)."""
    return chunk[status(k)] == ROBUST


def group_bits(chunk: dict[str, np.ndarray], kind: str, members: list[int]) -> np.ndarray:
    """Per sample of one chunk: the group's worst case over its member entries."""
    alive = group_start(clean_correct(chunk), kind)
    for k in members:
        alive &= survived(chunk, k)
    return alive


def proven(chunk: dict[str, np.ndarray], verifiers: list[int]) -> np.ndarray:
    """Per sample: some verify entry of ``verifiers`` proved it robust (whatever else the record says)."""
    out = np.zeros(len(chunk[LABEL]), bool)
    for k in verifiers:
        out |= chunk[proof(k)] == PROOF_VERIFIED
    return out


def verified_bits(chunk: dict[str, np.ndarray], kind: str, members: list[int], verifiers: list[int]) -> np.ndarray:
    """Per sample: robust at the threat model (`group_bits`) AND proven by one of its verify entries.

    The lower end of the interval [verified, attacked]; a proof of a sample that is not robust is a
    contradiction the engine reports (harness.engine.verification), never counted here.
    """
    return group_bits(chunk, kind, members) & proven(chunk, verifiers)


def lower_bound_members(entries: list[dict[str, Any]], members: list[int]) -> list[int]:
    """The members of a group whose kind is a verifier (`EntryKind.lower_bound`)."""
    return [k for k in members if entry_kind(entries[k]["kind"]).lower_bound]


def verified_key(group: str) -> str:
    """The metric key of a threat model's verified share (the gate, comparisons): ``verified@linf-0.1``."""
    return f"verified@{group}"


def members_by_group(entries: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Entry indices by group key, in suite order, from ``records/index.json`` entries."""
    groups: dict[str, list[int]] = {}
    for k, e in enumerate(entries):
        groups.setdefault(e["group"], []).append(k)
    return groups


@dataclass
class RecordBits:
    """Per-sample correctness of one finished record: ids, clean, and per group (worst case)."""

    ids: np.ndarray
    clean: np.ndarray
    groups: dict[str, np.ndarray]
    entries: list[dict[str, Any]]
    # Groups with verify entries: robust AND proven per sample (`verified_bits`).
    verified: dict[str, np.ndarray] = field(default_factory=dict)


def read_bits(records_dir: str | Path, *, complete: bool = True) -> RecordBits:
    """Read a finished record (``records/``) into one bool array per group.

    With ``complete`` (the gate) a missing chunk or a column the index implies is one `DataError` up
    front; without (run comparison) a damaged chunk fails as it is read, a lacking column as `KeyError`.
    """
    rec = Path(records_dir)
    entries = list(read_index(rec).get("entries", []))
    store = open_record(rec)
    store.check_schema()
    missing = store.missing() if complete else []
    if missing:
        raise DataError(
            f"the record in {rec} is incomplete or corrupt (chunks {missing[:5]})",
            "run the same evaluation command again to finish it",
        )
    groups = members_by_group(entries)
    kinds = {g: entries[ks[0]]["kind"] for g, ks in groups.items()}
    lower = {g: lower_bound_members(entries, ks) for g, ks in groups.items()}
    lower = {g: ks for g, ks in lower.items() if ks}
    ids, clean, gbits = [], [], {g: [] for g in groups}
    vbits: dict[str, list[np.ndarray]] = {g: [] for g in lower}
    columns = [ID, CLEAN_PRED, LABEL, *(status(k) for k in range(len(entries)))]
    columns += [proof(k) for ks in lower.values() for k in ks]
    for chunk in store.iter_chunks():
        lacking = [c for c in columns if c not in chunk] if complete else []
        if lacking:
            raise DataError(f"the record in {rec} has no column(s) {lacking[:5]} for its index", RERUN)
        ids.append(chunk[ID].astype(np.int64))
        clean.append(clean_correct(chunk))
        for g, ks in groups.items():
            gbits[g].append(group_bits(chunk, kinds[g], ks))
        for g, vs in lower.items():
            vbits[g].append(verified_bits(chunk, kinds[g], groups[g], vs))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, bool)
    return RecordBits(
        cat(ids).astype(np.int64),
        cat(clean),
        {g: cat(v) for g, v in gbits.items()},
        entries,
        {g: cat(v) for g, v in vbits.items()},
    )
