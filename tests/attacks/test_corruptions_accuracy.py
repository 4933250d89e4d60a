"""A digits model scores the same under our corruptions as under `imagecorruptions` (slow: trains a model).

Same 32x32x3 digits test images, same ImageNet-C parameter table (``preset="imagenet", scale=1``);
the random draws differ, so accuracies are compared within a tolerance: 3 standard errors of the
paired difference of per-image correctness (the noise of two independent draws) plus 3 points.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("imagecorruptions")

from harness.registry import CORRUPTIONS
from tests.attacks.corruption_oracle import oracle, ours

N_IMAGES = 200


@pytest.fixture(scope="module")
def model_and_data():
    from harness.api import load_dataset, train

    torch.manual_seed(0)
    # 16 epochs: at 8 the upsampled-digits CNN reached 78 % clean on the first 200 images on an AVX-512
    # machine (above 80 % on the AVX2 machine the test was written on): a training this short is
    # machine-dependent near the 80 % the comparison needs. At 16 epochs: 96 %.
    model = train("ce", "cnn", "digits:size=32,channels=3", epochs=16, progress=False, eval_samples=0).model.eval()
    ds = load_dataset("digits:size=32,channels=3")
    x, y = ds.batch(np.arange(N_IMAGES))
    u8 = np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    return model, u8, y.numpy()


def correct(model, images: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    return (logits.argmax(1).numpy() == y).astype(np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_digits_accuracy_agrees_with_imagecorruptions(name, model_and_data):
    model, u8, y = model_and_data
    assert correct(model, u8, y).mean() > 0.8
    for severity in range(1, 6):
        a = correct(model, oracle(u8, name, severity, seed=severity), y)
        b = correct(model, ours(u8, name, severity, seed=severity), y)
        d = b - a
        tol = 3 * d.std(ddof=1) / np.sqrt(len(d)) + 0.03
        assert abs(d.mean()) <= tol, f"{name} s{severity}: accuracy ours {b.mean():.3f} vs reference {a.mean():.3f}"
