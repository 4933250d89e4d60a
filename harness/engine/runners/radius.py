"""Radius entries: per sample the interval [lower, upper] that holds the robust radius (issue 22 §2).

``upper``: the attack's smallest adversarial point (``minimal``) after the engine's contract check —
finite, inside [0, 1], its distance recomputed here with `harness.threat.lp_norm`, and misclassified
by the engine's fp32 verdict (`Engine.score`, the rule every attack's points go through). A point the
attack calls adversarial that the fp32 verdict does not confirm gives upper = +inf and is flagged
(RADIUS_UNCONFIRMED), never counted as broken; +inf also where nothing was found. ``lower``: the
verifier's proven radius on [0, max_eps] (CROWN/IBP bisection, or the MILP's minimal radius, exact
when it finishes; RADIUS_TIMEOUT otherwise). Both are 0 for a sample wrong when clean. A lower end
above the upper end is a soundness bug: flagged (RADIUS_VIOLATION) and reported, never repaired.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.engine.runners.base import Batch, Engine, EntryRunner
from harness.engine.runners.common import verdict_columns
from harness.engine.runners.verify import require_readable
from harness.errors import HarnessError, ModelError, UsageError
from harness.records import schema as col
from harness.rng import stream_seed
from harness.threat import TOLERANCE, ThreatModel, enforce_contract, lp_norm, per_sample

# lower > upper * (1 + VIOLATION_RTOL) + TOLERANCE is a violation: the slack covers the fp32 rounding
# of the recomputed distance and of the verdict (the exact MILP radius is about the network in exact
# arithmetic, the upper end about the fp32 forward pass).
VIOLATION_RTOL = 1e-5
# The MILP's radius is exact when lower reaches min(upper, max_eps) up to this relative slack.
EXACT_RTOL = 1e-6


def violations(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Per sample: the lower end exceeds the upper end beyond rounding (a soundness bug)."""
    with np.errstate(invalid="ignore"):
        return lower > upper * (1 + VIOLATION_RTOL) + TOLERANCE


