"""Small random networks covering every layer the verifiers support (eval mode, seeded weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models import Normalize

KINDS = ("mlp", "cnn-avg", "cnn-max", "residual")


class Residual(nn.Module):
    """A pre-activation block as in PreActResNet: conv(relu(bn(conv(relu(bn(x)))))) + shortcut."""

    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.shortcut = nn.Conv2d(c, c, 1, bias=False) if shortcut else None

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + sc


class ResNetTiny(nn.Module):
    def __init__(self, c_in: int, width: int, classes: int, shortcut: bool) -> None:
        super().__init__()
        self.normalize = Normalize([0.5] * c_in, [0.25] * c_in)
        self.stem = nn.Conv2d(c_in, width, 3, padding=1)
        self.block = Residual(width, shortcut)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        out = F.relu(self.block(self.stem(self.normalize(x))))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


def build(kind: str, c: int, h: int, classes: int, seed: int, width: int = 4) -> nn.Module:
    """A random network of ``kind`` for (c, h, h) inputs; batch norms get random running statistics."""
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        net: nn.Module = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * h, 2 * width),
            nn.ReLU(),
            nn.Linear(2 * width, width),
            nn.ReLU(),
            nn.Linear(width, classes),
        )
    elif kind in ("cnn-avg", "cnn-max"):
        pool = nn.AvgPool2d(2) if kind == "cnn-avg" else nn.MaxPool2d(2)
        net = nn.Sequential(
            Normalize([0.4] * c, [0.3] * c),
            nn.Conv2d(c, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            pool,
            nn.Conv2d(width, width, 3, stride=1, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(width * (h // 2) ** 2, classes),
        )
    elif kind == "residual":
        net = ResNetTiny(c, width, classes, shortcut=bool(seed % 2))
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) / mod.weight[0].numel() ** 0.5 * 1.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.3)
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)
    return net.eval()
