"""Attack entries: search the samples still alive in the threat model, re-verify every returned point.

Every candidate point goes through the threat model's contract (ball, box, finiteness) and the
engine's own fp32 verdict; an attack only proposes points. Samples already broken by an earlier attack
of the same threat model, or wrong on the clean image, are not attacked (status -1). With a reduced
search precision, a point that only the low-precision model calls misclassified is re-searched in fp32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.engine.runners.base import Batch, Engine, EntryRunner, Scored
from harness.engine.runners.common import calibration_column, verdict_columns
from harness.labels import threat_label
from harness.logits import misclassified
from harness.records import schema as col
from harness.suites import Entry
from harness.threat import check_contract


class AttackRunner(EntryRunner):
    kind = "attack"

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        return {**verdict_columns(k, n), **calibration_column(k, n, engine.cal_width)}

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        cols, sl, alive = batch.cols, batch.sl, batch.alive
        if k in engine.skipped:
            cols[col.status(k)][sl] = np.where(alive.cpu().numpy(), 1, -1)  # not attacked: as robust as before
            return
        act = alive.nonzero().squeeze(1)
        if not len(act):
            return
        entry, attacker, seed = engine.entries[k], engine.attackers[k], engine.entry_seed(k)
        x, y, ids = batch.x[act], batch.y[act], batch.ids[act]
        xa = attacker(engine.attack_model(k), x, y, index=ids, seed=seed)
        check_contract(x, xa, entry.threat, who=entry.key)  # type: ignore[arg-type]
        scored = engine.score(xa, y)
        if engine.reduced_precision:
            redo = self.rerun_fp32(engine, k, x, y, ids, xa, scored)
            cols[col.RERUNS][sl][act[redo].cpu().numpy()] += 1
        engine.gallery.attack(k, batch, act, xa)
        status, m, p, cal, tie = scored
        alive[act] = status.bool()
        n, a_np = len(batch), act.cpu().numpy()
        s_np = np.full(n, -1, np.int8)
        m_np = np.full(n, np.nan, np.float32)
        p_np = np.full(n, -1, np.int16)
        c_np = np.full((n, engine.cal_width), np.nan, np.float32)
        t_np = np.zeros(n, np.int8)
        s_np[a_np], m_np[a_np], p_np[a_np] = status.cpu().numpy(), m.cpu().numpy(), p.cpu().numpy()
        c_np[a_np] = cal.cpu().numpy()
        t_np[a_np] = tie.cpu().numpy()
        cols[col.status(k)][sl], cols[col.margin(k)][sl], cols[col.pred(k)][sl] = s_np, m_np, p_np
        cols[col.tie(k)][sl] = t_np
        cols[col.calib(k)][sl] = c_np

    @staticmethod
    def rerun_fp32(engine: Engine, k: int, x: Tensor, y: Tensor, ids: Tensor, xa: Tensor, scored: Scored) -> Tensor:
        """Re-attack in fp32 the samples whose low-precision search ended on a point only it calls misclassified.

        Such a sample is robust by the fp32 verdict already; the rerun makes sure a rounding artefact
        did not also stop its search early (attacks drop samples they think broken). Updates ``scored``
        in place and returns the positions re-attacked.
        """
        entry, attacker = engine.entries[k], engine.attackers[k]
        status, m, p, cal, tie = scored
        with torch.no_grad():
            low_wrong = misclassified(engine.guarded(xa), y)
        redo = (low_wrong & status.bool()).nonzero().squeeze(1)  # one sync per attacked batch
        if len(redo) == 0:
            return redo
        xr = attacker(engine.attack_model(k, eager=True), x[redo], y[redo], index=ids[redo], seed=engine.entry_seed(k))
        check_contract(x[redo], xr, entry.threat, who=entry.key)  # type: ignore[arg-type]
        with torch.no_grad():
            xa[redo] = xr.to(xa.dtype)  # the points now scored (what the gallery shows)
        s2, m2, p2, c2, t2 = engine.score(xr, y[redo])
        status[redo], m[redo], p[redo], cal[redo], tie[redo] = s2, m2, p2, c2, t2
        return redo

    def group_fields(self, engine: Engine, first: Entry) -> dict[str, Any]:
        return {"label": threat_label(first.norm, first.eps)}

    def entry_fields(self, engine: Engine, k: int) -> dict[str, Any]:
        return {"gradients": engine.gradient_source(k)}
