"""FAB: Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), untargeted and targeted (FAB-T), L-inf and L2.

FAB looks for the adversarial point closest to x0. Each step linearises the decision boundary
between the true class and the closest (untargeted) or the chosen (targeted) class at the current
iterate x1, projects both x1 and x0 onto that hyperplane inside [0, 1]^d (minimal-norm projection),
moves to a convex combination of the two overshot projections (weight alpha on the x0 one, at most
alpha_max), and after landing on an adversarial point pulls back towards x0 by the factor beta.
Budgets and constants are AutoAttack's: 100 iterations, alpha_max 0.1, eta 1.05, beta 0.9; ``fab``
uses 5 restarts (the 'plus' version; restarts after the first start at a keyed random point at
eps/2), ``fab-t`` one restart for each of the 9 classes with the highest clean logits after the
top one.

Where this differs from the reference: gradients come from `torch.autograd.grad` on the input only
(FAB-T needs one backward pass of z_t - z_y per step; the reference's `.backward()` also fills the
weight gradients), the hyperplane projection is a sort-and-search over per-coordinate breakpoints
written here, and samples whose best point is already within eps stop being attacked (checked at
a compaction every ``compact_every`` steps, the only host synchronisation in the loop). The result
is the closest misclassified point found if it lies within eps, else the clean input. A point
where the model returns NaN/Inf logits counts as misclassified (`harness.logits.misclassified`);
the linearisation there (NaN) is zeroed, which moves the iterate back towards x0.

Modes (``mode``): ``fixed`` (the default, AutoAttack's use) stops refining a sample once a point within
eps is found; ``min-norm`` runs every target and restart on every sample to the full budget, keeping
the closest misclassified point (FAB is natively a minimum-norm attack: no eps cap in the search).
`minimal` returns that point and its distance per sample, FMN's interface (`attacks.fmn.FMN.minimal`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost
from harness.logits import misclassified
from harness.params import Param, Reference
from harness.precision import frozen
from harness.registry import ATTACKS
from harness.rng import keyed_normal, keyed_uniform, stream_seed
from harness.threat import lp_norm, per_sample

from .base import COMPACT_EVERY, MODE, RESTARTS, STEPS, Attack


def _finite(v: Tensor) -> Tensor:
    """NaN and +-Inf (from non-finite logits) to 0: the hyperplane projection stays finite."""
    return torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)


def _norm(v: Tensor, norm: str) -> Tensor:
    """Per-row norm of a 2-D tensor."""
    return v.abs().amax(1) if norm == "linf" else v.norm(dim=1)


def project_hyperplane_box(t: Tensor, w: Tensor, r: Tensor, norm: str) -> Tensor:
    """Minimal-``norm`` d with w.d = r and t + d in [0, 1] (rows independent); the box corner if infeasible.

    With s = sign(r), moving coordinate i by m_i >= 0 in direction sign(s w_i) changes s w.d by
    |w_i| m_i, with room u_i up to the box face. The L-inf optimum is m_i = min(lambda, u_i)
    (the same lambda everywhere), the L2 optimum m_i = |w_i| min(mu, u_i / |w_i|) (KKT: d is the
    clipped multiple mu w). Both solve sum_i a_i min(lambda, b_i) = |r| for the smallest lambda, a
    concave piecewise-linear function evaluated at the sorted breakpoints b_i and inverted exactly
    on the bracketing segment.
    """
    s = torch.where(r >= 0, 1.0, -1.0).to(t.dtype)
    wp = w * s[:, None]
    rp = r.abs()
    room = torch.where(wp > 0, 1 - t, t).clamp_min(0)
    nz = wp != 0
    if norm == "linf":
        a = wp.abs()
        b = room
    else:
        a = wp.square()
        b = torch.where(nz, room / wp.abs().clamp_min(1e-30), torch.zeros_like(room))
    bs, order = b.sort(dim=1)
    as_ = a.gather(1, order)
    cum_a = as_.cumsum(1)
    cum_ab = (as_ * bs).cumsum(1)
    total = cum_a[:, -1:]
    values = cum_ab + bs * (total - cum_a)  # f(b_(k)), nondecreasing in k
    k = torch.searchsorted(values.contiguous(), rp[:, None].contiguous()).squeeze(1)
    dim = t.shape[1]
    km1 = (k - 1).clamp(0, dim - 1)[:, None]
    c_prev = torch.where(k > 0, cum_ab.gather(1, km1).squeeze(1), torch.zeros_like(rp))
    a_rem = torch.where(k > 0, (total - cum_a.gather(1, km1)).squeeze(1), total.squeeze(1))
    lam = (rp - c_prev) / a_rem.clamp_min(1e-30)
    lam = torch.where(k >= dim, bs[:, -1], lam).clamp_min(0)
    m = torch.minimum(lam[:, None], b)
    d = torch.sign(wp) * m if norm == "linf" else wp * m
    return torch.where(nz, d, torch.zeros_like(d))


class _FABBase(Attack):
    targeted = False
    strong: ClassVar[bool] = True
    PARAMS: ClassVar[dict[str, Param]] = {
        "steps": STEPS,
        "restarts": RESTARTS,
        "alpha_max": Param("largest weight of the step towards the original point", ge=0, le=1),
        "eta": Param("overshoot of the projection onto the linearised boundary", ge=1),
        "beta": Param("pull-back factor towards x0 after landing on an adversarial point", gt=0, le=1),
        "early_stop": Param("stop attacking samples whose best point already lies within eps (mode 'fixed' only)"),
        "compact_every": COMPACT_EVERY,
        "mode": MODE,
        "n_target_classes": Param("attack the n classes with the highest clean logits after the top one", ge=1),
    }

    def __init__(
        self,
        norm: str,
        eps: float,
        steps: int,
        restarts: int,
        alpha_max: float,
        eta: float,
        beta: float,
        early_stop: bool,
        compact_every: int,
        mode: str = "fixed",
    ) -> None:
        super().__init__(norm, eps)
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)
        self.mode = str(mode)
        # a min-norm search never stops at eps (recorded as such in the config)
        self.early_stop = bool(early_stop) and self.mode == "fixed"
        self.compact_every = int(compact_every)

    # -- linearisation ---------------------------------------------------------------------------
    def _linearize(self, model: nn.Module, x1: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """f (n,) and its input gradient w (n, D) of the boundary function to cross at x1."""
        xg = x1.detach().requires_grad_(True)
        ar = torch.arange(len(y), device=y.device)
        with torch.enable_grad():
            logits = model(xg)
            if target is not None:
                diff = logits[ar, target] - logits[ar, y]
                (g,) = torch.autograd.grad(diff.sum(), xg)
                return _finite(diff.detach().float()), _finite(g.flatten(1).float())
            grads = [
                torch.autograd.grad(logits[:, k].sum(), xg, retain_graph=k + 1 < logits.shape[1])[0].flatten(1)
                for k in range(logits.shape[1])
            ]
        z = logits.detach().float()
        jac = torch.stack(grads, 1).float()  # (n, K, D)
        df = z - z[ar, y][:, None]
        dg = jac - jac[ar, y][:, None]
        dual = dg.abs().sum(-1) if self.norm == "linf" else dg.norm(dim=-1)
        dist = df.abs() / (1e-12 + dual)
        dist[ar, y] = float("inf")
        j = dist.argmin(1)
        return _finite(df[ar, j]), _finite(dg[ar, j])

    # -- one run from one start --------------------------------------------------------------------
    def _run(
        self, model: nn.Module, x0: Tensor, y: Tensor, x_start: Tensor, target: Tensor | None, stop: float | None
    ) -> tuple[Tensor, Tensor]:
        """Best (closest) misclassified point found and its distance (inf where none); samples whose best
        distance is within ``stop`` are dropped at the next compaction (None: none are)."""
        n = len(x0)
        shape = x0.shape
        best = x0.clone()
        res = torch.full((n,), float("inf"), device=x0.device)
        pos = torch.arange(n, device=x0.device)
        xs, ys, ts = x0.flatten(1), y, target
        x1 = x_start.flatten(1).clone()
        for it in range(self.steps):
            if stop is not None and it > 0 and it % self.compact_every == 0:
                keep = (res[pos] > stop).nonzero().squeeze(1)  # the only sync in the loop
                if len(keep) == 0:
                    break
                if len(keep) < len(pos):
                    pos, xs, ys, x1 = pos[keep], xs[keep], ys[keep], x1[keep]
                    ts = ts[keep] if ts is not None else None
            f, w = self._linearize(model, x1.view(-1, *shape[1:]), ys, ts)
            # Hyperplane {z : f + w.(z - x1) = 0}; from a point t the required change is w.d = -f - w.(t - x1).
            both = project_hyperplane_box(
                torch.cat([x1, xs]),
                torch.cat([w, w]),
                torch.cat([-f, -f - (w * (xs - x1)).sum(1)]),
                self.norm,
            )
            d1, d2 = both[: len(pos)], both[len(pos) :]
            a1 = _norm(d1, self.norm).clamp_min(1e-8)
            a2 = _norm(d2, self.norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0, self.alpha_max)[:, None]
            x1 = ((x1 + self.eta * d1) * (1 - alpha) + (xs + self.eta * d2) * alpha).clamp(0, 1)
            with torch.no_grad():
                adv = misclassified(model(x1.view(-1, *shape[1:])), ys)
            dist = _norm(x1 - xs, self.norm)
            better = adv & (dist < res[pos])
            res[pos] = torch.where(better, dist, res[pos])
            best[pos] = torch.where(better[:, None], x1, best[pos].flatten(1)).view(-1, *shape[1:])
            x1 = torch.where(adv[:, None], xs + self.beta * (x1 - xs), x1)
        return best, res

    def _start(self, x: Tensor, index: Tensor, seed: int, restart: int) -> Tensor:
        """Restart 0 starts at x; later ones at a keyed random point at distance eps/2 (as the reference)."""
        if restart == 0:
            return x
        key = stream_seed(seed, "fab-start", restart)
        shape = tuple(x.shape[1:])
        if self.norm == "linf":
            t = (2 * keyed_uniform(key, index, shape) - 1).to(x.device, x.dtype)
            t = t / per_sample(t.flatten(1).abs().amax(1).clamp_min(1e-12), t)
        else:
            t = keyed_normal(key, index, shape).to(x.device, x.dtype)
            t = t / per_sample(t.flatten(1).norm(dim=1).clamp_min(1e-12), t)
        return (x + 0.5 * self.eps * t).clamp(0, 1)

    def _targets(self, logits: Tensor) -> list[Tensor | None]:
        return [None]

    def n_targets(self, num_classes: int) -> int:
        """Target classes searched per sample (1: untargeted)."""
        return 1

    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """One clean forward; per target and restart, ``steps`` linearisations (a forward and one backward
        per class untargeted, one backward targeted) and one forward to test the new point."""
        run = Cost(2, 1 if self.targeted else num_classes) * self.steps
        return (Cost(1) + run * (self.restarts * self.n_targets(num_classes))) * n

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, seed: int, stop: float | None):
        """Closest misclassified point over all targets and restarts, and its distance (0 and x where x is
        already misclassified, inf and x where nothing was found). Samples whose best distance is within
        ``stop`` are not attacked further (None: every sample runs every target and restart)."""
        x = x.detach()
        best_x = x.clone()
        with torch.no_grad():
            logits = model(x).float()
        wrong = misclassified(logits, y)
        best_d = torch.where(wrong, 0.0, float("inf")).to(x.device)
        todo = (~wrong).nonzero().squeeze(1)
        in_run = stop if self.early_stop else None
        for target in self._targets(logits):
            for r in range(self.restarts):
                if len(todo) == 0:
                    return best_x, best_d
                xt, yt, it = x[todo], y[todo], index[todo]
                tt = target[todo] if target is not None else None
                bx, bd = self._run(model, xt, yt, self._start(xt, it, seed, r), tt, in_run)
                better = bd < best_d[todo]
                best_x[todo] = torch.where(per_sample(better, bx), bx, best_x[todo])
                best_d[todo] = torch.where(better, bd, best_d[todo])
                if stop is not None:
                    todo = todo[(best_d[todo] > stop).nonzero().squeeze(1)]  # one sync per run
        return best_x, best_d

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        assert index is not None
        stop = self.eps if self.mode == "fixed" else None
        best_x, best_d = self._search(model, x, y, index, seed, stop)
        return torch.where(per_sample(best_d <= self.eps, x), best_x, x.detach())

    def minimal(
        self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """(x_adv, norms): the closest misclassified point found per sample, ignoring eps, and its distance
        as the engine measures it (`harness.threat.lp_norm`); 0 where x is misclassified, +inf where none."""
        if index is None:
            index = torch.arange(len(x), device=x.device)
        with frozen(model):
            best_x, best_d = self._search(model, x, y, index.to(x.device), seed, None)
        norms = torch.where(torch.isfinite(best_d), lp_norm(best_x - x.detach(), self.norm), best_d)
        return best_x, norms


@ATTACKS.register("fab")
class FAB(_FABBase):
    """FAB, untargeted: minimal-distance boundary attack (Croce & Hein 2020), 100 steps, 5 restarts."""

    # AutoAttack plus (pyautoattack autoattack.py): FAB with n_iter = 100, n_restarts = 5.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 100, "restarts": 5}, "AutoAttack plus: FAB 100 iterations, 5 restarts (Croce & Hein 2020)"
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 5,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        early_stop: bool = True,
        compact_every: int = 10,
        mode: str = "fixed",
    ) -> None:
        super().__init__(norm, eps, steps, restarts, alpha_max, eta, beta, early_stop, compact_every, mode)


@ATTACKS.register("fab-t")
class FABTargeted(_FABBase):
    """FAB-T as in AutoAttack: targeted FAB against each of the top-9 other classes, 100 steps each."""

    targeted = True
    # AutoAttack standard: FAB-T with n_iter = 100, n_restarts = 1, n_target_classes = 9.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 100, "restarts": 1, "n_target_classes": 9},
        "AutoAttack standard: FAB-T 100 iterations, 1 restart, 9 target classes (Croce & Hein 2020)",
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        early_stop: bool = True,
        compact_every: int = 10,
        mode: str = "fixed",
    ) -> None:
        super().__init__(norm, eps, steps, restarts, alpha_max, eta, beta, early_stop, compact_every, mode)
        self.n_target_classes = int(n_target_classes)

    def n_targets(self, num_classes: int) -> int:
        return min(self.n_target_classes, num_classes - 1)

    def _targets(self, logits: Tensor) -> list[Tensor | None]:
        # The reference's target k (k = 2..n+1) is the k-th largest clean logit.
        order = logits.sort(dim=1).indices
        n = min(self.n_target_classes, logits.shape[1] - 1)
        return [order[:, -k] for k in range(2, n + 2)]
