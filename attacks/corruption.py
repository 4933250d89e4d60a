"""Common corruptions (Hendrycks & Dietterich, 2019): the shared base class and batched torch kernels.

A corruption is built with its severity and called as ``c(x, index=ids, seed=s)`` on a batch of
images in [0, 1] (N, C, H, W), C in {1, 3}, on any device. Each corruption first draws its random
parameters from `harness.rng`, keyed by (seed, corruption, global sample id) (`sample`), then applies
a deterministic batched kernel (`transform`); so sample i is corrupted identically whatever the batch
size or its position in the batch.

Parameters come from two tables per corruption: ``preset="cifar"`` (default) holds the values of
``make_cifar_c.py`` that produced CIFAR-10-C, defined on 32x32 images; ``preset="imagenet"`` the values
of the ``imagecorruptions`` package (ImageNet-C, 224x224), used by the oracle tests. Spatial
parameters (blur radii and sigmas, shuffle distances) are multiplied by ``scale``, by default
``min(H, W) / reference size`` (32 or 224), so a corruption blurs the same fraction of the image at
any resolution; ``scale=1`` uses the table values in pixels, as ``imagecorruptions`` does at any size.
See docs/corruptions.md for the per-corruption adaptation notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.errors import UsageError
from harness.params import Param
from harness.rng import keyed_normal, keyed_randint, keyed_uniform, stream_seed
from harness.threat import per_sample

REF_SIZE = {"cifar": 32, "imagenet": 224}
# ITU-R 601 luma, as cv2.COLOR_RGB2GRAY (and skimage/PIL use nearly the same weights).
LUMA = (0.299, 0.587, 0.114)


@dataclass
class Corruption:
    """Base of all corruptions: ``severity`` 1-5, the parameter ``preset`` and the spatial ``scale``."""

    severity: int = 1
    preset: str = "cifar"
    scale: float | None = None

    TABLE: ClassVar[dict[str, list[Any]]] = {}
    PARAMS: ClassVar[dict[str, Param]] = {
        "severity": Param("corruption strength, the row of the parameter table", ge=1, le=5),
        "preset": Param("parameter table: CIFAR-10-C (make_cifar_c.py) or ImageNet-C (imagecorruptions)",
                        choices=tuple(REF_SIZE)),
        "scale": Param("multiplier of spatial parameters (None: image size / the preset's reference size)", gt=0),
    }  # fmt: skip

    @property
    def name(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__)

    @property
    def c(self) -> Any:
        """This severity's row of the preset table."""
        return self.TABLE[self.preset][self.severity - 1]

    def spatial_scale(self, shape: tuple[int, ...]) -> float:
        return float(self.scale) if self.scale is not None else min(shape[-2:]) / REF_SIZE[self.preset]

    def stream(self, seed: int, *tag: object) -> int:
        return stream_seed(seed, self.name, self.severity, *tag)

    # -- the two halves: random parameters, then a pure kernel -----------------------------------
    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Random parameters of every sample, keyed by its global id; none by default."""
        return {}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, *, index: Tensor, seed: int = 0) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UsageError(
                f"corruption {self.name!r} needs images (N, C, H, W) with C = 1 or 3, got {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise UsageError(f"corruption {self.name!r} needs float images in [0, 1], got {x.dtype}")
        index = torch.as_tensor(index, device=x.device).reshape(-1)
        if len(index) != len(x):
            raise UsageError(f"corruption {self.name!r}: {len(index)} sample ids for {len(x)} images")
        with torch.no_grad():
            xf = x.detach().float()
            p = self.sample(index, int(seed), tuple(xf.shape))
            out = self.transform(xf, p)
        return out.clamp_(0.0, 1.0).to(x.dtype)

    def config(self) -> dict[str, Any]:
        c = self.c
        c = c.tolist() if isinstance(c, np.ndarray) else c
        return {"severity": self.severity, "preset": self.preset, "scale": self.scale, "parameters": c}


# ---- keyed draws ---------------------------------------------------------------------------------
def uniform(seed: int, index: Tensor, shape: tuple[int, ...], lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return lo + (hi - lo) * keyed_uniform(seed, index, shape)


def normal(seed: int, index: Tensor, shape: tuple[int, ...]) -> Tensor:
    return keyed_normal(seed, index, shape)


def randint(seed: int, index: Tensor, shape: tuple[int, ...], lo: int, hi: int) -> Tensor:
    """Integers in [lo, hi), as ``np.random.randint(lo, hi)``."""
    return keyed_randint(seed, index, shape, hi - lo) + lo


# ---- padding and filtering -----------------------------------------------------------------------
PAD_MODES = ("edge", "symmetric", "reflect101")


def pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source indices for positions -before .. n-1+after under a border mode.

    ``edge`` repeats the border pixel (skimage/scipy 'nearest'), ``symmetric`` mirrors including it
    (scipy 'reflect', ``d c b a | a b c d``), ``reflect101`` mirrors about it (cv2 default,
    ``d c b | a b c d``). Works for pads larger than the image (repeated mirroring).
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        j = i % period
        return torch.where(j < n, j, period - 1 - j)
    if mode == "reflect101":
        period = 2 * n - 2
        j = i % period
        return torch.where(j < n, j, period - j)
    raise UsageError(f"unknown border mode {mode!r}", f"use one of {', '.join(PAD_MODES)}")


def pad2d(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    if ph:
        x = x.index_select(-2, pad_index(x.shape[-2], ph, ph, mode, x.device))
    if pw:
        x = x.index_select(-1, pad_index(x.shape[-1], pw, pw, mode, x.device))
    return x


def filter2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Same-size correlation of every channel with one 2-D kernel (odd sides)."""
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    xp = pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    return F.conv2d(xp, kernel.to(x)[None, None]).reshape(n, c, h, w)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage's kernel: radius int(truncate * sigma + 0.5), normalised."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float, mode: str = "edge", truncate: float = 4.0) -> Tensor:
    """Separable Gaussian over the last two dims of (N, C, H, W), as skimage.filters.gaussian."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, truncate).to(x)
    r = len(k) // 2
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(pad2d(y, r, 0, mode), k.view(1, 1, -1, 1))
    y = F.conv2d(pad2d(y, 0, r, mode), k.view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def box_blur3(x: Tensor) -> Tensor:
    """cv2.blur(x, (3, 3)) with its default reflect-101 border."""
    return filter2d(x, torch.full((3, 3), 1.0 / 9.0), "reflect101")


def gather_shift(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """out[b, :, h, w] = x[b, :, clamp(h - dy_b), clamp(w - dx_b)]: per-sample shift, border repeated."""
    n, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(0, w - 1)
    y = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return y.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def motion_blur(x: Tensor, radius: float, sigma: float, angle_deg: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage (used by make_cifar_c.py via Wand), batched over per-sample angles.

    A one-sided Gaussian kernel of width 2 * ceil(radius) + 1 along the direction ``angle``; tap i
    reads the image shifted by round-half-down(i * (sin, cos)), borders repeated. Taps that leave the
    image stop the sum (as the numpy port in ``imagecorruptions`` does); weights are not renormalised.
    """
    width = 2 * math.ceil(radius) + 1 if radius > 0 else 3
    sigma = max(sigma, 1e-6)
    k = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).tolist()
    a = torch.deg2rad(angle_deg.double())
    s, co = torch.sin(a), torch.cos(a)
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    alive = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for i in range(width):
        dy = -torch.ceil(i * s - 0.5).long()
        dx = -torch.ceil(i * co - 0.5).long()
        alive &= (dy.abs() < h) & (dx.abs() < w)
        wgt = per_sample(k[i] * alive.to(x.dtype), x)
        out += wgt * gather_shift(x, dy, dx)
    return out


