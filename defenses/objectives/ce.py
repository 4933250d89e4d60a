"""Cross-entropy: the standard-training baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from harness.params import Param
from harness.registry import OBJECTIVES

from ..objective import Objective, StepState


@OBJECTIVES.register("ce")
@dataclass
class CrossEntropy(Objective):
    """Cross-entropy on clean images (standard training), optional label smoothing."""

    label_smoothing: float = 0.0
    PARAMS: ClassVar[dict[str, Param]] = {
        "label_smoothing": Param("mass moved from the label to the uniform distribution", ge=0, le=1)
    }

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing), {}
