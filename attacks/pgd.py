"""Projected gradient descent (Madry et al. 2018) and FGSM (Goodfellow et al. 2015), L-inf and L2.

Hot-path rules followed here: input gradients only (`torch.autograd.grad` on x, parameters frozen);
no host-device synchronisation inside the step loop except a compaction every ``compact_every``
steps, which drops samples already misclassified so they stop costing forward/backward passes; the
per-sample best point (lowest margin z_y - max_{j!=y} z_j) is kept across steps and restarts.
A candidate on which the model returns NaN/Inf logits has margin -inf (`harness.logits.margin`), so
it is kept as the best point (it is no correct prediction); its NaN gradient moves nothing (sign(NaN)
is 0; zeroed before the L2 step), so the next iterate stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost, steps
from harness.logits import finite_grad
from harness.params import Param, Reference
from harness.registry import ATTACKS
from harness.rng import stream_seed
from harness.threat import ascent_direction, linf_box, per_sample, project_ball_box, random_start

from .base import COMPACT_EVERY, EOT_SAMPLES, RESTARTS, STEPS, Attack
from .losses import LOSSES, LossFn, get_loss, margin, scaled

INITS = ("uniform", "normal", "zero")


@dataclass
class SearchResult:
    """What a PGD search found: points, their margins and (for GAIRAT) steps spent still correct."""

    x_adv: Tensor
    margin: Tensor
    steps_correct: Tensor | None = None


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD with random start, restarts, CE/margin/DLR loss and per-sample best over restarts."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "steps": STEPS,
        "step_size": Param("step length per iteration (None: 2.5 * eps / steps, Madry et al.)", gt=0),
        "restarts": RESTARTS,
        "loss": Param("loss the steps ascend (or a function of (logits, y) from Python)", choices=tuple(LOSSES)),
        "random_start": Param("start from a keyed random point in the ball (else from x)"),
        "init": Param("random start: uniform in the ball, 0.001 * N(0, 1), or none", choices=INITS),
        "keep": Param("per sample: the best (lowest-margin) point over all steps, or the last iterate",
                      choices=("best", "last")),
        "early_stop": Param("stop attacking samples already misclassified (keep='best' only)"),
        "compact_every": COMPACT_EVERY,
        "logit_scale": Param("multiply the logits before the loss (x1000 defeats saturated softmax)", gt=0),
        "eot_samples": EOT_SAMPLES,
    }  # fmt: skip
    eot_param: ClassVar[str | None] = "eot_samples"
    # PGD-20 with one restart: the evaluation budget of Madry et al. 2018's CIFAR-10 table and of the
    # TRADES/MART papers. `reference_shortfalls` also flags a step size too small to cross the ball.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 20, "restarts": 1}, "PGD-20, 1 restart (Madry et al. 2018 CIFAR-10 evaluation; TRADES, MART)"
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 20,
        step_size: float | None = None,
        restarts: int = 1,
        loss: str | LossFn = "ce",
        random_start: bool = True,
        init: str = "uniform",
        keep: str = "best",
        early_stop: bool = True,
        compact_every: int = 5,
        logit_scale: float = 1.0,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(norm, eps)
        self.steps = int(steps)
        # Madry et al. use 2.5 * eps / steps so that the iterate can cross the ball and back.
        self.step_size = float(step_size) if step_size is not None else 2.5 * eps / max(1, steps)
        self.restarts = int(restarts)
        self.loss = loss
        self.random_start = bool(random_start)
        self.init = init
        self.keep = keep
        self.early_stop = bool(early_stop) and keep == "best"
        self.compact_every = int(compact_every)
        self.logit_scale = float(logit_scale)
        # EOT (Athalye et al. 2018): average input gradients and logits over draws of a randomised model.
        self.eot_samples = int(eot_samples)

    def reference_shortfalls(self) -> list[dict[str, Any]]:
        out = super().reference_shortfalls()
        if type(self).REFERENCE is not None and self.steps * self.step_size < self.eps:
            # Every step moves at most step_size (per pixel for L-inf): the iterate cannot reach the
            # ball's boundary from its centre.
            out.append(
                {
                    "param": "step_size",
                    "value": self.step_size,
                    "reference": self.eps / self.steps,
                    "source": "steps * step_size >= eps, so the iterate can reach the ball's boundary",
                }
            )
        return out

    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """Per restart: ``steps`` gradient steps plus (keep='best') one forward at the last iterate, each
        averaged over ``eot_samples`` draws."""
        run = steps(self.steps) + Cost(0 if self.keep == "last" else 1)
        return run * (self.eot_samples * self.restarts * n)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        assert index is not None
        return self.search(model, x, y, index=index, seed=seed).x_adv

    def search(
        self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor, seed: int = 0, count_correct: bool = False
    ) -> SearchResult:
        """Run all restarts; returns the per-sample best (or last) points."""
        n = len(x)
        loss_fn = scaled(get_loss(self.loss), self.logit_scale)
        best_x = x.detach().clone()
        best_m = torch.full((n,), float("inf"), device=x.device)
        counts = torch.zeros(n, dtype=torch.int64, device=x.device) if count_correct else None
        for r in range(self.restarts):
            if r > 0 and self.early_stop:
                todo = (best_m >= 0).nonzero().squeeze(1)  # one sync per restart
                if len(todo) == 0:
                    break
            else:
                todo = torch.arange(n, device=x.device)
            self._restart(model, x, y, index, todo, stream_seed(seed, "restart", r), loss_fn, best_x, best_m, counts)
        return SearchResult(best_x, best_m, counts)

    def _restart(self, model, x, y, index, pos, seed, loss_fn, best_x, best_m, counts) -> None:
        xs, ys = x[pos].detach(), y[pos]
        if self.random_start:
            xa = xs + random_start(xs, self.norm, self.eps, seed, index[pos], self.init)
        else:
            xa = xs.clone()
        # L-inf: a step is sign, add and one clamp to the ball ∩ box (3 element-wise kernels instead of
        # 8): fewer thread barriers per step on a busy CPU.
        box = linf_box(xs, self.eps) if self.norm == "linf" else None
        bx, bm = xs.clone(), torch.full((len(pos),), float("inf"), device=x.device)
        last = self.keep == "last"
        for t in range(self.steps + (0 if last else 1)):
            xa = xa.detach().requires_grad_(t < self.steps)
            logits, g = self._forward(model, xa, ys, loss_fn, t < self.steps)
            m = margin(logits.detach().float(), ys)
            if counts is not None and t < self.steps:
                counts.index_add_(0, pos, (m > 0).long())
            if not last:
                better = m < bm
                bm = torch.where(better, m, bm)
                bx = torch.where(per_sample(better, bx), xa.detach(), bx)
            if t == self.steps:
                break
            # NaN logits give NaN gradients; the iterate must stay finite. sign(NaN) = 0 already (no extra
            # kernel on the L-inf hot path); the L2 step normalises, so it zeroes them first.
            direction = g.sign_() if box is not None else ascent_direction(finite_grad(g), self.norm)  # g not reused
            moved = xa.detach().add(direction, alpha=self.step_size)
            xa = project_ball_box(xs, moved, self.norm, self.eps, box)
            if self.early_stop and (t + 1) % self.compact_every == 0:
                self._write_back(pos, bx, bm, best_x, best_m)
                keep = (bm >= 0).nonzero().squeeze(1)  # the only sync inside the loop
                if len(keep) < len(pos):
                    if len(keep) == 0:
                        return
                    pos, xs, ys, xa, bx, bm = pos[keep], xs[keep], ys[keep], xa[keep], bx[keep], bm[keep]
                    box = None if box is None else (box[0][keep], box[1][keep])
        if last:
            best_x[pos] = xa.detach()
            return
        self._write_back(pos, bx, bm, best_x, best_m)

    def _forward(self, model, xa, ys, loss_fn, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        """Logits and loss gradient at xa, each the mean over ``eot_samples`` forward passes."""
        logits_sum, g_sum = None, None
        for _ in range(self.eot_samples):
            with torch.enable_grad():
                logits = model(xa)
                if need_grad:
                    (g,) = torch.autograd.grad(loss_fn(logits, ys).sum(), xa)
                    g_sum = g if g_sum is None else g_sum + g
            logits = logits.detach()
            logits_sum = logits if logits_sum is None else logits_sum + logits
        assert logits_sum is not None
        k = self.eot_samples
        return logits_sum / k, (g_sum / k if g_sum is not None else None)

    @staticmethod
    def _write_back(pos: Tensor, bx: Tensor, bm: Tensor, best_x: Tensor, best_m: Tensor) -> None:
        better = bm < best_m[pos]
        best_m[pos] = torch.where(better, bm, best_m[pos])
        best_x[pos] = torch.where(per_sample(better, bx), bx, best_x[pos])


@ATTACKS.register("fgsm")
class FGSM(PGD):
    """Fast gradient sign method: one step of size eps (sign for L-inf, normalised gradient for L2)."""

    REFERENCE: ClassVar[Reference | None] = None  # one step by definition

    def __init__(self, norm: str = "linf", eps: float = 8 / 255, loss: str = "ce") -> None:
        super().__init__(norm, eps, steps=1, step_size=eps, restarts=1, loss=loss, random_start=False)

    def config(self) -> dict:
        return {"attack": "fgsm", "norm": self.norm, "eps": self.eps, "loss": self.loss}