class RadiusRunner(EntryRunner):
    kind = "radius"

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        lo, up, fl = col.radius_columns(k)
        return {
            **verdict_columns(k, n),
            lo: np.full(n, np.nan, np.float64),
            up: np.full(n, np.nan, np.float64),
            fl: np.zeros(n, np.int8),
        }

    def prepare(self, engine: Engine, k: int, x: torch.Tensor) -> None:
        """max_eps fits the image cube, and the verifier can read the model (before any work is done)."""
        search = engine.attackers[k]
        try:
            search.validate_for(tuple(x.shape[1:]))
        except UsageError as e:
            raise UsageError(f"{engine.entries[k].key}: {e.what}", e.hint) from None
        if search.verifier is not None:
            require_readable(engine.model, x, engine.entries[k].key)

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        cols, sl, alive = batch.cols, batch.sl, batch.alive
        search = engine.attackers[k]
        n = len(batch)
        correct = alive.cpu().numpy().copy()  # alive at the start of a standalone group: clean-correct
        lower, upper = np.zeros(n), np.zeros(n)
        flags = np.zeros(n, np.int8)
        s_np = np.zeros(n, np.int8)  # wrong when clean: broken at every radius
        m_np = np.full(n, np.nan, np.float32)
        p_np = np.full(n, -1, np.int16)
        t_np = np.zeros(n, np.int8)
        act = np.flatnonzero(correct)
        if len(act):
            idx = torch.as_tensor(act, device=batch.x.device)
            x, y, ids = batch.x[idx].float(), batch.y[idx], batch.ids[idx]
            up, unconfirmed, scored = self.upper(engine, k, x, y, ids)
            _, m, p, _, tie = scored
            upper[act] = up
            flags[act[unconfirmed]] |= col.RADIUS_UNCONFIRMED
            m_np[act], p_np[act], t_np[act] = m.cpu().numpy(), p.cpu().numpy(), tie.cpu().numpy()
            lo, timed_out = self.lower(engine, k, x, y)
            lower[act] = lo
            flags[act[timed_out]] |= col.RADIUS_TIMEOUT
            s_np[act] = (upper[act] > search.max_eps).astype(np.int8)  # robust at max_eps by the attack
            alive[idx] = torch.as_tensor(upper[act] > search.max_eps, device=alive.device)
        bad = violations(lower, upper)
        flags[bad] |= col.RADIUS_VIOLATION
        lo_c, up_c, fl_c = col.radius_columns(k)
        cols[lo_c][sl], cols[up_c][sl], cols[fl_c][sl] = lower, upper, flags
        cols[col.status(k)][sl], cols[col.margin(k)][sl] = s_np, m_np
        cols[col.pred(k)][sl], cols[col.tie(k)][sl] = p_np, t_np

    @staticmethod
    def upper(
        engine: Engine, k: int, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """(upper ends, unconfirmed mask, the fp32 verdict at the chosen points) of clean-correct samples.

        With several attacks, per sample the smallest confirmed distance over them; unconfirmed where
        none confirmed a point and some attack claimed one.
        """
        entry, search = engine.entries[k], engine.attackers[k]
        n = len(x)
        best = np.full(n, math.inf)
        claimed = np.zeros(n, bool)
        chosen: Any = None
        for i, attack in enumerate(search.attacks):
            seed = engine.entry_seed(k) if i == 0 else stream_seed(engine.entry_seed(k), f"radius-attack-{i}")
            xa, norms = attack.minimal(engine.attack_model(k), x, y, index=ids, seed=seed)
            enforce_contract(x, xa, cube(search.norm, x), who=entry.key)  # finite, in [0, 1], shape
            scored = engine.score(xa, y)
            broken = ~scored[0].bool().cpu().numpy()
            dist = lp_norm(xa.float() - x, search.norm).double().cpu().numpy()
            up = np.where(broken, dist, math.inf)
            claimed |= np.isfinite(norms.detach().double().cpu().numpy())
            if chosen is None:
                chosen = [t.clone() for t in scored]
            else:
                better = torch.as_tensor(up < best, device=scored[0].device)
                chosen = [torch.where(per_sample(better, a), b, a) for a, b in zip(chosen, scored)]
            best = np.minimum(best, up)
        return best, claimed & ~np.isfinite(best), tuple(chosen)

    @staticmethod
    def lower(engine: Engine, k: int, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(lower ends, verifier time-out mask) of clean-correct samples; zeros without a verifier."""
        search = engine.attackers[k]
        n = len(x)
        if search.verifier is None:
            return np.zeros(n), np.zeros(n, bool)
        v = search.verifier
        try:
            if callable(getattr(v, "minimal_radius", None)):  # the MILP: exact when it finishes
                res = v.minimal_radius(engine.model, x, y, t_max=search.max_eps)
                lo = res.lower.double().cpu().numpy()
                top = np.minimum(res.upper.double().cpu().numpy(), search.max_eps)
                return lo, lo < top * (1 - EXACT_RTOL)
            r = v.radius(engine.model, x, y, hi=search.max_eps, steps=search.steps)
            return r.double().cpu().numpy(), np.zeros(n, bool)
        except HarnessError:
            raise
        except Exception as e:
            raise ModelError(
                f"the verifier {search.spec.verifier} failed on the model: {type(e).__name__}: {e}",
                "verifiers read the model as a static graph of supported layers (docs/verification.md)",
            ) from e

    def entry_fields(self, engine: Engine, k: int) -> dict[str, Any]:
        return {"max_eps": engine.attackers[k].max_eps}


def cube(norm: str, x: torch.Tensor) -> ThreatModel:
    """A ball that holds all of [0, 1]^d around any x in it: the contract then checks finiteness and the box."""
    return ThreatModel(norm, 1.0 if norm == "linf" else math.sqrt(math.prod(x.shape[1:])) + 1.0)
