"""Verify entries: prove robustness on the samples a threat model's attacks left (issue 22).

A verifier (`harness.registry.VERIFIERS`) runs after every attack of its group, on the samples still
alive that no earlier verifier of the group proved, and writes per sample its proof column
(`schema.proof`: verified / open / time limit / unconfirmed / broken). It can only prove: its status
s{k} stays 1 (not broken) unless it returns a counterexample (the MILP) that passes the threat
model's contract and the engine's fp32 verdict — then the sample is broken like any attack's, and
the aggregation says that the attacks missed it. A counterexample the fp32 verdict does not confirm
leaves the sample open and is reported, never counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.engine.runners.base import Batch, Engine, EntryRunner
from harness.engine.runners.common import verdict_columns
from harness.errors import HarnessError, ModelError
from harness.records import schema as col
from harness.records.kinds import entry_kind
from harness.threat import ThreatModel, check_contract, project_ball_box


class VerifyRunner(EntryRunner):
    kind = "verify"

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        return {**verdict_columns(k, n), col.proof(k): np.full(n, col.NOT_RUN, np.int8)}

    def prepare(self, engine: Engine, k: int, x: torch.Tensor) -> None:
        """Read the model's graph now: an unsupported layer fails before the attacks run, not after them,
        and even when every sample ends up broken (nothing left to verify)."""
        require_readable(engine.model, x, engine.entries[k].key)

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        cols, sl, alive = batch.cols, batch.sl, batch.alive
        n = len(batch)
        alive_np = alive.cpu().numpy()
        s_np = np.where(alive_np, col.ROBUST, col.NOT_RUN).astype(np.int8)
        q_np = np.full(n, col.NOT_RUN, np.int8)
        m_np = np.full(n, np.nan, np.float32)
        p_np = np.full(n, -1, np.int16)
        t_np = np.zeros(n, np.int8)
        todo = alive_np & ~self.proven_before(engine, k, batch)
        act = np.flatnonzero(todo)
        if len(act):
            entry = engine.entries[k]
            idx = torch.as_tensor(act, device=batch.x.device)
            x, y = batch.x[idx].float(), batch.y[idx]
            verdict = self.verify(engine, k, x, y)
            # The verdict's own properties (harness.verify.Verdict): the engine imports no verifier module.
            proved = verdict.verified.cpu().numpy()
            q = np.where(proved, col.PROOF_VERIFIED, col.PROOF_OPEN).astype(np.int8)
            if verdict.timed_out is not None:
                q[verdict.timed_out.cpu().numpy() & ~proved] = col.PROOF_TIMEOUT
            m_np[act] = verdict.bound.cpu().numpy().astype(np.float32)
            fals = np.flatnonzero(verdict.falsified.cpu().numpy())
            if len(fals):
                assert verdict.x_adv is not None, f"{entry.key}: a falsified verdict without its counterexample"
                fi = torch.as_tensor(fals, device=x.device)
                threat = entry.threat
                assert threat is not None
                xc = counterexample(x[fi], verdict.x_adv.to(x.device)[fi], threat)
                check_contract(x[fi], xc, threat, who=entry.key)
                ok, m, p, _, tie = engine.score(xc, y[fi])
                broke = ~ok.bool().cpu().numpy()
                q[fals] = np.where(broke, col.PROOF_BROKEN, col.PROOF_UNCONFIRMED)
                rows = act[fals]
                s_np[rows[broke]] = col.BROKEN
                m_np[rows] = m.cpu().numpy()
                p_np[rows] = p.cpu().numpy()
                t_np[rows] = tie.cpu().numpy()
                alive[torch.as_tensor(rows[broke], device=alive.device, dtype=torch.long)] = False
            q_np[act] = q
        cols[col.status(k)][sl], cols[col.proof(k)][sl] = s_np, q_np
        cols[col.margin(k)][sl], cols[col.pred(k)][sl], cols[col.tie(k)][sl] = m_np, p_np, t_np

    @staticmethod
    def verify(engine: Engine, k: int, x: torch.Tensor, y: torch.Tensor) -> Any:
        """The verifier's verdicts on the model itself; a failure inside it is one `ModelError` line."""
        try:
            return engine.attackers[k](engine.model, x, y)
        except HarnessError:
            raise  # an unsupported layer, a graph that cannot be read: already one line naming them
        except Exception as e:
            raise ModelError(
                f"the verifier {engine.entries[k].name} failed on the model: {type(e).__name__}: {e}",
                "verifiers read the model as a static graph of supported layers (docs/verification.md)",
            ) from e

    @staticmethod
    def proven_before(engine: Engine, k: int, batch: Batch) -> np.ndarray:
        """Per sample of the batch: an earlier verify entry of k's group already proved it."""
        out = np.zeros(len(batch), bool)
        group = engine.entries[k].group
        for j, e in enumerate(engine.entries):
            if j != k and e.group == group and entry_kind(e.kind).lower_bound:
                q = batch.cols[col.proof(j)][batch.sl]
                out |= q == col.PROOF_VERIFIED
        return out


def counterexample(x: torch.Tensor, x_adv: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """The solver's counterexample as an fp32 input inside the ball and [0, 1].

    The MILP's solution satisfies its constraints up to HiGHS's feasibility tolerance (1e-7) and is
    rounded to fp32 here; projecting it back moves it by at most that much, and the engine's fp32
    verdict then decides whether it breaks the sample.
    """
    return project_ball_box(x, x_adv.to(x.dtype).clone(), threat.norm, threat.eps)


def require_readable(model: torch.nn.Module, x: torch.Tensor, key: str) -> None:
    """The verifiers can read ``model`` as a graph of supported layers, or a ModelError naming the entry."""
    # Imported here: the registry loads harness.verify (and scipy) only for suites with a verifier.
    from harness.verify import read_network

    try:
        read_network(model, x[:1].float())
    except ModelError as e:
        raise ModelError(f"{key}: {e.what}", e.hint) from None
