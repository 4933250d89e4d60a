"""Datasets larger than memory: ``.npy`` arrays read row by row, and image folders decoded on demand.

Both return an `ImageDataset` whose ``x`` is a lazy array: indexing reads (and converts) only the
requested rows, and `ImageDataset.subset` keeps the view lazy. The engine reads one chunk of rows at
a time, so memory stays bounded by the chunk, whatever the dataset's size.

``.npy`` rows are read with ``os.pread`` rather than through a memory map: mapped pages that were
touched count towards the process's resident memory until the kernel reclaims them, so a full pass
over a memory-mapped file looks (and, under a cgroup limit, may act) like loading it whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.errors import DataError
from harness.params import Param
from harness.registry import DATASETS

from .base import ImageDataset
from .cifar import CIFAR_EPS

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_EPS = {"linf": (4 / 255,), "l2": (3.0,)}


def _index(rows: Any, n: int) -> np.ndarray:
    """Positions 0..n-1 selected by an int, slice, array or tensor."""
    if isinstance(rows, Tensor):
        rows = rows.cpu().numpy()
    if isinstance(rows, slice):
        return np.arange(n)[rows]
    arr = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return np.where(arr < 0, arr + n, arr)


class NpyRows:
    """Rows of a ``.npy`` file, read on demand (``pread``) and returned as (k, C, H, W) arrays.

    ``channels_last`` files (N, H, W, C), such as CIFAR-10-C, are transposed per read; (N, H, W)
    files get a channel axis. ``rows`` selects file rows (a lazy subset).
    """

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, layout: str = "auto") -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                self.offset = f.tell()
        except FileNotFoundError:
            raise DataError(f"no such file {self.path}", "pass x=/path/to/images.npy") from None
        except (ValueError, OSError) as e:
            raise DataError(f"{self.path} is not a .npy array ({e})", "save the images with numpy.save") from e
        if fortran or dtype.hasobject or len(shape) not in (3, 4):
            raise DataError(
                f"{self.path}: array {shape} {dtype}{' (Fortran order)' if fortran else ''} is not a stack of images",
                "save a C-ordered (N, C, H, W), (N, H, W, C) or (N, H, W) uint8/float array",
            )
        if layout == "auto":
            layout = "nhwc" if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
        if layout not in ("nchw", "nhwc"):
            raise DataError(f"unknown layout {layout!r}", "use auto, nchw or nhwc")
        self.layout = layout
        self.dtype = dtype
        self.file_shape = tuple(int(s) for s in shape)
        self.row_bytes = int(np.prod(self.file_shape[1:])) * dtype.itemsize
        if os.path.getsize(self.path) < self.offset + self.file_shape[0] * self.row_bytes:
            raise DataError(f"{self.path} is truncated", "re-create the file")
        self.rows = np.arange(self.file_shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.file_shape[1:]
        chw = (1, *s) if len(s) == 2 else ((s[2], s[0], s[1]) if self.layout == "nhwc" else s)
        return (len(self.rows), *chw)

    def __len__(self) -> int:
        return len(self.rows)

    def take_rows(self, rows: Any) -> NpyRows:
        """A lazy view of some rows."""
        out = NpyRows.__new__(NpyRows)
        out.__dict__.update(self.__dict__)
        out.rows = self.rows[_index(rows, len(self.rows))]
        return out

    def __getitem__(self, rows: Any) -> np.ndarray:
        sel = self.rows[_index(rows, len(self.rows))]
        out = np.empty((len(sel), *self.file_shape[1:]), self.dtype)
        if len(sel):
            # one pread per run of consecutive file rows (a chunk is usually a single run)
            breaks = np.flatnonzero(np.diff(sel) != 1) + 1
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for run in np.split(np.arange(len(sel)), breaks):
                    start, k = int(sel[run[0]]), len(run)
                    buf = os.pread(fd, k * self.row_bytes, self.offset + start * self.row_bytes)
                    if len(buf) != k * self.row_bytes:
                        raise DataError(f"{self.path}: short read at row {start}", "the file changed or is truncated")
                    out[run[0] : run[0] + k] = np.frombuffer(buf, self.dtype).reshape(k, *self.file_shape[1:])
            finally:
                os.close(fd)
        if out.ndim == 3:
            return out[:, None]
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if self.layout == "nhwc" else out


@DATASETS.register(
    "npy",
    params={
        "x": Param("path of the images .npy: (N, C, H, W), (N, H, W, C) or (N, H, W); uint8 or float in [0, 1]"),
        "y": Param("path of the labels .npy: N integers"),
        "num_classes": Param("number of classes (None: 1 + the largest label)", ge=2, le=100_000),
        "name": Param("dataset name in results and reports"),
        "split": Param("split name in results and reports"),
        "layout": Param(
            "axis order of x (auto: NHWC when the last axis has 1 or 3 entries)", choices=("auto", "nchw", "nhwc")
        ),
        "offset": Param("first row used", ge=0),
        "n": Param("rows used from offset (None: to the end)", ge=1),
    },
)
def npy(
    x: str,
    y: str,
    num_classes: int | None = None,
    name: str = "npy",
    split: str = "test",
    layout: str = "auto",
    offset: int = 0,
    n: int | None = None,
) -> ImageDataset:
    """Images and labels from .npy files (e.g. CIFAR-10-C), read lazily row by row; never loaded whole.

    ``x``: (N, C, H, W), (N, H, W, C) or (N, H, W) uint8 (0-255) or float (in [0, 1]); ``y``: N
    integer labels. ``offset``/``n`` select a contiguous range (one CIFAR-10-C severity is 10 000
    rows). Global sample ids are the file row numbers.
    """
    xs = NpyRows(x, layout=layout)
    try:
        labels = np.load(y, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"no such file {y}", "pass y=/path/to/labels.npy") from None
    except ValueError as e:
        raise DataError(f"{y} is not a .npy array ({e})") from e
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{y}: labels must be a 1-D integer array, not {labels.shape} {labels.dtype}")
    if len(labels) != xs.file_shape[0]:
        raise DataError(f"{x} holds {xs.file_shape[0]} images but {y} holds {len(labels)} labels")
    stop = len(labels) if n is None else offset + int(n)
    if not 0 <= offset < stop <= len(labels):
        raise DataError(f"rows {offset}..{stop} outside the {len(labels)} rows of {x}", "check offset and n")
    rows = np.arange(offset, stop)
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    return ImageDataset(
        name,
        xs.take_rows(rows),
        labels[rows].astype(np.int64),
        k,
        split,
        tuple(str(i) for i in range(k)),
        ids=torch.as_tensor(rows),
        eps_grid=dict(CIFAR_EPS),
        info={"x": str(x), "y": str(y), "rows": [int(offset), int(stop)]},
    )


class ImageFiles:
    """Image files decoded on demand with PIL: RGB, shorter side resized to ``resize``, centre crop ``size``."""

    def __init__(self, paths: Sequence[Path], size: int, resize: int) -> None:
        self.paths = list(paths)
        self.size, self.resize = int(size), int(resize)
        if self.size < 1 or self.resize < self.size:
            raise DataError(f"crop size {size} must be positive and at most the resize {resize}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def take_rows(self, rows: Any) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in _index(rows, len(self.paths))], self.size, self.resize)

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = self.resize / min(w, h)
                nw, nh = max(self.resize, round(w * scale)), max(self.resize, round(h * scale))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR)
                left, top = (nw - self.size) // 2, (nh - self.size) // 2
                im = im.crop((left, top, left + self.size, top + self.size))
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot decode image {path} ({e})", "remove or replace the file") from e

    def __getitem__(self, rows: Any) -> np.ndarray:
        idx = _index(rows, len(self.paths))
        out = np.empty((len(idx), 3, self.size, self.size), np.uint8)
        for j, i in enumerate(idx):
            out[j] = self._decode(self.paths[i])
        return out

    def content_digest(self) -> str:
        """sha256 over the files' bytes and the transform (cheaper than hashing decoded pixels)."""
        h = hashlib.sha256(repr(("imagefiles", self.size, self.resize)).encode())
        for p in self.paths:
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()


