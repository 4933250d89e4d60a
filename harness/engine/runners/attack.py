"""Attack entries: search the samples still alive in the threat model, re-verify every returned point.

Every candidate point goes through the threat model's contract (ball, box, finiteness) and the
engine's own fp32 verdict; an attack only proposes points. Samples already broken by an earlier attack
of the same threat model, or wrong on the clean image, are not attacked (status -1). With a reduced
search precision, a point that only the low-precision model calls misclassified is re-searched in fp32.
Nested eps (harness.engine.nested): a taking entry first re-checks the points that broke its samples at
a smaller eps of its norm, and a giving entry hands on the points it breaks samples with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.engine.nested import inherit
from harness.engine.runners.base import Batch, Engine, EntryRunner, Scored
from harness.engine.runners.common import calibration_column, verdict_columns
from harness.labels import threat_label
from harness.logits import misclassified
from harness.records import schema as col
from harness.suites import Entry
from harness.threat import enforce_contract


class AttackRunner(EntryRunner):
    kind = "attack"

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        cols = {**verdict_columns(k, n), **calibration_column(k, n, engine.cal_width)}
        if k in engine.nesting.takers:  # only where nested eps applies: other records keep their columns
            cols[col.inherited(k)] = np.full(n, -1, np.int32)
        return cols

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        cols, sl, alive = batch.cols, batch.sl, batch.alive
        if k in engine.skipped:
            cols[col.status(k)][sl] = np.where(alive.cpu().numpy(), 1, -1)  # not attacked: as robust as before
            return
        taken = inherit(engine, k, batch) if k in engine.nesting.takers else None
        act = alive.nonzero().squeeze(1)
        if not len(act) and taken is None:
            return
        n = len(batch)
        s_np = np.full(n, -1, np.int8)
        m_np = np.full(n, np.nan, np.float32)
        p_np = np.full(n, -1, np.int16)
        c_np = np.full((n, engine.cal_width), np.nan, np.float32)
        t_np = np.zeros(n, np.int8)
        if taken is not None:
            s_np[taken.pos], m_np[taken.pos], p_np[taken.pos] = col.BROKEN, taken.margin, taken.pred
            c_np[taken.pos], t_np[taken.pos] = taken.calib, taken.tie
            cols[col.inherited(k)][sl][taken.pos] = taken.source
            if batch.witnesses is not None:  # the gallery shows the inherited point: the one the verdict scored
                points = batch.witnesses.points[str(engine.entries[k].norm)]
                engine.gallery.attack(k, batch, torch.as_tensor(taken.pos, device=points.device), points[taken.pos])
        if len(act):
            entry, attacker, seed = engine.entries[k], engine.attackers[k], engine.entry_seed(k)
            x, y, ids = batch.x[act], batch.y[act], batch.ids[act]
            xa = attacker(engine.attack_model(k), x, y, index=ids, seed=seed)
            enforce_contract(x, xa, entry.threat, who=entry.key)  # type: ignore[arg-type]
            scored = engine.score(xa, y)
            if engine.reduced_precision:
                redo = self.rerun_fp32(engine, k, x, y, ids, xa, scored)
                cols[col.RERUNS][sl][act[redo].cpu().numpy()] += 1
            engine.gallery.attack(k, batch, act, xa)
            status, m, p, cal, tie = scored
            alive[act] = status.bool()
            if batch.witnesses is not None and k in engine.nesting.givers:
                broken = status == col.BROKEN
                batch.witnesses.offer(str(entry.norm), act[broken], xa[broken], k)
            a_np = act.cpu().numpy()
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
        and ``xa`` in place and returns the positions re-attacked.
        """
        entry, attacker = engine.entries[k], engine.attackers[k]
        status, m, p, cal, tie = scored
        with torch.no_grad():
            low_wrong = misclassified(engine.guarded(xa), y)
        redo = (low_wrong & status.bool()).nonzero().squeeze(1)  # one sync per attacked batch
        if len(redo) == 0:
            return redo
        xr = attacker(engine.attack_model(k, eager=True), x[redo], y[redo], index=ids[redo], seed=engine.entry_seed(k))
        enforce_contract(x[redo], xr, entry.threat, who=entry.key)  # type: ignore[arg-type]
        s2, m2, p2, c2, t2 = engine.score(xr, y[redo])
        status[redo], m[redo], p[redo], cal[redo], tie[redo] = s2, m2, p2, c2, t2
        xa[redo] = xr  # the point behind each verdict (a nested-eps witness)
        return redo

    def group_fields(self, engine: Engine, first: Entry) -> dict[str, Any]:
        return {"label": threat_label(first.norm, first.eps)}

    def entry_fields(self, engine: Engine, k: int) -> dict[str, Any]:
        return {"gradients": engine.gradient_source(k)}
