"""Randomized-smoothing entries: certified radius and empirical robustness per radius (harness.analyses.certified)."""

from __future__ import annotations

import numpy as np

from harness.engine.runners.base import Batch, Engine, EntryRunner
from harness.engine.runners.common import verdict_columns
from harness.records import schema as col


class SmoothingRunner(EntryRunner):
    kind = "smoothing"

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        R = len(engine.attackers[k].radii)
        emp, viol, pa = col.smoothing_columns(k)
        return {
            **verdict_columns(k, n),
            emp: np.zeros((n, R), np.int8),
            viol: np.zeros((n, R), np.int8),
            pa: np.zeros(n, np.float32),
        }

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        res = engine.attackers[k].run(
            engine.verdict, batch.x, batch.y, index=batch.ids, seed=engine.entry_seed(k), num_classes=engine.num_classes
        )
        cols, sl = batch.cols, batch.sl
        cols[col.status(k)][sl] = (res["pred"] == batch.y.cpu().numpy()).astype(np.int8)
        cols[col.margin(k)][sl], cols[col.pred(k)][sl] = res["radius"], res["pred"]
        emp, viol, pa = col.smoothing_columns(k)
        cols[pa][sl], cols[emp][sl], cols[viol][sl] = res["pa_lower"], res["emp"], res["viol"]
        engine.gallery.smoothing(engine, k, batch)
