"""Augmentation objectives: mixup, MaxUp and MMEL (hard and soft).

Sources followed:
- Mixup (Zhang et al., ICLR 2018) [V] `facebookresearch/mixup-cifar10` ``train.py``: one
  lambda ~ Beta(alpha, alpha) per batch (alpha = 1), a random permutation pairs the samples,
  loss = lambda ce(z, y) + (1 - lambda) ce(z, y[perm]). Draw order from ``state.generator``: one
  uniform u (lambda = inverse Beta CDF of u; for alpha = 1, lambda = u), then ``randperm(B)``.
- MaxUp (Gong et al., 2020/CVPR 2021): min E_x max_{j <= m} loss(f(x~_j), y~_j) over m random
  augmentations, the gradient flowing through the worst copy only. No official code exists [V,
  abstract]; m = 4 with CutMix for image classification is [R], Gaussian noise (sigma) is the
  certified-robustness variant [R]. Mixing augmentations use soft labels (soft-target CE).
- MMEL (Yi et al., ICLR 2021): reweights the augmented copies of each example by the closed form
  of the maximal expected loss, w_ij = softmax_j(loss_ij / lambda_p), weights treated as constants
  [abstract V; closed form from notes citing the paper's Eq. 6, 3P]. The paper's image experiments
  use random crop and horizontal flip [V, abstract], hence the ``crop-flip`` default.
  Not verifiable here (paper body unavailable), documented choices: both variants add the CE of the
  original image and weight the reweighted term by ``lambda_t`` (1):
  MMEL-H: ce(f(x), y) + lambda_t sum_j w_ij ce(f(x~_ij), y~_ij);
  MMEL-S: ce(f(x), y) + lambda_t sum_j w_ij KL(p(x) || p(x~_ij)), p(x) detached (soft target);
  the weights of MMEL-S come from the KL terms. lambda_p = 1 and m = 4 are this tool's defaults.

All copies of a step go through the model in one forward pass (one BatchNorm batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.params import Param
from harness.registry import OBJECTIVES

from ..objective import Objective, StepState
from ._shared import AUGMENTATIONS, augment, beta_sample, soft_cross_entropy


@OBJECTIVES.register("mixup")
@dataclass
class Mixup(Objective):
    """Mixup (Zhang et al. 2018): train on convex pairs of images and labels, lambda ~ Beta(alpha, alpha)."""

    alpha: float = 1.0
    PARAMS: ClassVar[dict[str, Param]] = {"alpha": Param("Beta(alpha, alpha) mixing weights (0: no mixing)", ge=0)}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        lam = beta_sample(self.alpha, state.generator)
        perm = torch.randperm(len(x), generator=state.generator, device=state.generator.device).to(x.device)
        z = model(lam * x + (1 - lam) * x[perm])
        loss = lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])
        return loss, {"lam": torch.tensor(lam)}


@dataclass
class _Augmented(Objective):
    """m augmented copies per example (shared by MaxUp and MMEL)."""

    m: int = 4
    augmentation: str = "cutmix"
    sigma: float = 0.25
    alpha: float = 1.0
    PARAMS: ClassVar[dict[str, Param]] = {
        "m": Param("augmented copies per example (one forward pass of m x batch images)", ge=1, le=64),
        "augmentation": Param("how each copy is made", choices=AUGMENTATIONS),
        "sigma": Param("augmentation='gaussian': noise standard deviation", ge=0),
        "alpha": Param("augmentation='mixup'/'cutmix': Beta(alpha, alpha) mixing weights", ge=0),
    }

    def augment(self, x: Tensor, y: Tensor, state: StepState, copy: int) -> tuple[Tensor, Tensor]:
        """Copy ``copy`` of the batch and its soft targets."""
        return augment(self.augmentation, x, y, state.num_classes, state, copy, sigma=self.sigma, alpha=self.alpha)

    def copies(self, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, Tensor]:
        """(m*B images ordered copy-major, (m, B, K) soft targets)."""
        xs, ts = zip(*(self.augment(x, y, state, j) for j in range(self.m)))
        return torch.cat(xs), torch.stack(ts)


@OBJECTIVES.register("maxup")
@dataclass
class MaxUp(_Augmented):
    """MaxUp (Gong et al. 2021): the loss of the worst of m augmented copies (cutmix, mixup or gaussian)."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xs, ts = self.copies(x, y, state)
        b = len(x)
        z = model(xs).view(self.m, b, -1)
        per = soft_cross_entropy(z.flatten(0, 1), ts.flatten(0, 1)).view(self.m, b)
        worst = per.max(0).values
        return worst.mean(), {"mean_copy_loss": per.detach().mean()}


@dataclass
class _MMEL(_Augmented):
    augmentation: str = "crop-flip"
    lambda_p: float = 1.0
    lambda_t: float = 1.0
    PARAMS: ClassVar[dict[str, Param]] = {
        "lambda_p": Param("temperature of the softmax that weights the copies", gt=0),
        "lambda_t": Param("weight of the reweighted augmented term", ge=0),
    }

    soft = False

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xs, ts = self.copies(x, y, state)
        b = len(x)
        z = model(torch.cat([x, xs]))
        z0, za = z[:b], z[b:].view(self.m, b, -1)
        if self.soft:
            p0 = z0.detach().softmax(1)
            per = (p0 * (p0.clamp_min(1e-12).log() - za.log_softmax(2))).sum(2)  # KL(p(x) || p(x~)), (m, B)
        else:
            per = soft_cross_entropy(za.flatten(0, 1), ts.flatten(0, 1)).view(self.m, b)
        w = (per.detach() / self.lambda_p).softmax(0)
        loss = F.cross_entropy(z0, y) + self.lambda_t * (w * per).sum(0).mean()
        return loss, {"max_weight": w.max(0).values.mean()}


@OBJECTIVES.register("mmel-h")
@dataclass
class MMELHard(_MMEL):
    """MMEL-H (Yi et al. 2021): CE on x plus augmented copies' CE reweighted by softmax(loss / lambda_p)."""


@OBJECTIVES.register("mmel-s")
@dataclass
class MMELSoft(_MMEL):
    """MMEL-S (Yi et al. 2021): CE on x plus KL(p(x) || p(copy)) reweighted by softmax(KL / lambda_p)."""

    soft = True
