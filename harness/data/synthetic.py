"""Seeded synthetic image classification data of any shape and class count (for tests)."""

from __future__ import annotations

import torch

from harness.registry import DATASETS
from harness.rng import keyed_normal, keyed_uniform, stream_seed

from .base import ImageDataset


@DATASETS.register("synthetic")
def synthetic(
    split: str = "test",
    n: int = 512,
    channels: int = 3,
    size: int = 32,
    num_classes: int = 10,
    noise: float = 0.15,
    seed: int = 0,
) -> ImageDataset:
    """Seeded class-prototype images plus Gaussian noise, in [0, 1]; learnable, any shape.

    Each class has a smooth random prototype; a sample is its class prototype plus noise. Train and
    test draw from disjoint id ranges, so they never share a sample.
    """
    shape = (channels, size, size)
    protos = keyed_uniform(stream_seed(seed, "proto"), torch.arange(num_classes), shape)
    protos = torch.nn.functional.avg_pool2d(protos, 3, 1, 1)  # smooth so small models can learn
    protos = (protos - protos.mean()) * 3 + 0.5
    offset = 0 if split == "test" else 1 << 30
    ids = torch.arange(n, dtype=torch.int64) + offset
    y = keyed_uniform(stream_seed(seed, "label"), ids, (1,)).mul(num_classes).long().view(-1)
    x = (protos[y] + noise * keyed_normal(stream_seed(seed, "noise"), ids, shape)).clamp(0, 1)
    return ImageDataset(
        "synthetic",
        x,
        y,
        num_classes,
        split,
        tuple(str(i) for i in range(num_classes)),
        ids=ids,
        eps_grid={"linf": (2 / 255, 4 / 255, 8 / 255), "l2": (0.25, 0.5)},
        train_eps={"linf": 8 / 255, "l2": 0.5},
        info={"n": n, "shape": list(shape), "noise": noise, "seed": seed},
    )
