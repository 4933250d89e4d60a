"""scikit-learn's bundled handwritten digits: the embedded default, no files needed."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import UsageError
from harness.params import Param
from harness.registry import DATASETS

from .base import ImageDataset

TEST_FRACTION = 0.3
SPLIT_SEED = 0


def _split_rows(y: np.ndarray, split: str) -> np.ndarray:
    """Fixed stratified split: per class, a seeded permutation, the first 30 % go to test."""
    rng = np.random.RandomState(SPLIT_SEED)
    test, train = [], []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rows = rows[rng.permutation(len(rows))]
        k = int(round(TEST_FRACTION * len(rows)))
        test.append(rows[:k])
        train.append(rows[k:])
    if split == "test":
        return np.sort(np.concatenate(test))
    if split == "train":
        return np.sort(np.concatenate(train))
    if split == "all":
        return np.arange(len(y))
    raise UsageError(f"unknown split {split!r} for digits", "use 'train', 'test' or 'all'")


@DATASETS.register(
    "digits",
    params={
        "split": Param("fixed stratified 70/30 split (seed 0), or all 1797 images", choices=("test", "train", "all")),
        "size": Param("upsampled height = width in pixels (8: the original)", ge=1, le=512),
        "channels": Param("channels (the grey image repeated)", ge=1, le=16),
    },
)
def digits(split: str = "test", size: int = 8, channels: int = 1) -> ImageDataset:
    """Handwritten digits 0-9 (sklearn), 8x8x1 in [0, 1]; fixed stratified 70/30 train/test split (seed 0).

    ``size``/``channels`` upsample (bilinear) and repeat channels, e.g. size=32, channels=3 for a
    CIFAR-shaped benchmark. The test split has 539 images, train 1258, all 1797. Sample ids are the
    row numbers in sklearn's array, so every split and shape shares them.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    y = d.target.astype(np.int64)
    rows = _split_rows(y, split)
    x = x[rows]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    if channels != 1:
        x = x.repeat(1, channels, 1, 1)
    ds = ImageDataset(
        "digits",
        x.contiguous(),
        torch.from_numpy(y[rows]),
        10,
        split,
        tuple(str(i) for i in range(10)),
        ids=torch.from_numpy(rows.astype(np.int64)),
        # L-inf 0.05 leaves a CE model mostly intact, 0.1-0.2 breaks it, 0.3 breaks nearly everything.
        eps_grid={"linf": (0.05, 0.1, 0.2, 0.3), "l2": (0.5, 1.0, 2.0)},
        train_eps={"linf": 0.1, "l2": 1.0},
        info={"size": size, "channels": channels} if (size, channels) != (8, 1) else {},
    )
    return ds