@DATASETS.register(
    "imagefolder",
    params={
        "root": Param("folder with one sub-directory per class"),
        "subset": Param("text file listing the images to use, one path per line relative to root"),
        "size": Param("centre-crop size in pixels", ge=1, le=4096),
        "resize": Param("shorter side before the crop, in pixels", ge=1, le=8192),
        "name": Param("dataset name in results and reports"),
        "split": Param("split name in results and reports"),
        "n": Param("keep the first n images", ge=1),
    },
)
def imagefolder(
    root: str,
    subset: str | None = None,
    size: int = 224,
    resize: int = 256,
    name: str = "imagefolder",
    split: str = "val",
    n: int | None = None,
) -> ImageDataset:
    """ImageNet-style folder (one directory per class, sorted names = class ids), decoded lazily with PIL.

    ``subset``: a text file listing the images to use, one path per line relative to ``root``
    (e.g. RobustBench's 5 000-image ImageNet list); the class is the path's directory. Images are
    resized (shorter side ``resize``) and centre-cropped to ``size``. ``n`` keeps the first n.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"no image folder at {base}", "pass root=DIR holding one sub-directory per class")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{base} has no class sub-directories", "the layout is ROOT/<class>/<image>")
    cid = {c: i for i, c in enumerate(classes)}
    if subset is not None:
        listing = Path(subset)
        if not listing.is_file():
            raise DataError(f"no subset list {listing}", "pass subset=FILE with one relative image path per line")
        rel = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        paths = [base / r for r in rel]
        bad = [r for r, p in zip(rel, paths) if p.parent.name not in cid or not p.is_file()]
        if bad:
            raise DataError(
                f"{len(bad)} listed image(s) missing under {base} or outside a class directory (first: {bad[0]})",
                "paths in the subset file are relative to root, as <class>/<file>",
            )
        ids = np.arange(len(paths))  # ids are positions in the list, stable across runs
    else:
        paths = sorted(p for c in classes for p in (base / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        ids = np.arange(len(paths))
    if n is not None:
        paths, ids = paths[: int(n)], ids[: int(n)]
    if not paths:
        raise DataError(f"no images under {base}", f"expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    import torch

    labels = np.array([cid[p.parent.name] for p in paths], np.int64)
    return ImageDataset(
        name,
        ImageFiles(paths, size, resize),
        labels,
        len(classes),
        split,
        tuple(classes),
        ids=torch.as_tensor(ids),
        eps_grid=dict(IMAGENET_EPS),
        info={"root": str(base), "subset": subset, "size": size, "resize": resize},
    )
