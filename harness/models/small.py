"""Small architectures for 8x8 digits and tests: an MLP and a compact CNN."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import MODELS

from .base import Classifier

# 2^28 float32 weights = 1 GiB: checked before any layer is allocated.
MAX_WEIGHTS = 2**28


@MODELS.register("mlp")
class MLP(Classifier):
    """Multilayer perceptron on flattened pixels (ReLU, configurable hidden widths)."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "hidden": Param("widths of the hidden layers", max_len=64, item=Param("a layer width", ge=1, le=16384))
    }

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 8,
        hidden: Sequence[int] = (256, 256),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        widths = [in_channels * input_size * input_size, *hidden, num_classes]
        weights = sum(a * b for a, b in zip(widths, widths[1:]))
        if weights > MAX_WEIGHTS:
            raise UsageError(
                f"mlp with {in_channels}x{input_size}x{input_size} inputs and hidden={list(hidden)} has "
                f"{weights:.3g} weights, more than {MAX_WEIGHTS:.3g}",
                "use smaller hidden widths or a convolutional architecture (cnn, preact-resnet18, wrn)",
            )
        super().__init__(num_classes, in_channels, mean, std)
        layers: list[nn.Module] = [nn.Flatten()]
        width = widths[0]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.trunk(x)


@MODELS.register("cnn")
class SmallCNN(Classifier):
    """Compact CNN for 8x8 inputs (3 conv layers, 2 pools, FC 256); any size via adaptive pooling."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "width": Param("channels of the first conv layer (x2, x4 later)", ge=1, le=1024)
    }

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 8,
        width: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, mean, std)
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * w, 256),
            nn.ReLU(),
        )
        self.head = nn.Linear(256, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.trunk(x)
