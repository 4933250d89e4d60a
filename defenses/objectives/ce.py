"""Cross-entropy: the standard-training baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from harness.registry import OBJECTIVES

from ..objective import Objective, StepState


@OBJECTIVES.register("ce")
@dataclass
class CrossEntropy(Objective):
    """Cross-entropy on clean images (standard training), optional label smoothing."""

    label_smoothing: float = 0.0

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing), {}
