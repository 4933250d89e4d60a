"""Standard training-data augmentation applied by the trainer before the objective sees the batch.

Written in the torchvision v2 style: each transform splits into ``make_params`` (the random draws)
and a pure, batched ``kernel`` (the pixels). Unlike torchvision, the draws are per sample and keyed
by (training seed, epoch, sample id) through `harness.rng`, so they do not depend on the batch size,
the batch order or the resume point: a resumed run stays bit-identical, and one image gets the same
crop wherever it falls in the epoch. Kernels are vectorised over the batch (no per-sample loop).

Pipelines (``TrainConfig.augment``), a small declared set:
- ``none``: the raw batch;
- ``crop``: zero-padded random crop, pad ``p`` pixels on each side, offset uniform in [0, 2p]^2;
- ``flip``: horizontal flip with probability 1/2;
- ``crop-flip``: crop then flip, the CIFAR recipe of every seed paper (pad 4 on 32x32);
- ``crop-flip-cutout``: crop-flip then one zeroed square of side H/2 at a uniform centre, clipped
  to the image (DeVries & Taylor 2017's 16 px on CIFAR).
The pad defaults to round(H / 8) (4 on 32x32, 1 on 8x8, 28 on 224x224); ``augment_pad`` sets it.
Per-dataset defaults (`default_augment`): ``crop-flip`` for cifar10, cifar100 and imagefolder,
``none`` for every other dataset (flipping a digit changes its meaning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.errors import UsageError
from harness.rng import keyed_randint, keyed_uniform, stream_seed
from harness.threat import per_sample

PIPELINES: dict[str, tuple[str, ...]] = {
    "none": (),
    "crop": ("crop",),
    "flip": ("flip",),
    "crop-flip": ("crop", "flip"),
    "crop-flip-cutout": ("crop", "flip", "cutout"),
}
DATASET_DEFAULTS = {"cifar10": "crop-flip", "cifar100": "crop-flip", "imagefolder": "crop-flip"}
MAX_PAD = 64


def default_augment(dataset: str) -> str:
    """The augmentation a dataset trains with when none is given (`DATASET_DEFAULTS`, else ``none``)."""
    return DATASET_DEFAULTS.get(dataset, "none")


def default_pad(height: int) -> int:
    """round(H / 8), at least 1: 4 on CIFAR's 32x32, as in the papers' RandomCrop(32, padding=4)."""
    return max(1, round(height / 8))


def check_augment(name: object, pad: object = None) -> None:
    """A declared pipeline name and a pad in [0, MAX_PAD] (or None), else a one-line UsageError."""
    if not isinstance(name, str) or name not in PIPELINES:
        raise UsageError(f"unknown augmentation {name!r}", f"choose one of {', '.join(PIPELINES)}")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= MAX_PAD):
        raise UsageError(f"augment_pad = {pad!r} is not an integer in [0, {MAX_PAD}]", "e.g. 4 on 32x32, 1 on 8x8")


# ---- kernels: pure functions of the batch and the drawn parameters ----------------------------------
def crop_kernel(x: Tensor, shift: Tensor, pad: int) -> Tensor:
    """Crop (H, W) from x zero-padded by ``pad`` at per-sample offsets ``shift`` (B, 2) = (row, col)."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = shift[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols = shift[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return xp.flatten(2).gather(2, flat).view(b, c, h, w)


def flip_kernel(x: Tensor, flip: Tensor) -> Tensor:
    """Horizontally flip the samples where ``flip`` (B,) is True."""
    return torch.where(per_sample(flip, x), x.flip(3), x)


def cutout_kernel(x: Tensor, centre: Tensor, size: int) -> Tensor:
    """Zero a ``size`` x ``size`` square at per-sample centres (B, 2), clipped to the image."""
    _, _, h, w = x.shape
    r = torch.arange(h, device=x.device)[None, :] - centre[:, 0:1] + size // 2  # (B, H)
    c = torch.arange(w, device=x.device)[None, :] - centre[:, 1:2] + size // 2  # (B, W)
    inside = ((r >= 0) & (r < size))[:, :, None] & ((c >= 0) & (c < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0.0)


# ---- the pipeline ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """A declared pipeline for images of height ``height``; call with the batch, its ids, seed and epoch."""

    name: str = "none"
    height: int = 32
    pad: int | None = None

    def __post_init__(self) -> None:
        check_augment(self.name, self.pad)

    @property
    def ops(self) -> tuple[str, ...]:
        return PIPELINES[self.name]

    @property
    def resolved_pad(self) -> int:
        return default_pad(self.height) if self.pad is None else self.pad

    def make_params(self, ids: Tensor, seed: int, epoch: int, width: int) -> dict[str, Any]:
        """The per-sample draws for samples ``ids`` at ``epoch``, keyed by (seed, epoch, op, sample id)."""
        key = stream_seed(seed, "augment", epoch)
        out: dict[str, Any] = {}
        if "crop" in self.ops:
            out["shift"] = keyed_randint(stream_seed(key, "crop"), ids, (2,), 2 * self.resolved_pad + 1)
        if "flip" in self.ops:
            out["flip"] = keyed_uniform(stream_seed(key, "flip"), ids, (1,))[:, 0] < 0.5
        if "cutout" in self.ops:
            u = keyed_uniform(stream_seed(key, "cutout"), ids, (2,), torch.float64)
            out["centre"] = torch.floor(u * torch.tensor([self.height, width], dtype=torch.float64, device=u.device))
            out["centre"] = out["centre"].to(torch.int64)
        return out

    def __call__(self, x: Tensor, ids: Tensor, seed: int, epoch: int) -> Tensor:
        if not self.ops:
            return x
        p = self.make_params(ids, seed, epoch, x.shape[3])
        if "crop" in self.ops:
            x = crop_kernel(x, p["shift"].to(x.device), self.resolved_pad)
        if "flip" in self.ops:
            x = flip_kernel(x, p["flip"].to(x.device))
        if "cutout" in self.ops:
            x = cutout_kernel(x, p["centre"].to(x.device), max(1, x.shape[2] // 2))
        return x

    def record(self) -> dict[str, Any]:
        """What the sidecar keeps: the pipeline and its resolved pad."""
        rec: dict[str, Any] = {"name": self.name}
        if "crop" in self.ops:
            rec["pad"] = self.resolved_pad
        return rec