def clipped_zoom(x: Tensor, z: float, trim: str = "center") -> Tensor:
    """Zoom into the centre by ``z`` (scipy.ndimage.zoom, order 1) and crop back to the input size.

    ``trim="center"`` crops the centre (make_cifar_c.py), ``"start"`` the top-left corner
    (``imagecorruptions``); they differ by at most a pixel of offset.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / z), math.ceil(w / z)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    oh, ow = round(ch * z), round(cw * z)
    y = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    if trim == "center":
        t, lft = (oh - h) // 2, (ow - w) // 2
        return y[..., t : t + h, lft : lft + w]
    return y[..., :h, :w]


def plasma_fractal(seed: int, index: Tensor, mapsize: int, wibbledecay: float) -> Tensor:
    """Diamond-square height maps (the fog/frost texture of the reference), (N, mapsize, mapsize) in [0, 1].

    Same recursion as the reference: each midpoint is the mean of its four parents plus
    ``wibble * U(-wibble, wibble)``, ``wibble`` starting at 100 and divided by ``wibbledecay`` per
    level; one keyed uniform stream per level and fill, so every sample has its own map.
    """
    n = len(index)
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=index.device)
    step, wibble, level = mapsize, 100.0, 0

    def noise(tag: str, shape: tuple[int, ...]) -> Tensor:
        u = keyed_uniform(stream_seed(seed, "plasma", level, tag), index, shape, torch.float64)
        return wibble * wibble * (2.0 * u - 1.0)

    while step >= 2:
        half = step // 2
        g = mapsize // step
        corner = m[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = sq / 4 + noise("square", (g, g))
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + dr.roll(1, 1) + ul + ul.roll(-1, 2)
        tt = dr + dr.roll(1, 2) + ul + ul.roll(-1, 1)
        m[:, 0::step, half::step] = lt / 4 + noise("diamond-a", (g, g))
        m[:, half::step, 0::step] = tt / 4 + noise("diamond-b", (g, g))
        step, wibble, level = half, wibble / wibbledecay, level + 1
    flat = m.view(n, -1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / flat.max(1, keepdim=True).values.clamp_min(1e-12)
    return flat.view(n, mapsize, mapsize).float()


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def gray(x: Tensor, weights: tuple[float, float, float] = LUMA) -> Tensor:
    """(N, 1, H, W) luma of RGB images; a 1-channel image is its own gray."""
    if x.shape[1] == 1:
        return x
    wt = torch.tensor(weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * wt).sum(1, keepdim=True)


def colour(rgb: tuple[float, float, float], channels: int, device: torch.device) -> Tensor:
    """A (1, C, 1, 1) colour in [0, 1] from 0-255 RGB; its luma (weights 0.2989/0.587/0.114) for C = 1."""
    t = torch.tensor(rgb, dtype=torch.float32, device=device) / 255.0
    if channels == 1:
        t = (t * torch.tensor((0.2989, 0.5870, 0.1140), device=device)).sum().view(1)
    return t.view(1, channels, 1, 1)
