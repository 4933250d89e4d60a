"""The per-sample outcome of a finished run, read for the gate (`records.outcome.read_bits` plus the
cross-checks against result.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError, UsageError
from harness.records import check_result_matches_record
from harness.records.outcome import members_by_group, read_bits, verified_key
from harness.results import Result

# ---- per-sample outcomes of one evaluation --------------------------------------------------------


@dataclass
class Outcome:
    """Per-sample bits of one finished evaluation: ``bits[metric]`` is aligned with ``ids``."""

    ids: np.ndarray
    metrics: list[dict[str, Any]]  # key, kind (+ norm/eps or corruption/severity), in suite order
    bits: dict[str, np.ndarray]
    entries: list[dict[str, Any]]
    dataset: dict[str, Any]
    suite: dict[str, Any]
    seed: int
    model: dict[str, Any]
    source: str = ""
    calibration: dict[str, float] = field(default_factory=dict)  # group -> ECE (result.extra)


def read_run(run_dir: str | Path) -> Outcome:
    """Per-sample clean/robust bits of a finished run directory (``result.json`` + ``records/``).

    Attack group bit = clean correct AND every entry of the threat model left the sample robust
    (status 1); corruption group bit = the corrupted image is classified correctly. A threat model
    with verify entries adds the metric ``verified@<group>`` (robust AND proven: the verified floor).
    """
    d = Path(run_dir)
    result = Result.load(d)
    rec = d / "records"
    if not (rec / "index.json").is_file():
        raise UsageError(
            f"{d} has no per-sample record (records/index.json)",
            "pass a run directory written by `harness evaluate` that finished",
        )
    check_result_matches_record(d, result.record, result.record.get("config_hash") or result.config.get("config_hash"))
    rb = read_bits(rec)
    entries, groups = rb.entries, members_by_group(rb.entries)
    bits = {"clean": rb.clean, **rb.groups}
    metrics: list[dict[str, Any]] = [{"key": "clean", "kind": "clean"}]
    for g, members in groups.items():
        e = entries[members[0]]
        m = {"key": g, "kind": e["kind"]}
        m.update({"norm": e["norm"], "eps": e["eps"]} if e["kind"] == "attack" else {"severity": e.get("severity")})
        metrics.append(m)
        if g in rb.verified:
            metrics.append({"key": verified_key(g), "kind": "verified", "norm": e["norm"], "eps": e["eps"]})
            bits[verified_key(g)] = rb.verified[g]
    # The record and result.json must tell the same story; anything else means a tampered run.
    if int(bits["clean"].sum()) != result.clean.correct:
        raise DataError(f"{d}: records and result.json disagree on clean accuracy", "re-run the evaluation")
    for g in result.groups:
        if g.key in bits and int(bits[g.key].sum()) != g.accuracy.correct:
            raise DataError(f"{d}: records and result.json disagree on {g.key}", "re-run the evaluation")
        v = verified_key(g.key)
        if (v in bits) != (g.verified is not None) or (v in bits and int(bits[v].sum()) != g.verified.correct):
            raise DataError(f"{d}: records and result.json disagree on {v}", "re-run the evaluation")
    return Outcome(
        ids=rb.ids,
        metrics=metrics,
        bits=bits,
        entries=entries,
        dataset=dict(result.dataset),
        suite=dict(result.suite),
        seed=int(result.config.get("seed", 0)),
        model=dict(result.model),
        source=str(d),
        calibration={
            k: float(v["ece"])
            for k, v in (result.extra.get("calibration") or {}).get("groups", {}).items()
            if isinstance(v, dict) and v.get("ece") is not None
        },
    )
