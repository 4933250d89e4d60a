"""Corruption entries: every sample's corrupted image scored by the fp32 verdict (the group stands alone)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.engine.runners.base import Batch, Engine, EntryRunner
from harness.engine.runners.common import calibration_column, verdict_columns
from harness.records import schema as col
from harness.suites import Entry


class CorruptionRunner(EntryRunner):
    kind = "corruption"

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        return {**verdict_columns(k, n), **calibration_column(k, n, engine.cal_width)}

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        xc = engine.attackers[k](batch.x, index=batch.ids, seed=engine.entry_seed(k))
        status, m, p, cal, tie = engine.score(xc, batch.y)
        engine.gallery.corruption(k, batch, xc)
        cols, sl = batch.cols, batch.sl
        cols[col.status(k)][sl] = status.cpu().numpy()
        cols[col.tie(k)][sl] = tie.cpu().numpy()
        cols[col.margin(k)][sl] = m.cpu().numpy()
        cols[col.pred(k)][sl] = p.cpu().numpy()
        cols[col.calib(k)][sl] = cal.cpu().numpy()

    def group_fields(self, engine: Engine, first: Entry) -> dict[str, Any]:
        return {"corruption": first.name}
