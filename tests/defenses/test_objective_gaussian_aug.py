"""gaussian-aug: CE on x + sigma * N(0, I) with keyed noise, checked against the formula."""

from __future__ import annotations

import math

import pytest
import torch

from harness.registry import OBJECTIVES
from harness.rng import keyed_normal, stream_seed
from tests.defenses.objective_helpers import make_state


def test_gaussian_aug_is_ce_on_the_keyed_noisy_input():
    obj = OBJECTIVES.create("gaussian-aug", sigma=0.5)
    x = torch.full((2, 1, 1, 2), 0.5)
    y = torch.tensor([0, 1])
    w = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # logits = w @ flatten(x)
    model = lambda v: v.flatten(1) @ w.T
    st = make_state(2, 2)
    loss, _ = obj.loss(model, x, y, st)
    e = keyed_normal(stream_seed(st.seed, "gaussian", 0), st.index, (1, 1, 2))
    xn = (x + 0.5 * e).flatten(1)
    expected = 0.0
    for i in range(2):
        z = [float(xn[i, 0] - xn[i, 1]), float(xn[i, 1] - xn[i, 0])]
        expected += -(z[y[i]] - math.log(math.exp(z[0]) + math.exp(z[1]))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_sigma_must_be_positive():
    from harness.errors import UsageError

    with pytest.raises(UsageError):
        OBJECTIVES.create("gaussian-aug", sigma=0.0)
