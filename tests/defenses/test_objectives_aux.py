"""Auxiliary-data family (odnl, open-sampling) and the auxiliary image source: formula checks."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import UsageError
from harness.registry import OBJECTIVES
from harness.rng import keyed_uniform, stream_seed, torch_generator

from .objective_helpers import make_ctx, make_state

W = [[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0], [-0.5, 0.0, 1.0, -2.0]]
B = [0.1, -0.2, 0.3]
X = [[0.0, 1.0, 0.5, 0.2], [0.9, 0.1, 0.0, 0.4]]
Y = [1, 2]


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(W, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(B, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1).double() @ self.w.T + self.b


def logits(img):
    return [sum(W[k][d] * img[d] for d in range(4)) + B[k] for k in range(3)]


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def ce(row, y):
    return -math.log(softmax(row)[y])


def built(name, counts=None, **params):
    model = Linear()
    x = torch.tensor(X).view(2, 1, 2, 2)
    y = torch.tensor(Y)
    obj = OBJECTIVES.create(name, **params)
    ctx = make_ctx(model, x, y, 3)
    if counts is not None:
        ctx.class_counts = torch.tensor(counts)
    obj.setup(ctx)
    return obj, model, x, y


def noise_images(seed, n):
    """The documented noise source: keyed_uniform(stream_seed(state.seed, "aux-noise"), 0..n-1, shape)."""
    return keyed_uniform(stream_seed(seed, "aux-noise"), torch.arange(n), (1, 2, 2)).view(n, 4).tolist()


def test_odnl_value_and_gradient():
    obj, model, x, y = built("odnl", aux_batch=3)
    assert obj.eta == 2.5
    state = make_state(2, 3, key="odnl", seed=77)
    loss, info = obj.loss(model, x, y, state)
    u = torch.randint(3, (3,), generator=torch_generator("odnl")).tolist()  # first draw of the step generator
    ood = noise_images(77, 3)
    ce_in = sum(ce(logits(X[i]), Y[i]) for i in range(2)) / 2
    ce_ood = sum(ce(logits(ood[i]), u[i]) for i in range(3)) / 3
    assert loss.item() == pytest.approx(ce_in + 2.5 * ce_ood, rel=1e-6)  # float32 images
    assert float(info["ce_ood"]) == pytest.approx(ce_ood, rel=1e-6)
    # d/db = mean_in (p - e_y) + eta mean_ood (p - e_u)
    (gb,) = torch.autograd.grad(loss, model.b)
    ref = [0.0] * 3
    for i in range(2):
        p = softmax(logits(X[i]))
        ref = [ref[c] + (p[c] - (c == Y[i])) / 2 for c in range(3)]
    for i in range(3):
        p = softmax(logits(ood[i]))
        ref = [ref[c] + 2.5 * (p[c] - (c == u[i])) / 3 for c in range(3)]
    assert gb.tolist() == pytest.approx(ref, rel=1e-6)  # float32 images


def test_open_sampling_complementary_distribution_weights_and_value():
    obj, model, x, y = built("open-sampling", counts=[6, 3, 1], aux_batch=4)
    assert (obj.lambda_o, OBJECTIVES.create("open-sampling").aux_batch) == (1.0, 512)
    # pi = (.6, .3, .1); Gamma ∝ pi_max + pi_min - pi = (.1, .4, .6) -> /1.1; w = K Gamma (mean 1)
    gamma = [1 / 11, 4 / 11, 6 / 11]
    w = [3 / 11, 12 / 11, 18 / 11]
    assert obj.gamma.tolist() == pytest.approx(gamma, rel=1e-6)
    assert obj.class_weights.tolist() == pytest.approx(w, rel=1e-6)
    state = make_state(2, 3, key="os", seed=5)
    loss, _ = obj.loss(model, x, y, state)
    labels = torch.multinomial(torch.tensor(gamma), 4, replacement=True, generator=torch_generator("os")).tolist()
    ood = noise_images(5, 4)
    ce_in = sum(ce(logits(X[i]), Y[i]) for i in range(2)) / 2
    # weighted CE as in the official code (PyTorch's weight=): sum w_y ce / sum w_y
    ce_ood = sum(w[labels[i]] * ce(logits(ood[i]), labels[i]) for i in range(4)) / sum(w[t] for t in labels)
    assert loss.item() == pytest.approx(ce_in + ce_ood, rel=1e-6)


def test_open_sampling_alpha_variant_and_bad_alpha():
    obj, *_ = built("open-sampling", counts=[6, 3, 1], alpha=1.0)
    assert obj.gamma.tolist() == pytest.approx([0.4 / 2, 0.7 / 2, 0.9 / 2], rel=1e-6)  # alpha - pi, normalised
    with pytest.raises(UsageError, match="alpha"):
        built("open-sampling", counts=[6, 3, 1], alpha=0.3)


def test_noise_aux_images_deterministic_per_step():
    obj, *_ = built("odnl", aux_batch=5)
    a = obj.aux_images(make_state(2, 3, seed=1), torch.device("cpu"))
    b = obj.aux_images(make_state(2, 3, seed=1), torch.device("cpu"))
    c = obj.aux_images(make_state(2, 3, seed=2), torch.device("cpu"))
    assert a.shape == (5, 1, 2, 2) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_dataset_aux_images_drawn_deterministically_and_adapted():
    from harness.api import load_dataset

    obj, *_ = built("odnl", aux="synthetic:channels=1,size=2,n=64", aux_batch=6)
    a = obj.aux_images(make_state(2, 3, seed=9), torch.device("cpu"))
    b = obj.aux_images(make_state(2, 3, seed=9), torch.device("cpu"))
    assert torch.equal(a, b) and a.shape == (6, 1, 2, 2)
    pool = load_dataset("synthetic:channels=1,size=2,n=64,split=train").x.view(64, 4)
    for img in a.view(6, 4):  # every draw is an image of the auxiliary (train split) set
        assert (pool == img).all(1).any()
    obj3, *_ = built("odnl", aux="synthetic:channels=3,size=8,n=16", aux_batch=4)
    c = obj3.aux_images(make_state(2, 3, seed=9), torch.device("cpu"))
    assert c.shape == (4, 1, 2, 2) and float(c.min()) >= 0 and float(c.max()) <= 1
    with pytest.raises(UsageError):
        built("odnl", aux_batch=0)
