"""Augmentation family (mixup, maxup, mmel-h, mmel-s) and the shared augmentations: formula checks.

Expected values are written from the papers' formulas with ``math`` or independent torch
expressions. MaxUp/MMEL formula tests replace the random augmentation by a known deterministic
one (copy j = (j + 2) x), so the max / reweighting formula itself is what is checked; the random
augmentations are tested separately for their defining properties.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import beta as beta_dist

from defenses.objectives._shared import augment
from harness.errors import UsageError
from harness.registry import OBJECTIVES
from harness.rng import torch_generator

from .objective_helpers import ParamLogits, make_state, onehot_images

Z = [[2.0, 1.0, 0.0], [0.5, 0.5, -1.0], [-1.0, 3.0, 0.5]]
Y = [0, 2, 1]


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def ce(row, y):
    return -math.log(softmax(row)[y])


# ---- mixup -------------------------------------------------------------------------------------


def test_mixup_value_and_gradient():
    obj = OBJECTIVES.create("mixup")
    assert obj.alpha == 1.0
    model, x, y = ParamLogits(Z), onehot_images(3), torch.tensor(Y)
    loss, info = obj.loss(model, x, y, make_state(3, 3, key="mix"))
    # documented draw order: u = rand(); lambda = Beta(1, 1) quantile of u = u; then randperm(B)
    g = torch_generator("mix")
    lam = float(torch.rand((), generator=g))
    perm = torch.randperm(3, generator=g).tolist()
    assert float(info["lam"]) == pytest.approx(lam)
    mixed = [[lam * Z[i][c] + (1 - lam) * Z[perm[i]][c] for c in range(3)] for i in range(3)]
    expected = sum(lam * ce(mixed[i], Y[i]) + (1 - lam) * ce(mixed[i], Y[perm[i]]) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # d/dz_mix_i = (p_i - lam e_{y_i} - (1 - lam) e_{y_perm(i)}) / B, routed to Z_i (x lam) and Z_perm(i) (x 1-lam)
    (grad,) = torch.autograd.grad(loss, model.z)
    ref = [[0.0] * 3 for _ in range(3)]
    for i in range(3):
        p = softmax(mixed[i])
        d = [(p[c] - lam * (c == Y[i]) - (1 - lam) * (c == Y[perm[i]])) / 3 for c in range(3)]
        for c in range(3):
            ref[i][c] += lam * d[c]
            ref[perm[i]][c] += (1 - lam) * d[c]
    assert torch.allclose(grad, torch.tensor(ref, dtype=torch.float64), atol=1e-12)


def test_mixup_beta_quantile_and_determinism():
    obj = OBJECTIVES.create("mixup", alpha=0.4)
    model, x, y = ParamLogits(Z), onehot_images(3), torch.tensor(Y)
    l1, info = obj.loss(model, x, y, make_state(3, 3, key="b"))
    l2, _ = obj.loss(model, x, y, make_state(3, 3, key="b"))
    u = float(torch.rand((), generator=torch_generator("b")))
    assert float(info["lam"]) == pytest.approx(beta_dist.ppf(u, 0.4, 0.4), rel=1e-6)
    assert l1.item() == l2.item()  # same step key, same draws: resume-exact


# ---- MaxUp / MMEL with a deterministic augmentation --------------------------------------------


def scaled_copies(cls_name, **params):
    cls = type(OBJECTIVES.create(cls_name, **params))

    class Scaled(cls):  # copy j of the batch is (j + 2) x, one-hot targets
        def augment(self, x, y, state, copy):
            return (copy + 2) * x, torch.nn.functional.one_hot(y, 3).to(x.dtype)

    return Scaled(**params)


def test_maxup_worst_copy_value_and_gradient():
    obj = scaled_copies("maxup", m=3)
    model, x, y = ParamLogits(Z), onehot_images(3), torch.tensor(Y)
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    per = [[ce([(j + 2) * v for v in Z[i]], Y[i]) for j in range(3)] for i in range(3)]
    worst = [max(range(3), key=lambda j, i=i: per[i][j]) for i in range(3)]
    assert loss.item() == pytest.approx(sum(per[i][worst[i]] for i in range(3)) / 3, rel=1e-9)
    # gradient flows only through the worst copy: (s p(s z) - s e_y) / B with s = worst scale
    (grad,) = torch.autograd.grad(loss, model.z)
    ref = []
    for i in range(3):
        s = worst[i] + 2
        p = softmax([s * v for v in Z[i]])
        ref.append([s * (p[c] - (c == Y[i])) / 3 for c in range(3)])
    assert torch.allclose(grad, torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    assert len(set(worst)) > 1  # different samples pick different copies


@pytest.mark.parametrize("lambda_p", [1.0, 0.25])
def test_mmel_hard_reweighting_value_and_gradient(lambda_p):
    obj = scaled_copies("mmel-h", m=2, lambda_p=lambda_p)
    model, x, y = ParamLogits(Z), onehot_images(3), torch.tensor(Y)
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    total, ref = 0.0, []
    for i in range(3):
        ls = [ce([(j + 2) * v for v in Z[i]], Y[i]) for j in range(2)]
        e = [math.exp(v / lambda_p) for v in ls]
        w = [v / sum(e) for v in e]
        total += ce(Z[i], Y[i]) + sum(wj * lj for wj, lj in zip(w, ls))
        # weights are constants: grad = (p - e_y) + sum_j w_j s_j (p(s_j z) - e_y), / B
        p0 = softmax(Z[i])
        row = [(p0[c] - (c == Y[i])) / 3 for c in range(3)]
        for j in range(2):
            s = j + 2
            ps = softmax([s * v for v in Z[i]])
            row = [row[c] + w[j] * s * (ps[c] - (c == Y[i])) / 3 for c in range(3)]
        ref.append(row)
    assert loss.item() == pytest.approx(total / 3, rel=1e-9)
    (grad,) = torch.autograd.grad(loss, model.z)
    assert torch.allclose(grad, torch.tensor(ref, dtype=torch.float64), atol=1e-12)


def test_mmel_soft_kl_reweighting_value():
    obj = scaled_copies("mmel-s", m=2, lambda_p=0.5)
    model, x, y = ParamLogits(Z), onehot_images(3), torch.tensor(Y)
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    total = 0.0
    for i in range(3):
        p0 = softmax(Z[i])
        kls = []
        for j in range(2):
            pj = softmax([(j + 2) * v for v in Z[i]])
            kls.append(sum(p0[c] * (math.log(p0[c]) - math.log(pj[c])) for c in range(3)))
        e = [math.exp(v / 0.5) for v in kls]
        total += ce(Z[i], Y[i]) + sum(v / sum(e) * kl for v, kl in zip(e, kls))
    assert loss.item() == pytest.approx(total / 3, rel=1e-9)
    # the soft target p(x) is detached: KL terms contribute no gradient through p(x)
    (grad,) = torch.autograd.grad(loss, model.z)
    zt = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    p0 = zt.softmax(1).detach()
    kl = torch.stack([(p0 * (p0.log() - ((j + 2) * zt).log_softmax(1))).sum(1) for j in range(2)])
    w = (kl.detach() / 0.5).softmax(0)
    ref_loss = torch.nn.functional.cross_entropy(zt, torch.tensor(Y)) + (w * kl).sum(0).mean()
    (g_ref,) = torch.autograd.grad(ref_loss, zt)
    assert torch.allclose(grad, g_ref, atol=1e-12)


def test_augmented_objectives_defaults_and_bad_input():
    assert (OBJECTIVES.create("maxup").m, OBJECTIVES.create("maxup").augmentation) == (4, "cutmix")
    assert OBJECTIVES.create("mmel-h").augmentation == "crop-flip"
    assert OBJECTIVES.create("mmel-s").lambda_p == 1.0
    with pytest.raises(UsageError, match="augmentation"):
        OBJECTIVES.create("maxup", augmentation="rotate")
    with pytest.raises(UsageError):
        OBJECTIVES.create("mmel-h", m=0)


# ---- the random augmentations ------------------------------------------------------------------


def class_images(y, k=3, size=8):
    """Image i is the one-hot of y_i in every pixel (k channels): pixel means equal the label mix."""
    return torch.nn.functional.one_hot(torch.tensor(y), k).float()[:, :, None, None].expand(-1, -1, size, size)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_augmentations_soft_labels_match_pixels(name):
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    x = class_images(y.tolist())
    for step in range(4):
        state = make_state(6, 3, key=f"aug{step}")
        xa, t = augment(name, x, y, 3, state, 0, sigma=0.0, alpha=1.0)
        assert torch.allclose(t.sum(1), torch.ones(6))
        assert torch.allclose(xa.mean((2, 3)), t, atol=1e-6)  # fraction of each source = its label weight
        xb, _ = augment(name, x, y, 3, make_state(6, 3, key=f"aug{step}"), 0, sigma=0.0, alpha=1.0)
        assert torch.equal(xa, xb)


def test_gaussian_augmentation_keyed_per_sample():
    x = torch.full((4, 1, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    state = make_state(4, 3)
    a, t = augment("gaussian", x, y, 3, state, 0, sigma=0.25, alpha=1.0)
    b, _ = augment("gaussian", x, y, 3, state, 1, sigma=0.25, alpha=1.0)
    assert torch.equal(t, torch.nn.functional.one_hot(y, 3).float())
    assert not torch.allclose(a, b)  # copies differ
    noise = (a - x) / 0.25
    assert abs(noise.mean().item()) < 0.2 and abs(noise.std().item() - 1) < 0.15
    # the noise of a sample depends on its id, not on the batch around it
    sub = make_state(2, 3)
    sub.index = state.index[2:]
    c, _ = augment("gaussian", x[2:], y[2:], 3, sub, 0, sigma=0.25, alpha=1.0)
    assert torch.equal(c, a[2:])


def test_crop_flip_is_a_padded_shift_or_its_mirror():
    torch.manual_seed(0)  # only for the test image
    x = torch.rand(5, 2, 8, 8)
    y = torch.zeros(5, dtype=torch.long)
    out, _ = augment("crop-flip", x, y, 3, make_state(5, 3), 0, sigma=0.0, alpha=1.0)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))

    def crop(img, dy, dx):
        return img[:, dy : dy + 8, dx : dx + 8]

    kinds = set()
    for i in range(5):
        cands = [
            (dy, dx, f)
            for dy in range(3)
            for dx in range(3)
            for f in (False, True)
            if torch.equal(out[i], crop(xp[i], dy, dx).flip(-1) if f else crop(xp[i], dy, dx))
        ]
        assert len(cands) == 1
        kinds.add(cands[0])
    assert len(kinds) > 1
