"""Shared pieces of the FAB and Square tests: a cached digits CNN, a linear model, a pass counter."""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.lru_cache(maxsize=1)
def digits_cnn() -> nn.Module:
    """The small CNN trained with CE on digits for 4 epochs (seeded), shared by both test files."""
    from harness.api import train

    torch.manual_seed(0)
    return train("ce", "cnn", "digits", epochs=4, progress=False, eval_samples=0, seed=0).model.eval()


class Linear2(nn.Module):
    """Two-class affine model on flattened images: the minimal distance to the boundary is closed-form."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(2, dim, generator=g))
        self.b = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b

    def min_distance(self, x: torch.Tensor, norm: str) -> torch.Tensor:
        """|z_1 - z_0| / ||w_1 - w_0||_dual (box constraints inactive for x well inside [0, 1])."""
        z = self(x).detach()
        dw = (self.w[1] - self.w[0]).detach()
        dual = dw.abs().sum() if norm == "linf" else dw.norm()
        return (z[:, 1] - z[:, 0]).abs() / dual


class Counting(nn.Module):
    """Counts images through forward passes and through backward passes (input-gradient evaluations)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.forward_images = 0
        self.backward_images = 0
        self.per_id: dict[int, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.forward_images += len(x)
        if out.requires_grad:
            n = len(x)

            def hook(g: torch.Tensor) -> None:
                self.backward_images += n

            out.register_hook(hook)
        return out


def robust_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def dist(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
