"""The dataset contract: images in [0, 1] (N, C, H, W), integer labels, a name, classes, a content hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.errors import DataError

# Declared maxima, checked before anything of that size is allocated (docs/reliability.md, "Bounds").
MAX_CLASSES = 100_000  # ImageNet-21k has 21 841
MAX_SAMPLES = 100_000_000  # rows of one dataset file (CIFAR-10-C: 950 000 per corruption file)
MAX_IMAGE_SIDE = 4096  # height and width of a stored or decoded image, in pixels
MAX_CHANNELS = 16
# Pixels an image file may declare in its header before it is decoded (PIL's own default limit).
MAX_DECODED_PIXELS = 89_478_485


@dataclass(eq=False)
class ImageDataset:
    """An indexable labelled image set; ``ids`` are global sample ids that survive subsetting.

    ``x`` may be a tensor or a (memory-mapped) uint8/float numpy array: `batch` converts only the
    requested rows, so datasets larger than memory are never loaded whole.
    """

    name: str
    x: Any
    y: Tensor
    num_classes: int
    split: str = "test"
    class_names: tuple[str, ...] = ()
    ids: Tensor | None = None
    eps_grid: dict[str, tuple[float, ...]] = field(default_factory=dict)
    train_eps: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    _hash: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_CLASSES:
            raise DataError(
                f"dataset {self.name!r}: num_classes must be an integer in 1..{MAX_CLASSES}, not {k!r}",
                "pass the number of classes the labels index",
            )
        self.num_classes = int(k)
        self.y = torch.as_tensor(np.asarray(self.y), dtype=torch.int64)
        if self.ids is None:
            self.ids = torch.arange(len(self.y), dtype=torch.int64)
        if len(self.x) != len(self.y):
            raise DataError(f"dataset {self.name!r}: {len(self.x)} images but {len(self.y)} labels")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise DataError(
                f"dataset {self.name!r}: labels outside 0..{self.num_classes - 1}",
                "check the class count of the dataset files",
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def batch(self, rows: Tensor | np.ndarray | slice) -> tuple[Tensor, Tensor]:
        """Images (float32 in [0, 1]) and labels for the given row positions."""
        if isinstance(rows, Tensor):
            rows = rows.cpu().numpy()
        xb = self.x[rows]
        if isinstance(xb, np.ndarray):
            xb = np.ascontiguousarray(xb)
            xb = torch.from_numpy(xb if xb.flags.writeable else xb.copy())  # read-only memmap views
        if xb.dtype == torch.uint8:
            xb = xb.to(torch.float32) / 255.0
        return xb.to(torch.float32), self.y[torch.as_tensor(rows) if not isinstance(rows, slice) else rows]

    def subset(self, rows: Tensor | np.ndarray | slice, split: str | None = None) -> ImageDataset:
        """A view of some rows keeping their global ids (so records stay comparable)."""
        if isinstance(rows, slice):
            rows = torch.arange(len(self))[rows]
        rows_t = torch.as_tensor(rows, dtype=torch.int64)
        if hasattr(self.x, "take_rows"):  # lazy sources stay lazy (see harness.data.lazy)
            x = self.x.take_rows(rows_t.numpy())
        else:
            x = self.x[rows_t.numpy()] if isinstance(self.x, np.ndarray) else self.x[rows_t]
        return ImageDataset(
            self.name,
            x,
            self.y[rows_t],
            self.num_classes,
            split or self.split,
            self.class_names,
            self.ids[rows_t],  # type: ignore[index]
            dict(self.eps_grid),
            dict(self.train_eps),
            dict(self.info),
        )

    def content_hash(self) -> str:
        """sha256 of images, labels and ids (cached)."""
        if self._hash is None:
            h = hashlib.sha256()
            h.update(repr((self.name, self.split, self.num_classes, tuple(self.shape))).encode())
            row_bytes = int(np.prod(self.shape)) * 4
            step = max(1, min(4096, (8 << 20) // max(1, row_bytes)))  # ~8 MB per read: bounded memory
            if hasattr(self.x, "content_digest"):  # e.g. encoded image files: hash the bytes, not the pixels
                h.update(self.x.content_digest().encode())
            for i in range(0, 0 if hasattr(self.x, "content_digest") else len(self), step):
                xb = self.x[i : i + step]
                arr = xb.numpy() if isinstance(xb, Tensor) else np.asarray(xb)
                h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
            h.update(self.y.numpy().tobytes())
            h.update(self.ids.numpy().tobytes())  # type: ignore[union-attr]
            self._hash = h.hexdigest()
        return self._hash

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "num_classes": self.num_classes,
            "shape": list(self.shape),
            "sha256": self.content_hash(),
            **({"info": self.info} if self.info else {}),
        }

    def class_counts(self) -> Tensor:
        return torch.bincount(self.y, minlength=self.num_classes)


def check_image_range(x: Tensor, what: str = "images") -> None:
    """Images must be floats in [0, 1]; 0-255 input is the common mistake."""
    if not torch.is_floating_point(x):
        raise DataError(f"{what} have dtype {x.dtype}", "pass float images scaled to [0, 1]")
    if not torch.isfinite(x).all():
        raise DataError(f"{what} contain NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = "divide by 255" if hi > 1.5 else "clip or rescale to [0, 1]"
        raise DataError(
            f"{what} lie in [{lo:.3g}, {hi:.3g}], outside [0, 1]",
            f"the harness expects pixels in [0, 1] with normalisation inside the model: {hint}",
        )
