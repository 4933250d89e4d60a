"""Weather corruptions: snow, frost, fog and spatter (the last an extra corruption).

All four build a random layer per sample (keyed by its id) and blend it into the image. Frost uses a
procedural texture instead of the reference's photographs (see `FROST_PALETTES`); spatter replaces
OpenCV's Canny / distance transform / histogram equalisation by batched torch equivalents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.registry import CORRUPTIONS

from .corruption import (
    Corruption,
    box_blur3,
    clipped_zoom,
    colour,
    filter2d,
    gaussian_blur,
    gray,
    motion_blur,
    next_pow2,
    normal,
    plasma_fractal,
    randint,
    uniform,
)


@CORRUPTIONS.register("snow")
class Snow(Corruption):
    """Snow: a thresholded, zoomed, motion-blurred noise layer (and its 180-degree turn) over a whitened image."""

    # (mean, std, zoom, threshold, blur radius, blur sigma, blend)
    TABLE = {
        "cifar": [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ],
        "imagenet": [
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ],
    }

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {
            "z": normal(self.stream(seed, "layer"), index, (1, *shape[-2:])),
            "angle": uniform(self.stream(seed, "angle"), index, (), -135.0, -45.0),
        }

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        loc, sd, zoom, thr, radius, sigma, blend = self.c
        s = self.spatial_scale(x.shape)
        layer = clipped_zoom(loc + sd * p["z"], zoom, "center" if self.preset == "cifar" else "start")
        layer = torch.where(layer < thr, torch.zeros_like(layer), layer).clamp(0, 1)
        if self.preset == "cifar":  # make_cifar_c.py passes the layer through an 8-bit PNG first
            layer = torch.floor(layer * 255) / 255
        layer = motion_blur(layer, radius * s, sigma * s, p["angle"])
        layer = torch.round(layer * 255) / 255
        x = blend * x + (1 - blend) * torch.maximum(x, gray(x) * 1.5 + 0.5)
        return x + layer + layer.flip(-2, -1)


# Mean and standard deviation (RGB, in [0, 1]) of the five frost photographs the reference draws
# from (frost1.png .. frost5.jpg of `imagecorruptions`), measured once; the procedural texture takes
# one of these palettes per sample, so the corruption's mean/contrast statistics follow the reference.
FROST_PALETTES = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163)),
)


def frost_texture(seed: int, index: Tensor, h: int, w: int, palette: Tensor) -> Tensor:
    """A procedural ice texture (N, 3, h, w) in [0, 1]: smooth fractal haze plus thin bright ridges.

    Ridges are ``(1 - |2 f - 1|)^6`` of a rough fractal f (the zero level set of f becomes a network
    of thin lines, like ice crystals); the sum is standardised per sample and coloured with the
    sample's palette (mean + std * texture, channels fully correlated as in the photographs).
    """
    size = next_pow2(max(h, w))
    haze = plasma_fractal(seed ^ 0x1, index, size, 2.0)[:, :h, :w]
    rough = plasma_fractal(seed ^ 0x2, index, size, 1.3)[:, :h, :w]
    ridges = (1 - (2 * rough - 1).abs()) ** 6
    t = 0.5 * haze + ridges
    t = (t - t.mean((1, 2), keepdim=True)) / t.std((1, 2), keepdim=True).clamp_min(1e-6)
    pal = torch.tensor(FROST_PALETTES, dtype=torch.float32, device=index.device)[palette]  # (n, 2, 3)
    return (pal[:, 0, :, None, None] + pal[:, 1, :, None, None] * t[:, None]).clamp(0, 1)


@CORRUPTIONS.register("frost")
class Frost(Corruption):
    """Frost: c0 * image + c1 * ice texture (procedural, with the reference photographs' colour statistics)."""

    TABLE = {
        "cifar": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    }

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        h, w = shape[-2:]
        palette = randint(self.stream(seed, "palette"), index, (), 0, len(FROST_PALETTES))
        return {"texture": frost_texture(self.stream(seed, "texture"), index, h, w, palette)}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        tex = p["texture"].to(x)
        if x.shape[1] == 1:
            tex = gray(tex, (0.2989, 0.5870, 0.1140))
        return self.c[0] * x + self.c[1] * tex


@CORRUPTIONS.register("fog")
class Fog(Corruption):
    """Fog: adds c0 * a diamond-square fractal (roughness c1) and rescales by max / (max + c0)."""

    TABLE = {
        "cifar": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "imagenet": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
    }

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        h, w = shape[-2:]
        m = plasma_fractal(self.stream(seed, "plasma"), index, next_pow2(max(h, w)), float(self.c[1]))
        return {"fog": m[:, None, :h, :w]}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        c0 = self.c[0]
        max_val = x.amax((1, 2, 3), keepdim=True)
        return (x + c0 * p["fog"].to(x)) * max_val / (max_val + c0)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def _max3(x: Tensor) -> Tensor:
    return F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def canny(img: Tensor, low: float, high: float) -> Tensor:
    """Edges of (N, 1, H, W) 8-bit-valued images like cv2.Canny (L1 Sobel magnitude, 2-way NMS, hysteresis)."""
    gx = filter2d(img, _SOBEL_X, "reflect101")
    gy = filter2d(img, _SOBEL_X.T.contiguous(), "reflect101")
    mag = gx.abs() + gy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))
    left, right = mp[..., 1:-1, :-2], mp[..., 1:-1, 2:]
    up, down = mp[..., :-2, 1:-1], mp[..., 2:, 1:-1]
    horiz = gx.abs() >= gy.abs()
    peak = torch.where(horiz, (mag > left) & (mag >= right), (mag > up) & (mag >= down))
    strong = peak & (mag > high)
    weak = peak & (mag > low)
    for _ in range(max(img.shape[-2:])):  # hysteresis: grow strong edges along weak ones
        grown = strong | (weak & (_max3(strong.float()) > 0))
        if torch.equal(grown, strong):
            break
        strong = grown
    return strong


