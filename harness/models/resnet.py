"""PreAct ResNet-18 (He et al. 2016), Wide ResNets (Zagoruyko & Komodakis 2016) and CIFAR ResNets, CIFAR layouts.

The WRN follows the layout used by the adversarial-training literature (Madry/TRADES repos): 3
groups of (depth-4)/6 pre-activation blocks with widths 16k, 32k, 64k. WRN-28-10 and WRN-34-10 are
``wrn`` with depth=28/34, widen=10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import MODELS

from .base import Classifier


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.drop:
            out = F.dropout(out, self.drop, self.training)
        return self.conv2(out) + sc


@MODELS.register("preact-resnet18")
class PreActResNet18(Classifier):
    """PreAct ResNet-18 (4 stages of 2 blocks, 64-512 channels); CIFAR stem (3x3 conv, no pooling)."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "width": Param("channels of the first stage (64 in the paper; the others double it)", ge=1, le=512),
    }

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        width: int = 64,
    ) -> None:
        super().__init__(num_classes, in_channels, mean, std)
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        blocks, cin = [], width
        for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            blocks += [PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@MODELS.register("wrn")
class WideResNet(Classifier):
    """Wide ResNet WRN-depth-widen (default 28-10); depth must be 6n+4."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "depth": Param("layers; 6n + 4 (e.g. 16, 28, 34, 70)", ge=10, le=106),
        "widen": Param("width multiplier (WRN-70-16: 16)", ge=1, le=20),
        "dropout": Param("dropout rate between the convolutions of a block", ge=0, lt=1),
    }

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        depth: int = 28,
        widen: int = 10,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, mean, std)
        if (depth - 4) % 6:
            raise UsageError(f"WRN depth must be 6n+4 (e.g. 16, 28, 34, 40), not {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for g, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                blocks.append(PreActBlock(cin, widths[g + 1], stride if i == 0 else 1, dropout))
                cin = widths[g + 1]
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class BasicBlockA(nn.Module):
    """He et al.'s CIFAR basic block; option-A shortcut (subsample + zero-pad channels, no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet-cifar")
class CifarResNet(Classifier):
    """CIFAR ResNet-depth (He et al. 2016; default ResNet-32): 3 stages of (depth-2)/6 blocks, 16/32/64 channels."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "depth": Param("layers; 6n + 2 (20, 32, 44, 56, 110)", ge=8, le=1202),
        "width": Param("channels of the first stage (16 in the paper; the others double it)", ge=1, le=256),
    }

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        depth: int = 32,
        width: int = 16,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, mean, std)
        if (depth - 2) % 6:
            raise UsageError(f"CIFAR ResNet depth must be 6n+2 (e.g. 20, 32, 56), not {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, cin = [], width
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(BasicBlockA(cin, width * 2**g, stride if i == 0 else 1))
                cin = width * 2**g
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)
