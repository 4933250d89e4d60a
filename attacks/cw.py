"""Carlini & Wagner attacks (S&P 2017): the L2 optimisation attack and CW-L-inf (PGD on the margin loss).

CW-L2 minimises ||x' - x||_2^2 + c * max(z_y(x') - max_{j!=y} z_j(x'), -kappa) over x' = (tanh(w)+1)/2
(the change of variables keeps x' in [0, 1] without clipping) with Adam, and binary-searches c per
sample. It is a minimum-norm attack, while the harness evaluates eps-balls: `perturb` returns the
smallest-L2 misclassified point found when its distance is <= eps; when the smallest one lies
outside the ball it returns that point scaled back onto the sphere of radius eps (a convex
combination of x and x', so still in [0, 1]; the engine decides whether it is adversarial); when
nothing was found it returns x. `minimal` gives the unbounded result (points and L2 distances,
FMN's interface `attacks.fmn.FMN.minimal`).

Modes (``mode``): ``fixed`` (the default) drops a sample from the remaining binary-search steps once a
point within eps is found (one host synchronisation per binary-search step); ``min-norm`` runs every
binary-search step on every sample, keeping the smallest-L2 misclassified point over all constants c.
An iterate where the model returns NaN/Inf logits has margin -inf, so it counts as a success (no
correct prediction); its NaN gradient is zeroed so that Adam's state stays finite.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost, steps
from harness.errors import UsageError
from harness.logits import finite_grad, margin, misclassified
from harness.params import Param, Reference
from harness.precision import frozen
from harness.registry import ATTACKS
from harness.threat import canonical_norm, lp_norm, per_sample

from .base import MODE, Attack
from .pgd import PGD

# Pixels exactly at 0 or 1 map to w = +-inf; shrinking by this factor keeps w finite (Carlini's code).
TANH_SHRINK = 1 - 1e-6
UPPER_INIT = 1e10


def _to_w(x: Tensor) -> Tensor:
    return torch.atanh((2 * x - 1) * TANH_SHRINK)


def _from_w(w: Tensor) -> Tensor:
    return (torch.tanh(w) + 1) / 2


@ATTACKS.register("cw-l2")
class CWL2(Attack):
    """Carlini-Wagner L2 (tanh variables, Adam, binary search over c); best misclassified point within eps."""

    strong: ClassVar[bool] = True
    PARAMS: ClassVar[dict[str, Param]] = {
        "c": Param("initial trade-off constant c (binary-searched per sample)", gt=0),
        "kappa": Param("confidence: success needs margin < -kappa", ge=0),
        "steps": Param("Adam iterations per binary-search step", ge=1),
        "lr": Param("Adam learning rate", gt=0),
        "binary_search_steps": Param("binary-search steps over c", ge=1),
        "mode": MODE,
    }
    # Carlini's reference code (carlini/nn_robust_attacks l2_attack.py): MAX_ITERATIONS = 10000,
    # BINARY_SEARCH_STEPS = 9 (with early abort). This harness's defaults are far below it.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 10000, "binary_search_steps": 9},
        "Carlini & Wagner 2017 reference code: 10000 iterations, 9 binary-search steps",
    )

    def __init__(
        self,
        norm: str = "l2",
        eps: float = 0.5,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        binary_search_steps: int = 5,
        mode: str = "fixed",
    ) -> None:
        if canonical_norm(norm) != "l2":
            raise UsageError(f"cw-l2 is an L2 attack, not {norm!r}", "use norm = 'l2', or cw-linf for L-inf")
        super().__init__(norm, eps)
        self.c = float(c)
        self.kappa = float(kappa)
        self.steps = int(steps)
        self.lr = float(lr)
        self.binary_search_steps = int(binary_search_steps)
        self.mode = str(mode)

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, stop: float | None) -> tuple[Tensor, Tensor]:
        """Smallest-L2 points with margin < -kappa found over all c; distance inf (and x) where none, 0 (and
        x) where x is already misclassified. A sample whose best distance is within ``stop`` skips the
        remaining binary-search steps (None: every sample runs all of them)."""
        n = len(x)
        x = x.detach()
        best_x = x.clone()
        with torch.no_grad():
            wrong = misclassified(model(x).float(), y)
        best_l2 = torch.where(wrong, 0.0, math.inf).to(x.device)
        const = torch.full((n,), self.c, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), UPPER_INIT, device=x.device)
        b1, b2, adam_eps = 0.9, 0.999, 1e-8
        act = (~wrong).nonzero().squeeze(1)
        for _ in range(self.binary_search_steps):
            if stop is not None:
                act = act[(best_l2[act] > stop).nonzero().squeeze(1)]  # one sync per binary-search step
            if len(act) == 0:
                break
            xs, ys, cs = x[act], y[act], const[act]
            bx, bl = best_x[act], best_l2[act]
            w = _to_w(xs)
            m1 = torch.zeros_like(w)
            m2 = torch.zeros_like(w)
            found = torch.zeros(len(act), dtype=torch.bool, device=x.device)
            for t in range(1, self.steps + 1):
                w.requires_grad_(True)
                with torch.enable_grad():
                    xa = _from_w(w)
                    l2sq = (xa - xs).pow(2).flatten(1).sum(1)
                    mg = margin(model(xa), ys)
                    loss = l2sq + cs * mg.clamp(min=-self.kappa)
                    (g,) = torch.autograd.grad(loss.sum(), w)
                w, g = w.detach(), finite_grad(g)
                # Record the iterate the gradient was taken at (it was just evaluated).
                l2 = l2sq.detach().sqrt()
                ok = mg.detach() < -self.kappa if self.kappa > 0 else mg.detach() < 0
                better = ok & (l2 < bl)
                bl = torch.where(better, l2, bl)
                bx = torch.where(per_sample(better, xs), xa.detach(), bx)
                found |= ok
                # Adam (Kingma & Ba 2015), written out so only input gradients are taken.
                m1 = b1 * m1 + (1 - b1) * g
                m2 = b2 * m2 + (1 - b2) * g * g
                step = self.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                w = w - step * m1 / (m2.sqrt() + adam_eps)
            best_x[act], best_l2[act] = bx, bl
            # Binary search on c: success -> try a smaller c, failure -> a larger one (x10 until bounded).
            up = torch.where(found, torch.minimum(upper[act], cs), upper[act])
            lo = torch.where(found, lower[act], torch.maximum(lower[act], cs))
            upper[act], lower[act] = up, lo
            const[act] = torch.where(up < UPPER_INIT / 10, (lo + up) / 2, cs * 10)
        return best_x, best_l2

    def minimal(
        self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """(x_adv, norms): the smallest-L2 misclassified point found per sample (margin < -kappa) over every
        binary-search step, and its distance as the engine measures it (`harness.threat.lp_norm`); 0 where
        x is misclassified, +inf where none. Deterministic: ``index`` and ``seed`` are not used."""
        with frozen(model):
            best_x, best_l2 = self._search(model, x, y, None)
        norms = torch.where(torch.isfinite(best_l2), lp_norm(best_x - x.detach(), "l2"), best_l2)
        return best_x, norms

    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """One clean forward (inputs already misclassified are not attacked), then ``steps`` Adam gradient
        steps for each of the ``binary_search_steps`` constants."""
        return (Cost(1) + steps(self.steps * self.binary_search_steps)) * n

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        best_x, best_l2 = self._search(model, x, y, self.eps if self.mode == "fixed" else None)
        inside = best_l2 <= self.eps
        beyond = torch.isfinite(best_l2) & ~inside
        scale = torch.where(beyond, self.eps / best_l2.clamp_min(1e-12) * (1 - 1e-6), torch.ones_like(best_l2))
        out = x + per_sample(scale, x) * (best_x - x)
        return torch.where(per_sample(inside | beyond, x), out, x).clamp(0, 1).detach()


@ATTACKS.register("cw-linf")
class CWLinf(PGD):
    """CW-L-inf: PGD on the Carlini-Wagner margin loss max_{j!=y} z_j - z_y (no softmax saturation)."""

    strong: ClassVar[bool] = True

    # PGD's reference (20 steps, 1 restart): this is PGD on the margin loss.

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        logit_scale: float = 1.0,
        eot_samples: int = 1,
    ) -> None:
        if canonical_norm(norm) != "linf":
            raise UsageError(f"cw-linf is an L-inf attack, not {norm!r}", "use norm = 'linf', or cw-l2 for L2")
        super().__init__(
            norm,
            eps,
            steps=steps,
            step_size=step_size,
            restarts=restarts,
            loss="margin",
            random_start=random_start,
            logit_scale=logit_scale,
            eot_samples=eot_samples,
        )
