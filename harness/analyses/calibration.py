"""Calibration of a finished record: clean, per corruption x severity and per threat model.

The pure metrics (ECE, NLL, Brier, bootstrap, temperature fit) are in `harness.calibration`; this
module applies them to a record and fetches the held-out split a temperature is fitted on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.calibration import DEFAULT_BOOTSTRAP, N_BINS, GroupStats
from harness.errors import UsageError
from harness.loading import dataset_spec_of, load_dataset
from harness.records import RecordStore
from harness.records import schema as col
from harness.records.kinds import entry_kind
from harness.records.outcome import clean_correct, group_start, survived
from harness.rng import stream_seed
from harness.suites import Entry, group_entries


def heldout_dataset(dataset: Any, split: str) -> Any:
    """The dataset's ``split`` (same name and factory arguments), checked disjoint from the evaluated ids."""
    if split == dataset.split:
        raise UsageError(
            f"temperature scaling on split {split!r}, the split being evaluated",
            "fit on a held-out split: [calibration] temperature = 'train' for a test-split evaluation",
        )
    desc = dataset.describe()
    held = load_dataset(dataset_spec_of({**desc, "split": split}))
    overlap = np.intersect1d(np.asarray(held.ids), np.asarray(dataset.ids))
    if len(overlap):
        raise UsageError(
            f"split {split!r} shares {len(overlap)} sample ids with the evaluated data",
            "temperature scaling must never see the test points; choose a disjoint split",
        )
    return held


def _group_stats(cal: np.ndarray, correct: np.ndarray, scaled: bool) -> GroupStats:
    c = cal[:, 3:6] if scaled else cal[:, 0:3]
    return GroupStats(c[:, 0].astype(np.float64), correct, c[:, 1].astype(np.float64), c[:, 2].astype(np.float64))


def aggregate_calibration(
    all_entries: list[Entry],
    store: RecordStore,
    *,
    seed: int,
    settings: dict[str, Any],
    temperature: float | None,
    temperature_split: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibration of clean, every corruption x severity and every threat model, streamed from the record.

    A threat model's point per sample is the one its accuracy is judged on: the adversarial point
    of the attack that broke it, else the last attack's point; samples wrong when clean (not
    attacked) keep their clean point. ``settings`` is the suite's ``[calibration]`` table; the
    record's calibration columns are 3 wide, 6 with a fitted ``temperature`` (raw, then scaled).
    """
    entries = [e for e in all_entries if entry_kind(e.kind).calibrated]  # not smoothing, not verify
    index = {id(e): k for k, e in enumerate(all_entries)}
    groups = group_entries(entries)
    width = 3 if temperature is None else 6
    acc: dict[str, tuple[list, list]] = {"clean": ([], [])}
    for g, _ in groups:
        acc[g] = ([], [])
    for chunk in store.iter_chunks():
        lab = chunk["label"]
        ok = clean_correct(chunk)
        acc["clean"][0].append(chunk["clean_cal"])
        acc["clean"][1].append(ok)
        for g, members in groups:
            ks = [index[id(entries[m])] for m in members]
            if entries[members[0]].kind == "corruption":
                k = ks[0]
                acc[g][0].append(chunk[col.calib(k)])
                acc[g][1].append(chunk[col.status(k)] == 1)
                continue
            cal = chunk["clean_cal"].copy()
            alive = group_start(ok, "attack")
            decided = np.zeros(len(lab), bool)
            for k in ks:
                s = chunk[col.status(k)]
                broke = (s == 0) & ~decided
                cal[broke] = chunk[col.calib(k)][broke]
                decided |= broke
                held = (s == 1) & ~decided
                cal[held] = chunk[col.calib(k)][held]
                alive &= survived(chunk, k)
            acc[g][0].append(cal)
            acc[g][1].append(alive)
    n_boot = int(settings.get("bootstrap", DEFAULT_BOOTSTRAP))
    n_bins = int(settings.get("bins", N_BINS))
    meta = {e.group: e for e in entries}
    out_groups: dict[str, Any] = {}
    for g, (cals, oks) in acc.items():
        cal = np.concatenate(cals) if cals else np.zeros((0, width), np.float32)
        ok = np.concatenate(oks) if oks else np.zeros(0, bool)
        boot_seed = stream_seed(seed, "calibration-bootstrap", g)
        d = _group_stats(cal, ok, False).summary(seed=boot_seed, n_boot=n_boot, n_bins=n_bins)
        if temperature is not None:
            d["scaled"] = _group_stats(cal, ok, True).summary(seed=boot_seed, n_boot=n_boot, n_bins=n_bins)
        e = meta.get(g)
        if e is None:
            d["kind"] = "clean"
        elif e.kind == "corruption":
            d.update(kind="corruption", corruption=e.name, severity=e.severity)
        else:
            d.update(kind="attack", norm=e.norm, eps=e.eps)
        out_groups[g] = d
    temp = None
    if temperature is not None:
        temp = {"value": temperature, **(temperature_split or {})}
    return {"bins": n_bins, "bootstrap": n_boot, "temperature": temp, "groups": out_groups}


@register_analysis
class Calibration(Analysis):
    """``result.extra["calibration"]``: `aggregate_calibration` of every run (no findings)."""

    name = "calibration"
    order = 10

    def run(self, view: RunView) -> AnalysisOutput:
        section = aggregate_calibration(
            list(view.entries),
            view.store,
            seed=view.seed,
            settings=dict(view.calibration),
            temperature=view.temperature,
            temperature_split=None if view.temperature_split is None else dict(view.temperature_split),
        )
        return AnalysisOutput(section)
