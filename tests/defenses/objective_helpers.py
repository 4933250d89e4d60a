"""Tiny fixed models and contexts for the objectives' hand-computed formula tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from defenses.objective import StepState, TrainContext
from harness.data.base import ImageDataset
from harness.rng import torch_generator


class ParamLogits(nn.Module):
    """Logits are parameters: the i-th one-hot image (1 x 1 x n) maps to row i of ``z``; mixtures mix rows."""

    def __init__(self, z: list[list[float]]) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.tensor(z, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).to(torch.float64) @ self.z


def onehot_images(n: int) -> Tensor:
    """n images of shape (1, 1, n): image i is e_i, so ParamLogits returns z[i] for it."""
    return torch.eye(n, dtype=torch.float64).view(n, 1, 1, n)


def make_state(b: int, k: int, key: str = "t", seed: int = 1234) -> StepState:
    return StepState(0, 0, 1, torch.arange(b), seed, torch_generator(key), k)


def make_ctx(model: nn.Module, x: Tensor, y: Tensor, k: int, *, lr: float = 0.1, momentum: float = 0.0, info=None):
    data = ImageDataset("tiny", x.float(), y, k, "train", info=dict(info or {}))
    return TrainContext(
        model=model,
        train_data=data,
        num_classes=k,
        class_counts=data.class_counts(),
        epochs=1,
        steps_per_epoch=1,
        device=torch.device("cpu"),
        make_optimizer=lambda: torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
    )
