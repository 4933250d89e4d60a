"""Blur corruptions: defocus, glass, motion, zoom and gaussian blur.

Radii, sigmas and shuffle distances are in pixels of the reference size and are multiplied by the
spatial scale (see `attacks.corruption`); zoom factors are scale-free.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from harness.registry import CORRUPTIONS

from .corruption import Corruption, clipped_zoom, filter2d, gaussian_blur, motion_blur, randint, uniform


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's defocus kernel: an aliased disk on a >= 17x17 grid, smoothed by a small Gaussian.

    The smoothing is cv2.GaussianBlur with a 3x3 (radius <= 8) or 5x5 kernel and reflect-101 border,
    as in the reference; the result is trimmed to its non-zero support (which changes nothing).
    """
    r = max(8, math.ceil(radius))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).double()
    disk /= disk.sum()
    ks = 3 if radius <= 8 else 5
    g = torch.arange(ks, dtype=torch.float64) - ks // 2
    g = torch.exp(-(g**2) / (2 * max(alias_blur, 1e-6) ** 2))
    g = g / g.sum()
    k = filter2d(disk[None, None], torch.outer(g, g), "reflect101")[0, 0]
    nz = (k.abs() > 0).nonzero()
    lo, hi = nz.min(0).values, nz.max(0).values
    # keep it square and centred (odd side) so correlation stays centred
    half = int(max(r - lo.min(), hi.max() - r))
    return k[r - half : r + half + 1, r - half : r + half + 1].float()


@CORRUPTIONS.register("defocus_blur")
class DefocusBlur(Corruption):
    """Defocus: convolution with an anti-aliased disk of radius c (reflect-101 border, as cv2.filter2D)."""

    TABLE = {
        "cifar": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "imagenet": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    }

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        s = self.spatial_scale(x.shape)
        return filter2d(x, disk_kernel(self.c[0] * s, self.c[1] * s), "reflect101")


@CORRUPTIONS.register("gaussian_blur")
class GaussianBlur(Corruption):
    """Gaussian blur with sigma c (border repeated, truncated at 4 sigma, as skimage) (extra corruption)."""

    TABLE = {"cifar": [0.4, 0.6, 0.7, 0.8, 1.0], "imagenet": [1, 2, 3, 4, 6]}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        return gaussian_blur(x, self.c * self.spatial_scale(x.shape))


@CORRUPTIONS.register("glass_blur")
class GlassBlur(Corruption):
    """Frosted glass: blur, quantise to 8 bits, locally scramble pixels, blur again.

    The reference's "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` acts on numpy views, so it
    only copies pixel (h', w') onto (h, w); CIFAR-10-C was made that way and so is this. The loop is
    sequential (later copies read already-copied pixels) and is kept exactly, vectorised over the
    batch; offsets are drawn in [-d, d) like ``np.random.randint(-d, d)``, from keyed streams.
    """

    TABLE = {
        "cifar": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "imagenet": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    }

    def _geometry(self, shape: tuple[int, ...]) -> tuple[float, int, int, list[int], list[int]]:
        s = self.spatial_scale(shape)
        sigma, d, iters = self.c
        d = max(1, round(d * s))
        h, w = shape[-2:]
        return sigma * s, d, iters, list(range(h - d, d, -1)), list(range(w - d, d, -1))

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        _, d, iters, hs, ws = self._geometry(shape)
        return {"off": randint(self.stream(seed, "offsets"), index, (iters, len(hs) * len(ws), 2), -d, d)}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        sigma, _, iters, hs, ws = self._geometry(x.shape)
        n, c, h, w = x.shape
        x = torch.floor(gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255
        pos_list = [hh * w + ww for hh in hs for ww in ws]
        pos = torch.tensor(pos_list, device=x.device)
        off = p["off"]
        # target of each swap: (h + dy, w + dx), with dx drawn first as in the reference
        tgt = pos[None, None] + off[..., 1] * w + off[..., 0]  # (n, iters, steps)
        perm = torch.arange(h * w, device=x.device).repeat(n, 1)
        rows = torch.arange(n, device=x.device)
        for it in range(iters):
            for j, a in enumerate(pos_list):
                perm[:, a] = perm[rows, tgt[:, it, j]]
        x = x.reshape(n, c, h * w).gather(2, perm[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)
        return gaussian_blur(x, sigma)


@CORRUPTIONS.register("motion_blur")
class MotionBlur(Corruption):
    """Motion blur along a random direction in [-45, 45] degrees (ImageMagick's kernel, radius and sigma c)."""

    TABLE = {
        "cifar": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "imagenet": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    }

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"angle": uniform(self.stream(seed, "angle"), index, (), -45.0, 45.0)}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        s = self.spatial_scale(x.shape)
        return motion_blur(x, self.c[0] * s, self.c[1] * s, p["angle"])


@CORRUPTIONS.register("zoom_blur")
class ZoomBlur(Corruption):
    """Zoom blur: the mean of the image and its centre zooms by 1 .. c (deterministic, scale-free)."""

    TABLE = {
        "cifar": [np.arange(1, stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)],
        "imagenet": [np.arange(1, stop, step) for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02))]
        + [np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
    }

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        trim = "center" if self.preset == "cifar" else "start"
        out = x.clone()
        for z in self.c.tolist():
            out += clipped_zoom(x, float(z), trim)
        return out / (len(self.c) + 1)
