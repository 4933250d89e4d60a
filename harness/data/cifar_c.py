"""CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich, 2019) from a local folder of the official .npy files.

Layout: ``labels.npy`` and one ``<corruption>.npy`` per corruption, each holding the 5 severities
stacked (5 x N uint8 images, N x 32 x 32 x 3, severity 1 first). Files are memory-mapped, so a
run reads only the rows it evaluates. Sample ids are the row numbers within a severity, so results
on the same image under different corruptions line up with each other and with clean CIFAR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.errors import DataError
from harness.params import Param
from harness.paths import regular_file
from harness.registry import DATASETS, close_matches

from .base import ImageDataset
from .cifar import CIFAR10_CLASSES, CIFAR_EPS, default_root

SEVERITIES = 5
CIFAR_C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)


def _open(path: Path, what: str) -> np.ndarray:
    hint = "extract the official CIFAR-10-C / CIFAR-100-C archive there (labels.npy + <corruption>.npy)"
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{what}: missing file {path}", hint)
    regular_file(path, "file", hint)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{what}: {path} is truncated or not a .npy array ({e})", "re-extract the archive") from e


def load_cifar_c(name: str, root: Path, corruption: str, severity: int, num_classes: int) -> ImageDataset:
    what = f"dataset {name}"
    if corruption not in CIFAR_C_CORRUPTIONS:
        raise DataError(
            f"{what}: unknown corruption {corruption!r}.{close_matches(corruption, list(CIFAR_C_CORRUPTIONS))}",
            f"choose one of {', '.join(CIFAR_C_CORRUPTIONS)}",
        )
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= SEVERITIES:
        raise DataError(f"{what}: severity must be an integer 1-5, not {severity!r}")
    labels = _open(root / "labels.npy", what)
    images = _open(root / f"{corruption}.npy", what)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise DataError(
            f"{what}: {root / f'{corruption}.npy'} holds {images.dtype} {images.shape}, expected uint8 (5N, 32, 32, 3)"
        )
    if labels.ndim != 1 or len(labels) not in (len(images), len(images) // SEVERITIES) or len(images) % SEVERITIES:
        raise DataError(
            f"{what}: {root / f'{corruption}.npy'} has {len(images)} images and labels.npy {labels.shape}; "
            f"expected 5 stacked severities of N images and N or 5N labels",
            "a file is truncated; re-extract the archive",
        )
    n = len(images) // SEVERITIES
    rows = slice((severity - 1) * n, severity * n)
    y = np.asarray(labels[rows] if len(labels) == len(images) else labels[:n]).astype(np.int64)
    x = images[rows].transpose(0, 3, 1, 2)  # still a memory map: (N, 3, 32, 32) view
    return ImageDataset(
        name,
        x,
        torch.from_numpy(y),
        num_classes,
        "test",
        CIFAR10_CLASSES if num_classes == 10 else (),
        eps_grid=dict(CIFAR_EPS),
        info={"corruption": corruption, "severity": severity, "root": str(root)},
    )


C_PARAMS = {
    "corruption": Param("the corruption's file name (without .npy)", choices=CIFAR_C_CORRUPTIONS),
    "severity": Param("severity, 1 (mild) to 5", ge=1, le=SEVERITIES),
    "root": Param(
        "folder holding the .npy files and labels.npy (None: $HARNESS_DATA/CIFAR-10-C or -100-C; HARNESS_DATA=data)"
    ),
}


@DATASETS.register("cifar10c", params=C_PARAMS)
def cifar10c(corruption: str = "gaussian_noise", severity: int = 1, root: str | None = None) -> ImageDataset:
    """CIFAR-10-C: one corruption at one severity from the official .npy files (memory-mapped, nothing downloaded)."""
    return load_cifar_c("cifar10c", Path(root) if root else default_root("CIFAR-10-C"), corruption, severity, 10)


@DATASETS.register("cifar100c", params=C_PARAMS)
def cifar100c(corruption: str = "gaussian_noise", severity: int = 1, root: str | None = None) -> ImageDataset:
    """CIFAR-100-C: one corruption at one severity from the official .npy files (memory-mapped, nothing downloaded)."""
    return load_cifar_c("cifar100c", Path(root) if root else default_root("CIFAR-100-C"), corruption, severity, 100)
