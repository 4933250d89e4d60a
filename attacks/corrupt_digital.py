"""Digital corruptions: brightness, contrast, saturate, pixelate, JPEG and the elastic transform.

Brightness and saturate act on HSV value / saturation; both are computed in closed form on RGB
(no HSV round trip), which equals skimage's rgb2hsv/hsv2rgb up to float rounding.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.registry import CORRUPTIONS

from .corruption import Corruption, gaussian_blur, uniform


@CORRUPTIONS.register("brightness")
class Brightness(Corruption):
    """Brightness: HSV value V -> min(V + c, 1) at fixed hue and saturation (plain x + c on 1 channel)."""

    TABLE = {"cifar": [0.05, 0.1, 0.15, 0.2, 0.3], "imagenet": [0.1, 0.2, 0.3, 0.4, 0.5]}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        v = x.amax(1, keepdim=True)
        v2 = (v + self.c).clamp(max=1.0)
        # at fixed H and S every channel is proportional to V; black pixels (S = 0) become grey V'
        return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x))


@CORRUPTIONS.register("saturate")
class Saturate(Corruption):
    """Saturation S -> clip(a S + b) at fixed hue and value (extra corruption; identity on 1 channel).

    On grey pixels skimage assigns hue 0, so b > 0 tints them red, as in the reference. A 1-channel
    image is grey everywhere and the reference returns its red channel, which equals V: unchanged.
    """

    TABLE = {
        "cifar": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
        "imagenet": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
    }

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        if x.shape[1] == 1:
            return x
        a, b = self.c
        v = x.amax(1, keepdim=True)
        mn = x.amin(1, keepdim=True)
        s = torch.where(v > 0, (v - mn) / v.clamp_min(1e-12), torch.zeros_like(v))
        s2 = (s * a + b).clamp(0, 1)
        # channel = V - V S k with k in [0, 1] fixed by the hue; grey pixels have hue 0 (red): k = (0, 1, 1)
        k = torch.where(
            s > 0, (v - x) / (v * s).clamp_min(1e-12), torch.tensor([0.0, 1.0, 1.0], device=x.device).view(1, 3, 1, 1)
        )
        return v - v * s2 * k


@CORRUPTIONS.register("contrast")
class Contrast(Corruption):
    """Contrast: (x - m) * c + m with m the per-image, per-channel mean."""

    TABLE = {"cifar": [0.75, 0.5, 0.4, 0.3, 0.15], "imagenet": [0.4, 0.3, 0.2, 0.1, 0.05]}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        m = x.mean((2, 3), keepdim=True)
        return (x - m) * self.c + m


def box_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """PIL's BOX downsampling as a matrix: output i averages the inputs whose centres fall in its footprint."""
    s = n_in / n_out
    centres = torch.arange(n_in, device=device, dtype=torch.float64) + 0.5
    i = torch.arange(n_out, device=device, dtype=torch.float64)[:, None]
    m = ((centres[None] > i * s) & (centres[None] <= (i + 1) * s)).double()
    return (m / m.sum(1, keepdim=True)).float()


@CORRUPTIONS.register("pixelate")
class Pixelate(Corruption):
    """Pixelate: box-downsample to c times the size, then upsample back (nearest pixel centres)."""

    TABLE = {"cifar": [0.95, 0.9, 0.85, 0.75, 0.65], "imagenet": [0.6, 0.5, 0.4, 0.3, 0.25]}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        h, w = x.shape[-2:]
        oh, ow = max(1, int(h * self.c)), max(1, int(w * self.c))
        small = torch.einsum("ih,nchw,jw->ncij", box_matrix(h, oh, x.device), x, box_matrix(w, ow, x.device))
        # PIL NEAREST: source index floor((i + 0.5) * in / out); make_cifar_c's BOX upsampling
        # picks the same pixel except where a centre falls exactly on a boundary
        rows = ((torch.arange(h, device=x.device) + 0.5) * oh / h).long().clamp(max=oh - 1)
        cols = ((torch.arange(w, device=x.device) + 0.5) * ow / w).long().clamp(max=ow - 1)
        return small[:, :, rows][:, :, :, cols]


