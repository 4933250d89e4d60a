"""CIFAR-10/100 read from a local folder in the official formats (binary or pickled python batches).

Nothing is downloaded. The python batches are unpickled by `SafeUnpickler`, which builds only plain
numpy arrays, lists, dicts, bytes, str and numbers, and refuses any other object.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.environment import env
from harness.errors import DataError
from harness.params import Param
from harness.registry import DATASETS

from .base import ImageDataset

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_EPS = {"linf": (2 / 255, 4 / 255, 8 / 255), "l2": (0.25, 0.5)}
CIFAR_TRAIN_EPS = {"linf": 8 / 255, "l2": 0.5}
RECORD = 3072


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (and plain containers); everything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}: only plain arrays are allowed")


def safe_unpickle(data: bytes, what: str) -> Any:
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{what}: {e}", "the file is not an official CIFAR batch; never load untrusted pickles") from e
    except (EOFError, ValueError, TypeError) as e:
        raise DataError(f"{what} is truncated or corrupt ({e})", "re-extract the official archive") from e


def default_root(name: str) -> Path:

    return Path(env("HARNESS_DATA")) / name


def _missing(root: Path, expected: list[str], name: str) -> DataError:
    return DataError(
        f"no {name} data found under {root}",
        "extract the official archive there (expected "
        + " or ".join(expected)
        + "), or pass root=... / --data-root; nothing is downloaded",
    )


def _read_binary(path: Path, label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    rec = RECORD + label_bytes
    if raw.size == 0 or raw.size % rec:
        raise DataError(
            f"{path} has {raw.size} bytes, not a multiple of the {rec}-byte record",
            "the file is truncated; re-extract it",
        )
    raw = raw.reshape(-1, rec)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_index].astype(np.int64)


def _read_pickled(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(path.read_bytes(), str(path))
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise DataError(f"{path} is not a CIFAR python batch (keys data/{label_key.decode()} missing)")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != RECORD or len(labels) != len(data):
        raise DataError(f"{path}: data has shape {data.shape}, expected (N, {RECORD}) with N labels")
    return data.reshape(-1, 3, 32, 32), labels


def _load(
    name: str,
    root: Path,
    split: str,
    bin_dir: str,
    bin_files: dict[str, list[str]],
    py_dir: str,
    py_files: dict[str, list[str]],
    label_bytes: int,
    label_index: int,
    label_key: bytes,
) -> tuple[np.ndarray, np.ndarray]:
    if split not in bin_files:
        raise DataError(f"unknown split {split!r} for {name}", "use 'train' or 'test'")
    candidates = [root, root / bin_dir, root / py_dir]
    for base in candidates:
        if all((base / f).is_file() for f in bin_files[split]) and base.name != py_dir:
            parts = [_read_binary(base / f, label_bytes, label_index) for f in bin_files[split]]
            break
        if all((base / f).is_file() for f in py_files[split]) and base.name != bin_dir:
            parts = [_read_pickled(base / f, label_key) for f in py_files[split]]
            break
    else:
        raise _missing(
            root,
            [f"{bin_dir}/{{{','.join(bin_files[split])}}}", f"{py_dir}/{{{','.join(py_files[split])}}}"],
            name,
        )
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@DATASETS.register(
    "cifar10",
    params={
        "split": Param("official split", choices=("test", "train")),
        "root": Param(
            "folder holding cifar-10-batches-bin/ or -py/ (None: $HARNESS_DATA/cifar10, default data/cifar10)"
        ),
    },
)
def cifar10(split: str = "test", root: str | None = None) -> ImageDataset:
    """CIFAR-10 from a local folder: cifar-10-batches-bin/ or cifar-10-batches-py/ (official archives)."""
    r = Path(root) if root else default_root("cifar10")
    x, y = _load(
        "CIFAR-10",
        r,
        split,
        "cifar-10-batches-bin",
        {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
        "cifar-10-batches-py",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        1,
        0,
        b"labels",
    )
    return ImageDataset(
        "cifar10",
        x,
        torch.from_numpy(y),
        10,
        split,
        CIFAR10_CLASSES,
        eps_grid=dict(CIFAR_EPS),
        train_eps=dict(CIFAR_TRAIN_EPS),
    )


@DATASETS.register(
    "cifar100",
    params={
        "split": Param("official split", choices=("test", "train")),
        "root": Param(
            "folder holding cifar-100-binary/ or -python/ (None: $HARNESS_DATA/cifar100, default data/cifar100)"
        ),
        "labels": Param("100 fine or 20 coarse classes", choices=("fine", "coarse")),
    },
)
def cifar100(split: str = "test", root: str | None = None, labels: str = "fine") -> ImageDataset:
    """CIFAR-100 from a local folder: cifar-100-binary/ or cifar-100-python/; fine (100) or coarse (20) labels."""
    r = Path(root) if root else default_root("cifar100")
    if labels not in ("fine", "coarse"):
        raise DataError(f"labels must be 'fine' or 'coarse', not {labels!r}")
    fine = labels == "fine"
    x, y = _load(
        "CIFAR-100",
        r,
        split,
        "cifar-100-binary",
        {"train": ["train.bin"], "test": ["test.bin"]},
        "cifar-100-python",
        {"train": ["train"], "test": ["test"]},
        2,
        1 if fine else 0,
        b"fine_labels" if fine else b"coarse_labels",
    )
    ds = ImageDataset(
        "cifar100",
        x,
        torch.from_numpy(y),
        100 if fine else 20,
        split,
        eps_grid=dict(CIFAR_EPS),
        train_eps=dict(CIFAR_TRAIN_EPS),
    )
    if fine:
        _, coarse = _load(
            "CIFAR-100",
            r,
            split,
            "cifar-100-binary",
            {"train": ["train.bin"], "test": ["test.bin"]},
            "cifar-100-python",
            {"train": ["train"], "test": ["test"]},
            2,
            0,
            b"coarse_labels",
        )
        ds.info["coarse_labels_of_fine"] = _fine_to_coarse(y, coarse)
    return ds


def _fine_to_coarse(fine: np.ndarray, coarse: np.ndarray) -> list[int]:
    out = [-1] * 100
    for f, c in zip(fine.tolist(), coarse.tolist()):
        out[f] = c
    return out
