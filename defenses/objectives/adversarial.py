"""Adversarial training: PGD-AT (Madry et al., ICLR 2018).

Madry: min_theta E max_{||delta||_inf <= eps} ce(f(x + delta), y), trained on adversarial points
only, crafted in eval mode from a uniform random start (MadryLab/cifar10_challenge config: eps 8/255,
step 2/255, 10 steps; the paper's CIFAR setting is 7 steps). ``eps=None`` uses the dataset's
default training eps (8/255 on CIFAR, 0.1 on digits) with step = eps/4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from harness.registry import OBJECTIVES

from ..crafting import craft
from ..objective import Objective, StepState, TrainContext


@dataclass
class AttackSettings:
    """Training-time attack settings shared by the AT objectives (resolved in `setup`)."""

    eps: float | None = None
    step_size: float | None = None
    steps: int = 10
    norm: str = "linf"
    init: str = "uniform"

    def resolve_attack(self, ctx: TrainContext) -> None:
        if self.eps is None:
            self.eps = ctx.default_eps.get(self.norm, 8 / 255)
        if self.step_size is None:
            self.step_size = self.eps / 4

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor, state: StepState, **kw
    ) -> tuple[Tensor, Tensor | None]:
        assert self.eps is not None and self.step_size is not None, "setup() resolves eps"
        return craft(
            model,
            x,
            y,
            index=state.index,
            seed=state.seed,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            init=self.init,
            **kw,
        )


@OBJECTIVES.register("pgd-at")
@dataclass
class PgdAT(AttackSettings, Objective):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on eval-mode PGD points only."""

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xa, _ = self.adversarial(model, x, y, state)
        return F.cross_entropy(model(xa), y), {}
