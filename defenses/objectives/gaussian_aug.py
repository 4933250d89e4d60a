"""Gaussian data augmentation (Cohen et al. 2019, sec. 4): CE on x + sigma * N(0, I).

The baseline that randomized smoothing trains its base classifier with; MaxUp with gaussian
copies (the worst of m noisy copies) is compared against it. Noise is keyed by (seed, sample id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from harness.params import Param
from harness.registry import OBJECTIVES

from ..objective import Objective, StepState
from ._shared import augment


@OBJECTIVES.register("gaussian-aug")
@dataclass
class GaussianAug(Objective):
    """Gaussian augmentation (Cohen et al. 2019): cross-entropy on x + sigma * N(0, I), not clipped."""

    sigma: float = 0.25
    PARAMS: ClassVar[dict[str, Param]] = {"sigma": Param("noise standard deviation (pixel units)", gt=0)}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xn, _ = augment("gaussian", x, y, state.num_classes, state, 0, sigma=self.sigma, alpha=1.0)
        return F.cross_entropy(model(xn), y), {}
