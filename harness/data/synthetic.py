"""Seeded synthetic image classification data of any shape and class count (for tests)."""

from __future__ import annotations

import torch

from harness.errors import UsageError
from harness.params import Param
from harness.registry import DATASETS
from harness.rng import keyed_normal, keyed_uniform, stream_seed

from .base import ImageDataset

# Values (images x channels x pixels, plus the class prototypes) a synthetic dataset may hold:
# 2^26 float32 values are 256 MiB, a few times that while the images are drawn.
MAX_VALUES = 2**26


@DATASETS.register(
    "synthetic",
    params={
        "split": Param("test, or train (a disjoint id range)", choices=("test", "train")),
        "n": Param("number of images", ge=1, le=1_000_000),
        "channels": Param("image channels", ge=1, le=16),
        "size": Param("image height = width in pixels", ge=1, le=1024),
        "num_classes": Param("number of classes", ge=2, le=10_000),
        "noise": Param("standard deviation of the Gaussian noise around each class prototype", ge=0, le=10),
        "seed": Param("seed of the prototypes, labels and noise", ge=0, le=2**62),
    },
)
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
    values = (n + num_classes) * channels * size * size
    if values > MAX_VALUES:
        raise UsageError(
            f"synthetic data of {n} images of {channels}x{size}x{size} (and {num_classes} class prototypes) holds "
            f"{values:.3g} values, more than the {MAX_VALUES:.3g} allowed ({4 * MAX_VALUES >> 20} MiB as float32)",
            "use fewer images (n) or smaller ones (size, channels)",
        )
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
