"""Objectives with auxiliary out-of-distribution (OOD) images: ODNL and open-sampling.

Sources followed (both [V]):
- ODNL (Wei et al., NeurIPS 2021) `hongxin001/ODNL` ``algorithms/odnl.py``, ``train.py``: in- and
  out-of-distribution images in one forward pass; loss = ce(f(x), y) + eta ce(f(x_ood), u) with u
  uniformly random labels drawn afresh every step. eta = 2.5 (CIFAR-10 symmetric noise);
  ``aux_batch`` = 128 (the code's ``--aux_batch_size``). The official auxiliary set is 300K Random
  Images, not available offline: ``aux="noise"`` or any registered dataset stands in for it.
- Open-sampling (Wei et al., ICML 2022) `hongxin001/open-sampling` ``alg/ood_noise.py``, README:
  OOD labels from the complementary distribution Gamma_c ∝ pi_max + pi_min - pi_c of the class
  priors pi (or alpha - pi_c when ``alpha`` is given); loss = ce(f(x), y) + lambda_o
  ce_w(f(x_ood), y~) with class weights w = K Gamma / sum(Gamma) (mean 1). As in the official code
  (PyTorch's weighted CE), ce_w is the weighted mean sum_i w_{y~_i} ce_i / sum_i w_{y~_i}.
  lambda_o = 1, OOD batch 512 (README). Class counts come from the (possibly imbalanced) training
  set.

Randomness: aux images as in `AuxData` (keyed by ``state.seed``); OOD labels are the first draw
from ``state.generator`` (``randint`` for ODNL, ``multinomial`` with replacement for open-sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import OBJECTIVES

from ..objective import Objective, StepState, TrainContext
from ._shared import AuxData


@OBJECTIVES.register("odnl")
@dataclass
class ODNL(AuxData, Objective):
    """Open-set noisy labels (Wei et al. 2021): CE plus eta * CE of auxiliary OOD images with random labels."""

    eta: float = 2.5
    PARAMS: ClassVar[dict[str, Param]] = {"eta": Param("weight of the CE on auxiliary images with random labels", ge=0)}

    def setup(self, ctx: TrainContext) -> None:
        self.setup_aux(ctx)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        x_ood = self.aux_images(state, x.device)
        g = state.generator
        u = torch.randint(state.num_classes, (len(x_ood),), generator=g, device=g.device).to(x.device)
        z = model(torch.cat([x, x_ood]))
        ce_in = F.cross_entropy(z[: len(x)], y)
        ce_ood = F.cross_entropy(z[len(x) :], u)
        return ce_in + self.eta * ce_ood, {"ce": ce_in.detach(), "ce_ood": ce_ood.detach()}


@OBJECTIVES.register("open-sampling")
@dataclass
class OpenSampling(AuxData, Objective):
    """Open-sampling (Wei et al. 2022): OOD images labelled from the complementary class distribution."""

    aux_batch: int = 512
    lambda_o: float = 1.0
    alpha: float | None = None
    PARAMS: ClassVar[dict[str, Param]] = {
        "lambda_o": Param("weight of the CE on auxiliary images", ge=0),
        "alpha": Param("complementary distribution alpha - pi_c (None: pi_max + pi_min - pi_c)", ge=0),
    }

    def setup(self, ctx: TrainContext) -> None:
        self.setup_aux(ctx)
        counts = ctx.class_counts.to(torch.float64)
        if counts.sum() <= 0:
            raise UsageError("open-sampling needs a non-empty training set")
        pi = counts / counts.sum()
        gamma = (self.alpha - pi) if self.alpha is not None else (pi.max() + pi.min() - pi)
        if (gamma < 0).any() or gamma.sum() <= 0:
            raise UsageError(
                f"open-sampling's complementary distribution has negative or zero mass (alpha={self.alpha})",
                "choose alpha >= the largest class prior, or leave alpha unset",
            )
        self.gamma = (gamma / gamma.sum()).to(torch.float32).to(ctx.device)
        self.class_weights = self.gamma * ctx.num_classes

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        x_ood = self.aux_images(state, x.device)
        g = state.generator
        y_ood = torch.multinomial(self.gamma.to(g.device), len(x_ood), replacement=True, generator=g).to(x.device)
        z = model(torch.cat([x, x_ood]))
        ce_in = F.cross_entropy(z[: len(x)], y)
        ce_ood = F.cross_entropy(z[len(x) :], y_ood, weight=self.class_weights.to(z.device, z.dtype))
        return ce_in + self.lambda_o * ce_ood, {"ce": ce_in.detach(), "ce_ood": ce_ood.detach()}
