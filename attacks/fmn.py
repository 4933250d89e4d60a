"""FMN: the fast minimum-norm attack (Pintor et al., NeurIPS 2021), L-inf, L2 and L1.

FMN searches for the smallest perturbation that misclassifies x. Each step takes a gradient step
(of L2-normalised size alpha) that lowers the margin z_y - max_{j != y} z_j, then projects the
perturbation onto the norm ball of an adaptive radius epsilon and clips to [0, 1]. The radius
shrinks by (1 - gamma) while the iterate is adversarial (never above the best norm found), grows
by (1 + gamma) after a first success when it is not, and before any success jumps to the current
norm plus the linearised distance to the boundary |margin| / ||grad||_dual. alpha and gamma follow
a cosine decay from ``alpha_init`` to ``alpha_final`` (default alpha_init / 100) and from
``gamma_init`` to ``gamma_final``. Defaults are the official code's (pralab/Fast-Minimum-Norm-
FMN-Attack, also foolbox/adv_lib): alpha_init 1, gamma_init 0.05, gamma_final 0.001; ``steps``
defaults to 100 (the official function's default is 10, the paper runs up to 1000).

Where this differs from the official code: the last iterate is scored too (one more forward
pass); restarts after the first start from a keyed random point of the threat's eps-ball
(`harness.rng`, by sample index); a candidate whose logits are not finite counts as misclassified
(margin -inf), and a non-finite gradient is treated as zero. Before the first success the radius is
the linearised estimate times (1 + gamma), not the estimate itself: on a locally linear model the
estimate lands exactly on the decision boundary, on the correct side after rounding, and the
official update would stay there.

Two uses:
- `FMN.minimal` (and `minimal_norm` for L1) returns the best adversarial point and its norm per
  sample (+inf where none was found): an upper bound on the minimal adversarial radius.
- As a fixed-eps attack (`perturb`, the attack contract), it returns the minimal-norm point when
  its norm is within eps, else the lower-margin of (a) the iterate inside the eps-ball with the
  lowest margin and (b) the best adversarial point projected onto the eps-ball; samples whose best
  point is within eps stop being attacked (a compaction every ``compact_every`` steps, the only
  host synchronisation in the loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost, steps
from harness.errors import UsageError
from harness.params import Param, Reference
from harness.precision import frozen
from harness.registry import ATTACKS
from harness.rng import stream_seed
from harness.threat import per_sample, random_start

from .base import COMPACT_EVERY, RESTARTS, STEPS, Attack

FMN_NORMS = ("linf", "l2", "l1")
_DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}  # the dual norm of each


def norm_of(delta: Tensor, norm: str) -> Tensor:
    """Per-sample L-inf, L2 or L1 norm."""
    f = delta.flatten(1)
    if norm == "linf":
        return f.abs().amax(1)
    if norm == "l2":
        return f.norm(p=2, dim=1)
    return f.abs().sum(1)


def project_l1(delta: Tensor, eps: Tensor) -> Tensor:
    """Euclidean projection of each row onto the L1 ball of radius eps (Duchi et al. 2008), sort-based."""
    f = delta.flatten(1)
    a = f.abs()
    inside = a.sum(1) <= eps
    mu = a.sort(dim=1, descending=True).values
    cums = mu.cumsum(1)
    ar = torch.arange(1, f.shape[1] + 1, device=f.device, dtype=f.dtype)
    cond = mu * ar > (cums - eps[:, None])
    rho = (cond * ar).amax(1).clamp(min=1).long() - 1  # last index where the condition holds
    theta = (cums.gather(1, rho[:, None]).squeeze(1) - eps) / (rho + 1).to(f.dtype)
    proj = (a - theta.clamp(min=0)[:, None]).clamp(min=0) * f.sign()
    return torch.where(inside[:, None], f, proj).view_as(delta)


def project_norm(delta: Tensor, norm: str, eps: Tensor) -> Tensor:
    """Projection onto the ``norm`` ball of per-sample radius ``eps``."""
    if norm == "linf":
        e = per_sample(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    if norm == "l2":
        n = norm_of(delta, "l2")
        factor = torch.clamp(eps / (n + 1e-12), max=1.0)
        return delta * per_sample(factor, delta)
    return project_l1(delta, eps)


def _margin_and_wrong(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """z_y - max_{j != y} z_j (-inf where the logits are not finite) and the misclassified mask."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    finite = torch.isfinite(logits).all(1)
    m = torch.where(finite, zy - other, torch.full_like(zy, float("-inf")))
    return m, ~finite | (logits.argmax(1) != y)


