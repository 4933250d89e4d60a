"""The calibration aggregation on a hand-built record: each group's point per sample, and each group's
bootstrap seeded by (run seed, group) alone, so a group's intervals do not depend on the groups before it
(the issue-21 golden comparison caught a refactor that chained the seeds)."""

from __future__ import annotations

import numpy as np

from harness.analyses.calibration import aggregate_calibration
from harness.calibration import GroupStats
from harness.records import RecordStore
from harness.rng import stream_seed
from harness.suites import Entry

N = 12


def _record(tmp_path) -> RecordStore:
    rng = np.random.default_rng(0)
    cal = lambda: np.column_stack([rng.uniform(0.1, 1, N), np.log(rng.uniform(0.1, 1, N)), rng.uniform(0.1, 1, N)])
    store = RecordStore(tmp_path, "h", N, N)
    store.write(0, {
        "id": np.arange(N), "label": np.zeros(N, np.int64), "clean_pred": np.zeros(N, np.int16),
        "clean_cal": cal().astype(np.float32),
        "s0": np.ones(N, np.int8), "c0": cal().astype(np.float32),  # linf-0.1: every sample held
        "s1": np.zeros(N, np.int8), "c1": cal().astype(np.float32),  # linf-0.2: every sample broken
    })  # fmt: skip
    return store


def test_each_group_uses_its_own_points_and_seed(tmp_path) -> None:
    store = _record(tmp_path)
    entries = [Entry("attack", "pgd", norm="linf", eps=0.1), Entry("attack", "pgd", norm="linf", eps=0.2)]
    out = aggregate_calibration(entries, store, seed=5, settings={"bootstrap": 30}, temperature=None)
    chunk = store.read(0)
    for group, col, correct in (("clean", "clean_cal", True), ("linf-0.1", "c0", True), ("linf-0.2", "c1", False)):
        c = chunk[col].astype(np.float64)
        ok = np.full(N, correct)
        want = GroupStats(c[:, 0], ok, c[:, 1], c[:, 2]).summary(
            seed=stream_seed(5, "calibration-bootstrap", group), n_boot=30
        )
        assert out["groups"][group]["ece"] == want["ece"]
        assert out["groups"][group]["ci95"] == want["ci95"], group
