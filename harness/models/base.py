"""The model contract: images in [0, 1] (N, C, H, W) -> logits (N, K), normalisation inside."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.params import Param


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer, so attacks work in pixel space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Base for built-in architectures: ``normalize -> forward_features -> head``.

    `features` exposes the penultimate representation (used by objectives with feature terms, e.g.
    SRAT's separation loss) without a second forward pass through the trunk.
    """

    # Architecture arguments shared by the built-in models (`harness.params`); bounds keep a typo or a
    # hostile sidecar from allocating gigabytes before anything else is checked.
    PARAMS: ClassVar[dict[str, Param]] = {
        "num_classes": Param("number of output logits", ge=2, le=100_000),
        "in_channels": Param("image channels", ge=1, le=64),
        "input_size": Param("image height = width in pixels", ge=1, le=4096),
        "mean": Param("per-channel mean subtracted inside the model (None: 0)", max_len=64,
                      item=Param("a channel mean")),
        "std": Param("per-channel standard deviation divided inside the model (None: 1)", max_len=64,
                     item=Param("a channel standard deviation", gt=0)),
    }  # fmt: skip

    def __init__(self, num_classes: int, in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        mean = list(mean) if mean is not None else [0.0] * in_channels
        std = list(std) if std is not None else [1.0] * in_channels
        if len(mean) == 1 and in_channels > 1:
            mean, std = mean * in_channels, std * in_channels
        self.normalize = Normalize(mean, std)
        self.num_classes = num_classes

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        return self.forward_features(self.normalize(x))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return f, self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
