"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Pixel-wise, so they need no size adaptation; each channel gets its own draw, as in the reference.
The draws come from keyed counter-based streams, so they cannot equal numpy's: only the
distributions match the reference (tests compare statistics, not pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.registry import CORRUPTIONS

from .corruption import Corruption, normal, uniform

# Below this rate the Poisson quantile is found by exact sequential search; above it by the
# Cornish-Fisher expansion of the normal quantile, whose error in mean/variance is < 1 % there.
_EXACT_POISSON_BELOW = 20.0


def poisson_from_uniform(lam: Tensor, u: Tensor) -> Tensor:
    """Poisson(lam) draws by inverting one uniform each (so a draw depends only on its own u)."""
    lam = lam.double()
    u = u.double()
    small = lam < _EXACT_POISSON_BELOW
    # exact inversion: smallest k with CDF(k) >= u; 3 * threshold terms cover u < 1 - 1e-12
    p = torch.exp(-lam.clamp(max=_EXACT_POISSON_BELOW))
    cdf = p.clone()
    k = torch.zeros_like(lam)
    for j in range(1, int(3 * _EXACT_POISSON_BELOW) + 1):
        k = k + (cdf < u).double()
        p = p * lam.clamp(max=_EXACT_POISSON_BELOW) / j
        cdf = cdf + p
    # large rates: normal quantile with the Cornish-Fisher skew term, continuity-corrected
    z = torch.special.ndtri(u)
    big = torch.floor(lam + lam.sqrt() * z + (z * z - 1) / 6 + 0.5).clamp_min(0)
    return torch.where(small, k, big).float()


@CORRUPTIONS.register("gaussian_noise")
class GaussianNoise(Corruption):
    """Additive Gaussian noise x + N(0, c^2) per pixel and channel."""

    TABLE = {"cifar": [0.04, 0.06, 0.08, 0.09, 0.10], "imagenet": [0.08, 0.12, 0.18, 0.26, 0.38]}

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"z": normal(self.stream(seed, "z"), index, shape[1:])}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        return x + self.c * p["z"]


@CORRUPTIONS.register("shot_noise")
class ShotNoise(Corruption):
    """Photon (Poisson) noise: Poisson(c * x) / c per pixel and channel."""

    TABLE = {"cifar": [500, 250, 100, 75, 50], "imagenet": [60, 25, 12, 5, 3]}

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"u": uniform(self.stream(seed, "u"), index, shape[1:])}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        c = float(self.c)
        return poisson_from_uniform(x * c, p["u"]) / c


@CORRUPTIONS.register("impulse_noise")
class ImpulseNoise(Corruption):
    """Salt-and-pepper noise: a fraction c of pixel values set to 0 or 1 (equal odds), as skimage's 's&p'."""

    TABLE = {"cifar": [0.01, 0.02, 0.03, 0.05, 0.07], "imagenet": [0.03, 0.06, 0.09, 0.17, 0.27]}

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {
            "flip": uniform(self.stream(seed, "flip"), index, shape[1:]),
            "salt": uniform(self.stream(seed, "salt"), index, shape[1:]),
        }

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        flipped = p["flip"] <= self.c
        salt = p["salt"] <= 0.5
        return torch.where(flipped, salt.to(x.dtype), x)


@CORRUPTIONS.register("speckle_noise")
class SpeckleNoise(Corruption):
    """Multiplicative Gaussian noise x + x * N(0, c^2) (extra corruption)."""

    TABLE = {"cifar": [0.06, 0.1, 0.12, 0.16, 0.2], "imagenet": [0.15, 0.2, 0.35, 0.45, 0.6]}

    def sample(self, index: Tensor, seed: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"z": normal(self.stream(seed, "z"), index, shape[1:])}

    def transform(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        return x + x * self.c * p["z"]