@dataclass
class FMNResult:
    """Per sample: the best adversarial point and its norm (+inf where none), and the best point inside ``eps``."""

    x_adv: Tensor
    norms: Tensor
    x_ball: Tensor | None = None
    margin_ball: Tensor | None = None


def minimal_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str = "l2",
    *,
    steps: int = 100,
    alpha_init: float = 1.0,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    start: Tensor | None = None,
    eps: float | None = None,
    compact_every: int = 10,
) -> FMNResult:
    """One FMN run from ``start`` (default x). With ``eps``, also tracks the best point inside the eps-ball
    and drops samples whose best adversarial norm is already within eps (every ``compact_every`` steps).
    """
    if norm not in FMN_NORMS:
        raise UsageError(f"FMN supports {', '.join(FMN_NORMS)}, not {norm!r}")
    x = x.detach()
    n = len(x)
    a_final = alpha_init / 100 if alpha_final is None else alpha_final
    dual = _DUAL[norm]
    best_x = x.clone()
    best_n = torch.full((n,), float("inf"), device=x.device)
    track = eps is not None
    ball_x = x.clone() if track else None
    ball_m = torch.full((n,), float("inf"), device=x.device) if track else None
    pos = torch.arange(n, device=x.device)
    xs, ys = x, y
    delta = (start.detach() - x) if start is not None else torch.zeros_like(x)
    epsilon = torch.full((n,), float("inf"), device=x.device)
    worst = norm_of(torch.maximum(x, 1 - x), norm)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)

    def score(d: Tensor, need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        xa = (xs + d).detach().requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            logits = model(xa)
            m, wrong = _margin_and_wrong(logits.float(), ys)
            g = None
            if need_grad:
                # descend the margin; a non-finite margin contributes no gradient
                loss = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
                (g,) = torch.autograd.grad(loss.sum(), xa)
                g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        return m.detach(), wrong, g

    def record(d: Tensor, m: Tensor, wrong: Tensor) -> Tensor:
        dn = norm_of(d, norm)
        better = wrong & (dn < best_n[pos])
        best_n[pos] = torch.where(better, dn, best_n[pos])
        best_x[pos] = torch.where(per_sample(better, d), xs + d, best_x[pos])
        if track:
            inside = (dn <= eps) & (m < ball_m[pos])
            ball_m[pos] = torch.where(inside, m, ball_m[pos])
            ball_x[pos] = torch.where(per_sample(inside, d), xs + d, ball_x[pos])
        return dn

    for i in range(steps):
        if track and i > 0 and i % compact_every == 0:
            keep = (best_n[pos] > eps).nonzero().squeeze(1)  # the only host sync in the loop
            if len(keep) == 0:
                break
            if len(keep) < len(pos):
                pos, xs, ys, delta = pos[keep], xs[keep], ys[keep], delta[keep]
                epsilon, worst, found = epsilon[keep], worst[keep], found[keep]
        cosine = (1 + math.cos(math.pi * i / steps)) / 2
        alpha = a_final + (alpha_init - a_final) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine
        m, wrong, g = score(delta, True)
        assert g is not None
        dn = record(delta, m, wrong)
        found = found | wrong
        gd = norm_of(g, dual).clamp(min=1e-12)
        to_boundary = torch.where(torch.isfinite(m), m.abs(), torch.zeros_like(m)) / gd
        epsilon = torch.where(
            wrong,
            torch.minimum(epsilon * (1 - gamma), best_n[pos]),
            torch.where(found, epsilon * (1 + gamma), (dn + to_boundary) * (1 + gamma)),
        )
        epsilon = torch.minimum(epsilon, worst)
        step = g / per_sample(g.flatten(1).norm(dim=1).clamp(min=1e-12), g)
        delta = project_norm(delta - alpha * step, norm, epsilon)  # minus: the margin goes down
        delta = (xs + delta).clamp(0, 1) - xs
    m, wrong, _ = score(delta, False)
    record(delta, m, wrong)
    return FMNResult(best_x, best_n, ball_x, ball_m)


@ATTACKS.register("fmn")
class FMN(Attack):
    """Fast minimum-norm attack (Pintor et al. 2021): adaptive-radius projected steps, L-inf or L2."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "steps": STEPS,
        "alpha_init": Param("initial step size (L2-normalised gradient step), cosine-decayed", gt=0),
        "alpha_final": Param("final step size (None: alpha_init / 100); at most alpha_init", gt=0, nullable=True),
        "gamma_init": Param("initial radius change factor: the radius shrinks by 1 - gamma", gt=0, lt=1),
        "gamma_final": Param("final radius change factor, cosine-decayed from gamma_init", gt=0, lt=1),
        "restarts": RESTARTS,
        "compact_every": COMPACT_EVERY,
    }
    # No reference budget: the official function defaults to 10 steps and the paper reports runs of
    # up to 1000; AutoAttack and RobustBench do not use FMN, so there is no agreed standard to flag.
    REFERENCE: ClassVar[Reference | None] = None

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        alpha_init: float = 1.0,
        alpha_final: float | None = None,
        gamma_init: float = 0.05,
        gamma_final: float = 0.001,
        restarts: int = 1,
        compact_every: int = 10,
    ) -> None:
        if str(norm).lower() == "l1":
            raise UsageError(
                "FMN's L1 mode is a minimum-norm search only: the harness's threat models are linf and l2",
                "call attacks.fmn.minimal_norm(model, x, y, norm='l1') for the L1 minimal norm",
            )
        super().__init__(norm, eps)
        if int(steps) < 1 or int(restarts) < 1 or int(compact_every) < 1:
            raise UsageError("FMN needs steps >= 1, restarts >= 1 and compact_every >= 1")
        for name, v in (("alpha_init", alpha_init), ("gamma_init", gamma_init), ("gamma_final", gamma_final)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UsageError(f"FMN's {name} must be a positive number, not {v!r}")
        if alpha_final is not None and not (math.isfinite(alpha_final) and 0 < alpha_final <= alpha_init):
            raise UsageError("FMN's alpha_final must be in (0, alpha_init]")
        if not gamma_init < 1 or not gamma_final < 1:
            raise UsageError("FMN's gamma_init and gamma_final must be below 1 (the radius shrinks by 1 - gamma)")
        self.steps = int(steps)
        self.alpha_init = float(alpha_init)
        self.alpha_final = None if alpha_final is None else float(alpha_final)
        self.gamma_init = float(gamma_init)
        self.gamma_final = float(gamma_final)
        self.restarts = int(restarts)
        self.compact_every = int(compact_every)

    def _kw(self) -> dict:
        return {
            "steps": self.steps,
            "alpha_init": self.alpha_init,
            "alpha_final": self.alpha_final,
            "gamma_init": self.gamma_init,
            "gamma_final": self.gamma_final,
            "compact_every": self.compact_every,
        }

    def _start(self, x: Tensor, index: Tensor, seed: int, restart: int) -> Tensor | None:
        if restart == 0:
            return None
        return x + random_start(x, self.norm, self.eps, stream_seed(seed, "fmn-start", restart), index)

    def minimal(
        self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """(x_adv, norms): the smallest-norm misclassified point found per sample, +inf where none.

        The norm is measured as the engine does (`harness.threat.lp_norm`); misclassified inputs get 0.
        """
        if index is None:
            index = torch.arange(len(x), device=x.device)
        with frozen(model):
            best_x, best_n = x.detach().clone(), torch.full((len(x),), float("inf"), device=x.device)
            for r in range(self.restarts):
                res = minimal_norm(model, x, y, self.norm, start=self._start(x, index, seed, r), **self._kw())
                better = res.norms < best_n
                best_n = torch.where(better, res.norms, best_n)
                best_x = torch.where(per_sample(better, x), res.x_adv, best_x)
        return best_x, best_n

    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """Per restart: ``steps`` gradient steps, a forward at the last point and one at its projection."""
        return (steps(self.steps) + Cost(2)) * (self.restarts * n)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        assert index is not None
        x = x.detach()
        out = x.clone()
        best_m = torch.full((len(x),), float("inf"), device=x.device)
        for r in range(self.restarts):
            res = minimal_norm(model, x, y, self.norm, start=self._start(x, index, seed, r), eps=self.eps, **self._kw())
            assert res.x_ball is not None and res.margin_ball is not None
            # the best adversarial point moved back into the eps-ball (itself when already inside)
            d = project_norm(res.x_adv - x, self.norm, torch.full((len(x),), self.eps, device=x.device))
            proj = (x + d).clamp(0, 1)
            with torch.no_grad():
                m_proj, _ = _margin_and_wrong(model(proj).float(), y)
            use_proj = m_proj < res.margin_ball
            cand = torch.where(per_sample(use_proj, x), proj, res.x_ball)
            cand_m = torch.minimum(m_proj, res.margin_ball)
            better = cand_m < best_m
            best_m = torch.where(better, cand_m, best_m)
            out = torch.where(per_sample(better, x), cand, out)
            if r + 1 < self.restarts and not bool((best_m >= 0).any()):  # one sync per restart
                break
        return out
