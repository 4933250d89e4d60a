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
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.errors import DataError
from harness.params import Param
from harness.paths import regular_file, safe_join
from harness.registry import DATASETS

from .base import MAX_CHANNELS, MAX_CLASSES, MAX_DECODED_PIXELS, MAX_IMAGE_SIDE, MAX_SAMPLES, ImageDataset
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


def npy_header(path: str | Path, what: str, hint: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-ordered ``.npy`` file whose size holds all its bytes.

    Only the header is read (after a ``stat`` refusing pipes, devices and directories), so a
    header that promises more data than the file holds is refused before anything is allocated.
    """
    p = regular_file(path, what, hint)
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is not a .npy array ({e})", hint) from e
    if fortran or dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise DataError(
            f"{p}: array {shape} {dtype}{' (Fortran order)' if fortran else ''} is not a plain C-ordered array",
            hint,
        )
    shape = tuple(int(s) for s in shape)
    if shape and shape[0] > MAX_SAMPLES:
        raise DataError(f"{p} holds {shape[0]} rows, more than the {MAX_SAMPLES} the harness reads", hint)
    if os.path.getsize(p) < offset + math.prod(shape) * dtype.itemsize:
        raise DataError(f"{p} is truncated: its header promises {shape} {dtype}", "re-create the file")
    return shape, dtype, offset


def read_labels(path: str | Path) -> np.ndarray:
    """A 1-D integer label array from a ``.npy`` file (header checked first, then exactly its bytes read)."""
    hint = "pass y=/path/to/labels.npy holding one integer class index per image (numpy.save)"
    shape, dtype, offset = npy_header(path, "label file", hint)
    if len(shape) != 1 or dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be a 1-D integer array, not {shape} {dtype}", hint)
    with open(path, "rb") as f:
        f.seek(offset)
        labels = np.fromfile(f, dtype=dtype, count=shape[0])
    if len(labels) != shape[0]:
        raise DataError(f"{path}: short read", "the file changed or is truncated")
    return labels.astype(dtype.newbyteorder("="), copy=False)


class NpyRows:
    """Rows of a ``.npy`` file, read on demand (``pread``) and returned as (k, C, H, W) arrays.

    ``channels_last`` files (N, H, W, C), such as CIFAR-10-C, are transposed per read; (N, H, W)
    files get a channel axis. ``rows`` selects file rows (a lazy subset). Pixels are uint8
    (0-255) or float (in [0, 1]); complex, integer and boolean arrays are refused rather than
    converted, because no conversion of them is the image the user meant.
    """

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, layout: str = "auto") -> None:
        self.path = Path(path)
        hint = "save a C-ordered (N, C, H, W), (N, H, W, C) or (N, H, W) uint8 or float array with numpy.save"
        shape, dtype, self.offset = npy_header(self.path, "image file", hint)
        if len(shape) not in (3, 4):
            raise DataError(f"{self.path}: array {shape} {dtype} is not a stack of images", hint)
        if dtype.kind == "c":
            raise DataError(
                f"{self.path}: complex pixels ({dtype}); their imaginary part would be dropped",
                "save real images: uint8 in 0-255 or float in [0, 1]",
            )
        if not (dtype == np.uint8 or dtype.kind == "f"):
            raise DataError(
                f"{self.path}: pixels of dtype {dtype} are neither uint8 (0-255) nor float (in [0, 1])",
                "convert them explicitly, e.g. x.astype(numpy.uint8) for 0-255 values or x / 255.0 as float32",
            )
        if layout == "auto":
            layout = "nhwc" if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
        if layout not in ("nchw", "nhwc"):
            raise DataError(f"unknown layout {layout!r}", "use auto, nchw or nhwc")
        self.layout = layout
        self.dtype = dtype
        self.file_shape = shape
        self.rows = np.arange(self.file_shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        c, h, w = self.shape[1:]
        if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
            raise DataError(
                f"{self.path}: images of {c} channel(s) and {h}x{w} pixels (layout {layout})",
                f"the harness reads 1-{MAX_CHANNELS} channels and sides of 1-{MAX_IMAGE_SIDE} pixels; "
                "check the array's layout (layout=nchw or nhwc)",
            )
        self.row_bytes = math.prod(self.file_shape[1:]) * dtype.itemsize

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
        out = np.empty((len(sel), *self.file_shape[1:]), self.dtype.newbyteorder("="))
        if len(sel):
            # one pread per run of consecutive file rows (a chunk is usually a single run)
            breaks = np.flatnonzero(np.diff(sel) != 1) + 1
            fd = os.open(regular_file(self.path, "image file"), os.O_RDONLY)
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


def _class_count(num_classes: Any, labels: np.ndarray, y: str) -> int:
    """The class count: given (an integer in 1..MAX_CLASSES), or inferred as max label + 1 within the same bound."""
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise DataError(f"num_classes must be an integer, not {num_classes!r}", "e.g. num_classes=10")
        if not 1 <= int(num_classes) <= MAX_CLASSES:
            raise DataError(f"num_classes {num_classes} is outside 1..{MAX_CLASSES}", "e.g. num_classes=10")
        return int(num_classes)
    top = int(labels.max()) if len(labels) else -1
    if top >= MAX_CLASSES:
        raise DataError(
            f"{y}: the largest label is {top}, which would mean {top + 1} classes (the harness supports {MAX_CLASSES})",
            "labels must be class indices 0..K-1; remap them, or pass num_classes=K if the data has K classes",
        )
    return max(top + 1, 1)


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
    rows). Global sample ids are the file row numbers. ``num_classes`` defaults to max label + 1.
    """
    xs = NpyRows(x, layout=layout)
    labels = read_labels(y)
    if len(labels) != xs.file_shape[0]:
        raise DataError(f"{x} holds {xs.file_shape[0]} images but {y} holds {len(labels)} labels")
    for key, v in (("offset", offset), ("n", n)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise DataError(f"{key} must be an integer, not {v!r}", "e.g. offset=10000,n=10000")
    stop = len(labels) if n is None else offset + int(n)
    if not 0 <= offset < stop <= len(labels):
        raise DataError(f"rows {offset}..{stop} outside the {len(labels)} rows of {x}", "check offset and n")
    rows = np.arange(offset, stop)
    k = _class_count(num_classes, labels, y)
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
    """Image files decoded on demand with PIL: RGB, shorter side resized to ``resize``, centre crop ``size``.

    8-bit images are converted to RGB by PIL; 16-bit greyscale (PIL modes ``I;16*``, and ``I`` from
    a PNG) is scaled by 1/257 to 8 bits first, so 65535 is white (PIL's own conversion would clip
    every value above 255 to white). 32-bit integer and float images are refused, and a file whose
    header declares more than `MAX_DECODED_PIXELS` pixels is refused before it is decoded.
    """

    def __init__(self, paths: Sequence[Path], size: int, resize: int) -> None:
        self.paths = list(paths)
        for key, v in (("size", size), ("resize", resize)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DataError(f"{key} must be an integer number of pixels, not {v!r}", "e.g. size=224,resize=256")
        self.size, self.resize = int(size), int(resize)
        if self.size < 1 or self.resize < self.size:
            raise DataError(f"crop size {size} must be positive and at most the resize {resize}")
        if self.resize > MAX_IMAGE_SIDE:
            raise DataError(
                f"resize {resize} exceeds the largest image side the harness decodes ({MAX_IMAGE_SIDE} pixels)",
                "e.g. size=224,resize=256",
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def take_rows(self, rows: Any) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in _index(rows, len(self.paths))], self.size, self.resize)

    def _decode(self, path: Path) -> np.ndarray:
        import warnings

        from PIL import Image, UnidentifiedImageError

        regular_file(path, "image", "remove or replace it")
        try:
            with warnings.catch_warnings():
                # The pixel bound is checked below, with a clear error, instead of PIL's warning.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(path)
            with im:
                w, h = im.size
                if w * h > MAX_DECODED_PIXELS:
                    raise DataError(
                        f"image {path} declares {w}x{h} pixels, more than the {MAX_DECODED_PIXELS} the harness "
                        "decodes (a decompression bomb, or an image far larger than the model's input)",
                        "remove the file or downscale it",
                    )
                im = _to_rgb(im, path)
                scale = self.resize / min(w, h)
                nw, nh = max(self.resize, round(w * scale)), max(self.resize, round(h * scale))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR)
                left, top = (nw - self.size) // 2, (nh - self.size) // 2
                im = im.crop((left, top, left + self.size, top + self.size))
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
            # ValueError: PIL's own limits (e.g. "Decompressed data too large"); SyntaxError: some malformed headers.
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


def _to_rgb(im: Any, path: Path) -> Any:
    """An 8-bit RGB image; 16-bit greyscale scaled (not clipped) to 8 bits, deeper modes refused."""
    from PIL import Image

    sixteen = im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG")
    if sixteen:
        v = np.asarray(im, dtype=np.float64)
        return Image.fromarray(np.rint(v / 257.0).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F") or ";" in im.mode:
        raise DataError(
            f"image {path} has pixel mode {im.mode!r} (32-bit integer, float or packed samples), "
            "which has no single 8-bit RGB reading",
            "save it as an 8-bit or 16-bit PNG, or as JPEG",
        )
    return im.convert("RGB")


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
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{base} has {len(classes)} class directories, more than {MAX_CLASSES}")
    cid = {c: i for i, c in enumerate(classes)}
    layout_hint = "paths in the subset file are relative to root, as <class>/<file>"
    if subset is not None:
        listing = regular_file(subset, "subset list", "pass subset=FILE with one relative image path per line")
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"subset list {listing} is not UTF-8 text ({e})", layout_hint) from None
        rel = [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]
        outside = [
            r for r in rel if len(r.split("/")) != 2 or r.split("/")[0] not in cid or r.split("/")[1] in ("", ".", "..")
        ]
        if outside:
            raise DataError(
                f"{len(outside)} listed image(s) are not <class>/<file> under {base} (first: {outside[0]})", layout_hint
            )
        paths = [safe_join(base, *r.split("/"), what="listed image") for r in rel]
        missing = [r for r, p in zip(rel, paths) if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} listed image(s) missing under {base} (first: {missing[0]})", layout_hint)
        ids = np.arange(len(paths))  # ids are positions in the list, stable across runs
    else:
        paths = sorted(p for c in classes for p in (base / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        ids = np.arange(len(paths))
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise DataError(f"n must be a positive integer, not {n!r}", "e.g. n=5000")
    if n is not None:
        paths, ids = paths[: int(n)], ids[: int(n)]
    if not paths:
        raise DataError(f"no images under {base}", f"expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    if len(paths) > MAX_SAMPLES:
        raise DataError(f"{base} holds {len(paths)} images, more than the {MAX_SAMPLES} the harness reads")
    for p in paths:  # stat only: a pipe or a dangling link is refused here, never opened
        regular_file(p, "image", "remove it, or replace it with an image file")
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