@CORRUPTIONS.register("jpeg_compression")
class JpegCompression(Corruption):
    """JPEG round trip at quality c (PIL's libjpeg, as the reference; 8-bit input, default 4:2:0 chroma).

    The codec runs on the CPU, one image at a time (there is no batched JPEG codec; torchvision.io's
    is deprecated); the result goes back to the input's device. Using PIL like the reference makes
    the output equal to it bit for bit on the same 8-bit image. 1-channel images are coded as
    greyscale JPEG (the reference codes grey-as-RGB, whose luma plane is the same).
    """

    TABLE = {"cifar": [80, 65, 58, 50, 40], "imagenet": [25, 18, 15, 10, 7]}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        from PIL import Image

        u8 = torch.round(x * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(u8)
        for i, im in enumerate(u8):
            buf = io.BytesIO()
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(buf, "JPEG", quality=int(self.c))
            out[i] = np.asarray(Image.open(buf)).reshape(im.shape)
        return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).float() / 255


@CORRUPTIONS.register("elastic_transform")
class ElasticTransform(Corruption):
    """Elastic: a random affine jitter of three anchor points, then a smoothed random displacement field.

    Amplitudes and sigmas are fractions of the image size in both tables (make_cifar_c.py writes them
    as ``IMSIZE * k``, ``imagecorruptions`` as ``0.01 * size``), so ``scale`` does not apply here.
    Bilinear sampling; the affine step mirrors about border pixels (cv2 reflect-101), the displacement
    step about border edges (scipy 'reflect').
    """

    # (displacement amplitude, displacement sigma, affine jitter), each times the image size
    TABLE = {
        "cifar": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
        "imagenet": [(0.0625, 0.01, 0), (0.08125, 0.01, 0), (0.10625, 0.01, 0), (0.125, 0.01, 0), (0.15, 0.01, 0)],
    }

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        h, w = shape[-2:]
        size = min(h, w)
        a = self.c[2] * size
        return {
            "jitter": uniform(self.stream(seed, "affine"), index, (3, 2), -a, a) if a > 0 else None,
            "dx": uniform(self.stream(seed, "dx"), index, (1, h, w), -1.0, 1.0),
            "dy": uniform(self.stream(seed, "dy"), index, (1, h, w), -1.0, 1.0),
        }  # type: ignore[dict-item]

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        n, _, h, w = x.shape
        size = min(h, w)
        amp, sigma, _ = self.c
        dev = x.device
        yy, xx = torch.meshgrid(
            torch.arange(h, device=dev, dtype=torch.float32),
            torch.arange(w, device=dev, dtype=torch.float32),
            indexing="ij",
        )
        if p["jitter"] is not None:
            c = torch.tensor([h // 2, w // 2], dtype=torch.float32, device=dev)
            sq = float(size // 3)
            pts1 = torch.stack([c + sq, torch.stack([c[0] + sq, c[1] - sq]), c - sq])  # (x, y) anchors
            pts2 = pts1[None] + p["jitter"]
            # the warp maps pts1 -> pts2; sampling needs its inverse, the affine map pts2 -> pts1
            p2h = torch.cat([pts2, torch.ones(n, 3, 1, device=dev)], 2).double()
            inv_t = torch.linalg.solve(p2h, pts1[None].double().expand(n, 3, 2)).float()  # (n, 3, 2)
            grid_in = torch.stack([xx, yy, torch.ones_like(xx)], -1).view(1, h * w, 3)
            src = (grid_in @ inv_t).view(n, h, w, 2)
            norm = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], -1)
            x = F.grid_sample(x, norm, mode="bilinear", padding_mode="reflection", align_corners=True)
        if amp > 0:
            sd = sigma * size
            dx = gaussian_blur(p["dx"], sd, "symmetric", truncate=3.0)[:, 0] * amp * size
            dy = gaussian_blur(p["dy"], sd, "symmetric", truncate=3.0)[:, 0] * amp * size
            gx = (2 * (xx + dx) + 1) / w - 1
            gy = (2 * (yy + dy) + 1) / h - 1
            x = F.grid_sample(
                x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="reflection", align_corners=False
            )
        return x
