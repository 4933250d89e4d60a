"""Our corruptions against the `imagecorruptions` package (numpy reference) on the same images.

The oracle has the ImageNet-C parameter table, so we run ours with ``preset="imagenet", scale=1``
(table values in pixels, as the package applies them to any size) on 32x32x3 coloured digits. The
random streams differ (keyed counter-based vs numpy's global stream), so outputs cannot be equal
pixel for pixel; we compare statistics per image, paired on the same clean image:

- mean absolute change (0-1 scale), PSNR (dB, capped at 60) and per-channel output means;
- a difference passes when |mean_i (ours_i - ref_i)| <= 4 standard errors of that paired mean
  (the sampling noise of two independent random streams over n images) + a floor for
  deterministic approximation error: 1/255 (one grey level: the reference truncates to uint8,
  interpolation/rounding differ by that) and 0.3 dB.
- wider floors where the method differs by design: spatter (torch re-implementation of OpenCV's
  Canny / distance transform / histogram equalisation: 1.5/255, 1 dB) and frost (procedural
  texture with the photographs' colour statistics instead of the photographs: 0.04, 1.5 dB).
JPEG uses the same codec (PIL) and is checked for equality.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("imagecorruptions")

from harness.registry import CORRUPTIONS
from tests.attacks.corruption_oracle import coloured_digits, oracle, ours

FLOOR = {"mac": 1 / 255, "psnr": 0.3, "chan": 1 / 255}
WIDER = {
    "spatter": {"mac": 1.5 / 255, "psnr": 1.0, "chan": 1.5 / 255},
    "frost": {"mac": 0.04, "psnr": 1.5, "chan": 0.04},
}


def per_image(clean: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    a = clean.astype(np.float64) / 255
    b = out.astype(np.float64) / 255
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return {
        "mac": np.abs(a - b).reshape(len(a), -1).mean(1),
        "psnr": np.minimum(10 * np.log10(1.0 / np.maximum(mse, 1e-12)), 60.0),
        "chan": b.mean((1, 2)),  # (n, 3)
    }


def compare(name: str, severity: int, n: int) -> None:
    imgs, _ = coloured_digits(n, seed=3)
    ref, mine = oracle(imgs, name, severity, seed=severity), ours(imgs, name, severity, seed=severity)
    assert mine.shape == ref.shape
    if name == "jpeg_compression":
        np.testing.assert_array_equal(mine, ref)
        return
    pr, pm = per_image(imgs, ref), per_image(imgs, mine)
    floor = WIDER.get(name, FLOOR)
    for stat in ("mac", "psnr", "chan"):
        d = pm[stat] - pr[stat]
        se = d.std(0, ddof=1) / np.sqrt(n)
        tol = 4 * se + floor[stat]
        assert np.all(np.abs(d.mean(0)) <= tol), (
            f"{name} severity {severity}: {stat} ours {pm[stat].mean(0)} vs imagecorruptions {pr[stat].mean(0)} "
            f"(difference {d.mean(0)}, tolerance {tol})"
        )


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_statistics_match_imagecorruptions(name):
    for severity in range(1, 6):
        compare(name, severity, n=16)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_statistics_match_imagecorruptions_many_images(name):
    for severity in range(1, 6):
        compare(name, severity, n=96)