def distance_to(edges: Tensor, cap: float) -> Tensor:
    """Chamfer (1, 1.4) distance of each pixel to the nearest edge pixel, capped at ``cap`` (cv2 DIST_L2 mask 3)."""
    big = cap + 2.0
    d = torch.where(
        edges, torch.zeros_like(edges, dtype=torch.float32), torch.full_like(edges, big, dtype=torch.float32)
    )
    wts = torch.tensor([1.4, 1.0, 1.4, 1.0, 0.0, 1.0, 1.4, 1.0, 1.4], device=d.device).view(1, 9, 1, 1)
    n, _, h, w = d.shape
    for _ in range(int(cap) + 1):
        nb = F.unfold(F.pad(d, (1, 1, 1, 1), value=big), 3).view(n, 9, h, w)
        d = (nb + wts).amin(1, keepdim=True)
    return d.clamp(max=cap)


def equalize_hist(img: Tensor, levels: int) -> Tensor:
    """cv2.equalizeHist for (N, 1, H, W) integer-valued images with values < ``levels``."""
    n = len(img)
    v = img.long().view(n, -1)
    hist = torch.zeros(n, levels, device=img.device).scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    total = v.shape[1]
    first = (hist > 0).float().argmax(1, keepdim=True)
    h0 = hist.gather(1, first)
    cdf = hist.cumsum(1)
    lut = torch.round((cdf - h0) * 255.0 / (total - h0).clamp_min(1)).clamp(0, 255)
    lut = torch.where(h0 >= total, first.float().expand_as(lut), lut)
    return lut.gather(1, v).view_as(img)


@CORRUPTIONS.register("spatter")
class Spatter(Corruption):
    """Spatter: turquoise water drops (severity 1-3) or brown mud blotches (4-5) from a thresholded noise layer.

    The water branch follows the reference's OpenCV pipeline (Canny, L2 distance transform capped
    at 20, 3x3 blur, histogram equalisation, emboss, blur) with batched torch versions of each step;
    they agree with OpenCV in kind but not bit for bit, hence the wider oracle tolerance.
    """

    # (mean, std, sigma, threshold, intensity or mud sigma, 0 water / 1 mud)
    TABLE = {
        "cifar": [
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ],
        "imagenet": [
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ],
    }

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"z": normal(self.stream(seed, "liquid"), index, (1, *shape[-2:]))}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        loc, sd, sigma, thr, k, mud = self.c
        s = self.spatial_scale(x.shape)
        liquid = gaussian_blur(loc + sd * p["z"], sigma * s)
        liquid = torch.where(liquid < thr, torch.zeros_like(liquid), liquid)
        ch = x.shape[1]
        if not mud:
            lq8 = torch.floor(liquid * 255).clamp(0, 255)
            dist = distance_to(canny(lq8, 50, 150), 20.0)
            dist = torch.floor(box_blur3(dist))
            dist = equalize_hist(dist, 21)
            dist = torch.round(filter2d(dist, _EMBOSS, "reflect101")).clamp(0, 255)
            dist = box_blur3(dist)
            m = lq8 * dist
            m = m / m.amax((1, 2, 3), keepdim=True).clamp_min(1e-12) * k
            return x + (m * colour((175, 238, 238), ch, x.device)).clamp(0, 1)
        m = gaussian_blur((liquid > thr).float(), k * s)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        return x * (1 - m) + colour((63, 42, 20), ch, x.device) * m
