"""Helpers for the imagecorruptions oracle: test images and the numpy-2 / scikit-image-0.26 shims."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

NAMES = {"elastic_transform": "elastic_transform"}


def coloured_digits(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 3) uint8 images: sklearn digits upsampled, two random colours plus smooth shading."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.RandomState(seed)
    rows = rng.choice(len(d.images), n, replace=False)
    strokes = torch.from_numpy((d.images[rows] / 16.0).astype(np.float32))[:, None]
    strokes = F.interpolate(strokes, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    fg = torch.from_numpy(rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32))
    bg = torch.from_numpy(rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32))
    shade = torch.from_numpy(rng.normal(0, 0.08, (n, 3, 4, 4)).astype(np.float32))
    shade = F.interpolate(shade, size=(size, size), mode="bicubic", align_corners=False)
    x = (bg * (1 - strokes) + fg * strokes + shade).clamp(0, 1)
    u8 = np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    return u8, d.target[rows]


@contextlib.contextmanager
def shimmed_imagecorruptions() -> Iterator[object]:
    """imagecorruptions 1.1.2 under numpy 2 / scikit-image 0.26: restore np.float_, map multichannel=."""
    import imagecorruptions.corruptions as ic
    from skimage.filters import gaussian as sk_gaussian

    def gaussian(image, sigma=1, multichannel=None, **kw):  # type: ignore[no-untyped-def]
        if multichannel:
            kw["channel_axis"] = -1
        return sk_gaussian(image, sigma=sigma, **kw)

    had_float = hasattr(np, "float_")
    old_gauss = ic.gaussian
    ic.gaussian = gaussian
    if not had_float:
        np.float_ = np.float64  # type: ignore[attr-defined]
    try:
        yield ic
    finally:
        ic.gaussian = old_gauss
        if not had_float:
            del np.float_  # type: ignore[attr-defined]


def oracle(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """imagecorruptions.corrupt image by image (its own global numpy stream, seeded once)."""
    import imagecorruptions

    np.random.seed(seed)
    with shimmed_imagecorruptions():
        return np.stack([imagecorruptions.corrupt(im, corruption_name=name, severity=severity) for im in images])


def ours(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Our batched corruption with the imagecorruptions parameter table in pixels (preset imagenet, scale 1)."""
    from harness.registry import CORRUPTIONS

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    c = CORRUPTIONS.create(name, severity=severity, preset="imagenet", scale=1.0)
    y = c(x, index=torch.arange(len(x)), seed=seed)
    # the reference returns uint8 (truncating); compare like with like
    return np.floor(y.permute(0, 2, 3, 1).numpy() * 255 + 1e-4).astype(np.uint8)


def stats(clean: np.ndarray, out: np.ndarray) -> dict[str, object]:
    """Mean absolute change (0-1 scale), mean PSNR (dB, capped at 60) and per-channel output means."""
    a = clean.astype(np.float64) / 255
    b = out.astype(np.float64) / 255
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    psnr = np.minimum(10 * np.log10(1.0 / np.maximum(mse, 1e-12)), 60.0)
    return {"mac": float(np.abs(a - b).mean()), "psnr": float(psnr.mean()), "chan": b.mean((0, 1, 2))}
