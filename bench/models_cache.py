"""Digits CNNs for the benchmarks, trained once and cached under bench/.cache/ (git-ignored).

``ce`` and ``pgd-at`` are `harness.api.train` models (10 epochs, seed 0); ``masked`` is the CE
model with its logits scaled by 1000, which saturates the softmax so that CE gradients vanish.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CACHE = Path(__file__).resolve().parent / ".cache"
EPOCHS = 10
MASK_SCALE = 1000.0


class ScaledLogits(nn.Module):
    """``model`` with its logits multiplied by ``scale``: same decisions, gradient-masked CE."""

    def __init__(self, model: nn.Module, scale: float = MASK_SCALE) -> None:
        super().__init__()
        self.model, self.scale = model, float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def trained(
    objective: str, epochs: int = EPOCHS, arch: str = "cnn", data: str = "digits", device: str = "cpu"
) -> nn.Module:
    """``arch`` trained on ``data`` with ``objective`` (seed 0), from the cache when present."""
    from harness import api
    from harness.models.checkpoint import load_checkpoint, weights_path

    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in f"{objective}-{arch}-{data}")
    path = CACHE / f"{safe}-e{epochs}"
    if not weights_path(path).is_file():
        api.train(objective, arch, data, epochs=epochs, seed=0, device=device, progress=False, out=path)
    model, _ = load_checkpoint(weights_path(path))
    return model.eval()


def benchmark_model(name: str) -> nn.Module:
    """One of the benchmark models: "ce", "pgd-at" or "masked" (CE, logits x1000)."""
    if name == "masked":
        return ScaledLogits(trained("ce")).eval()
    return trained(name)
