"""The shared contract of every registered corruption, plus exact checks of the closed-form ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.corrupt_noise import poisson_from_uniform
from harness.errors import UsageError
from harness.registry import CORRUPTIONS
from tests.attacks.corruption_oracle import coloured_digits

NAMES = CORRUPTIONS.names()
DETERMINISTIC = {"brightness", "contrast", "defocus_blur", "gaussian_blur", "jpeg_compression", "pixelate"}
DETERMINISTIC |= {"saturate", "zoom_blur"}
# Severities whose pixel distance is not monotone in the CIFAR-10-C table itself: elastic trades
# affine jitter (large at severity 1) for local warping, glass blur's iterations jump at 4, frost's
# image weight and texture weight change together, spatter switches from water to mud at 4, and
# saturate first removes (1-2) then adds (3-5) saturation.
NOT_MONOTONE = {"elastic_transform", "glass_blur", "frost", "spatter", "saturate"}


@pytest.fixture(scope="module")
def colour_batch() -> torch.Tensor:
    imgs, _ = coloured_digits(12, seed=1)
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def digits_batch() -> torch.Tensor:
    from harness.data.digits import digits

    return digits().x[:10].clone()


def assert_close_across_batch_plans(a: torch.Tensor, b: torch.Tensor) -> None:
    """Corruption outputs of one sample under two batch plans (other kernel sums: docs/reliability.md).

    A corruption is a fixed sequence of float operations per pixel, with no feedback, so batch-shape
    dependent kernels (convolutions, interpolation) move a pixel by a few float32 ulps: 2e-6 is 16
    ulps of 1.0. Corruptions that quantise to 1/255 after such a kernel (glass blur, spatter) move a
    pixel by one step where its pre-rounding value is within that noise of a step boundary: about
    2 x 255 x 1e-6, 1 pixel in 2000, so at most 1 in 1000 may differ, by one step.
    """
    d = (a - b).abs()
    off = d > 2e-6
    assert (d[off] <= 1 / 255 + 2e-6).all(), float(d.max())
    assert float(off.float().mean()) <= 1e-3, int(off.sum())


def test_all_nineteen_registered():
    assert len(NAMES) == 19
    assert {"gaussian_noise", "frost", "jpeg_compression", "speckle_noise", "spatter", "saturate"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape_range_determinism_batch_independence(name, colour_batch, digits_batch):
    for x in (colour_batch, digits_batch):
        ids = torch.arange(100, 100 + len(x))
        c = CORRUPTIONS.create(name, severity=3)
        y = c(x, index=ids, seed=7)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, c(x, index=ids, seed=7)), "same seed must give the same output"
        # a sample's corruption depends on its id only: other batch sizes and orders give the same
        perm = torch.tensor([3, 0, 7, 1, 9, 2, 8, 4, 6, 5, *range(10, len(x))])
        parts = [c(x[perm][i : i + 3], index=ids[perm][i : i + 3], seed=7) for i in range(0, len(x), 3)]
        assert_close_across_batch_plans(torch.cat(parts), y[perm])
        if name not in DETERMINISTIC:
            assert not torch.equal(y, c(x, index=ids, seed=8)), "another seed must give other draws"


@pytest.mark.parametrize("name", sorted(set(NAMES) - NOT_MONOTONE))
def test_severity_monotone_in_mean_distance(name, colour_batch):
    x = colour_batch
    d = [
        (CORRUPTIONS.create(name, severity=s)(x, index=torch.arange(len(x)), seed=0) - x).abs().mean()
        for s in range(1, 6)
    ]
    assert d[-1] > d[0] > 0
    assert all(b >= a - 1e-3 for a, b in zip(d, d[1:])), d


def test_bad_parameters_and_inputs_are_usage_errors(colour_batch):
    with pytest.raises(UsageError, match="severity"):
        CORRUPTIONS.create("fog", severity=6)
    with pytest.raises(UsageError, match="preset"):
        CORRUPTIONS.create("fog", severity=1, preset="cifar100")
    with pytest.raises(UsageError, match="no parameter"):
        CORRUPTIONS.create("fog", severity=1, strength=2)
    c = CORRUPTIONS.create("fog", severity=1)
    with pytest.raises(UsageError, match="C = 1 or 3"):
        c(torch.rand(2, 2, 8, 8), index=torch.arange(2), seed=0)
    with pytest.raises(UsageError, match="sample ids"):
        c(colour_batch, index=torch.arange(3), seed=0)


def test_poisson_sampler_mean_and_variance():
    # Poisson(lam) has mean = variance = lam, on both sides of the exact/asymptotic switch (20)
    u = (torch.arange(40_000, dtype=torch.float64) + 0.5) / 40_000
    for lam in (0.3, 3.0, 19.0, 50.0, 400.0):
        k = poisson_from_uniform(torch.full_like(u, lam), u).double()
        assert abs(k.mean().item() - lam) < 0.01 * lam + 0.01
        assert abs(k.var().item() - lam) < 0.02 * lam + 0.01


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_hsv_closed_forms_equal_skimage(name, colour_batch):
    from skimage.color import hsv2rgb, rgb2hsv

    x = colour_batch.clone()
    x[0, :, :4, :4] = 0.5  # grey pixels (hue undefined -> 0 in skimage)
    x[1, :, :4, :4] = 0.0  # black pixels
    for s in range(1, 6):
        c = CORRUPTIONS.create(name, severity=s)
        ours = c(x, index=torch.arange(len(x)), seed=0).permute(0, 2, 3, 1).double().numpy()
        hsv = rgb2hsv(x.permute(0, 2, 3, 1).double().numpy(), channel_axis=-1)
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + c.c, 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * c.c[0] + c.c[1], 0, 1)
        ref = np.clip(hsv2rgb(hsv, channel_axis=-1), 0, 1)
        np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_contrast_formula():
    x = torch.tensor([0.0, 0.2, 0.6, 1.0]).view(1, 1, 2, 2)
    y = CORRUPTIONS.create("contrast", severity=2)(x, index=torch.arange(1), seed=0)
    # mean 0.45, factor 0.5 (CIFAR-10-C severity 2): 0.45 + 0.5 * (x - 0.45)
    torch.testing.assert_close(y.flatten(), torch.tensor([0.225, 0.325, 0.525, 0.725]))


def test_scale_defaults_to_size_over_reference(digits_batch):
    c = CORRUPTIONS.create("gaussian_blur", severity=5)
    assert c.spatial_scale((1, 1, 8, 8)) == 0.25 and c.spatial_scale((1, 3, 64, 64)) == 2.0
    # scale=1 applies the table sigma (1 px) even on 8x8 images
    y = CORRUPTIONS.create("gaussian_blur", severity=5, scale=1.0)(digits_batch, index=torch.arange(10), seed=0)
    assert (y - digits_batch).abs().mean() > 0.02


def test_unknown_border_mode_is_a_usage_error():
    from attacks.corruption import PAD_MODES, pad_index

    with pytest.raises(UsageError, match="unknown border mode 'wrap'") as e:
        pad_index(5, 2, 2, "wrap", torch.device("cpu"))
    assert all(m in e.value.hint for m in PAD_MODES)
