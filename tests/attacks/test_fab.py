"""FAB / FAB-T: exact projection, closed-form optimum on linear models, pyautoattack oracle, pass counts."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.fab_projections import projection_l2, projection_linf
from pyautoattack.fab_pt import FABAttack_PT

from attacks.fab import FAB, FABTargeted, project_hyperplane_box
from harness.api import load_dataset
from harness.registry import ATTACKS
from harness.threat import ThreatModel, check_contract
from tests.verdicts import assert_same_outcome

from .fab_square_helpers import Counting, Linear2, digits_cnn, dist, robust_flags

REF_NORM = {"linf": "Linf", "l2": "L2"}


def _reference(model, norm, eps, targeted, **kw):
    return FABAttack_PT(model, norm=REF_NORM[norm], eps=eps, seed=0, targeted=targeted, **kw)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_reference_minimal_norm_projection(norm):
    g = torch.Generator().manual_seed(1)
    t = torch.rand(200, 30, generator=g)
    w = torch.randn(200, 30, generator=g) * (torch.rand(200, 30, generator=g) > 0.1)
    b = (w * t).sum(1) + 0.5 * torch.randn(200, generator=g)
    ours = project_hyperplane_box(t, w, b - (w * t).sum(1), norm)
    theirs = (projection_linf if norm == "linf" else projection_l2)(t, w, b)
    feasible = ((w * (t + theirs)).sum(1) - b).abs() < 1e-4
    assert feasible.sum() > 150
    # On the hyperplane, inside the box, and as short as the reference's solution.
    assert ((w * (t + ours)).sum(1) - b)[feasible].abs().max() < 1e-4
    assert (t + ours).min() >= -1e-6 and (t + ours).max() <= 1 + 1e-6
    n_ours, n_theirs = dist(t, t + ours, norm), dist(t, t + theirs, norm)
    torch.testing.assert_close(n_ours[feasible], n_theirs[feasible], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("cls", [FAB, FABTargeted])
def test_linear_model_minimal_distance_is_found(norm, cls):
    model = Linear2(64)
    x = 0.3 + 0.4 * torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    dstar = model.min_distance(x, norm)
    # Without overshoot the step lands on the boundary: within 1e-3 of the closed-form optimum.
    _, d = cls(norm, eps=1.0, restarts=1, eta=1.001).minimal(model, x, y)
    assert torch.all(d >= dstar * (1 - 1e-5)) and torch.all(d <= dstar * (1 + 1e-3)), (d / dstar).max()
    # With the reference constants (eta 1.05, beta 0.9) FAB settles 0.5 % outside the boundary, exactly as
    # pyautoattack's FAB does on the same points.
    _, d_def = cls(norm, eps=1.0, restarts=1).minimal(model, x, y)
    ref = _reference(model, norm, 10.0, cls is FABTargeted, n_restarts=1, n_iter=100, n_target_classes=1)
    d_ref = dist(x, ref.perturb(x, y), norm)
    assert torch.all(d_def <= dstar * 1.01)
    torch.testing.assert_close(d_def, d_ref, rtol=1e-3, atol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_succeeds_iff_the_boundary_is_within_eps(norm):
    model = Linear2(64, seed=3)
    x = 0.3 + 0.4 * torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    dstar = model.min_distance(x, norm)
    eps = float(dstar.median())
    xa = ATTACKS.create("fab-t", norm=norm, eps=eps, eta=1.001)(model, x, y)
    check_contract(x, xa, ThreatModel(norm, eps))
    broken = ~robust_flags(model, x, y, xa)
    assert torch.equal(broken[dstar < eps * 0.999], torch.ones_like(broken[dstar < eps * 0.999]))
    assert not broken[dstar > eps].any()
    assert torch.equal(xa[~broken], x[~broken])  # failures return the clean input


def _digits(n, offset=0):
    ds = load_dataset("digits")
    x, y = ds.batch(slice(offset, offset + n))
    return x, y, ds.ids[offset : offset + n]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.8)])
def test_fab_t_matches_pyautoattack_on_a_digits_cnn(norm, eps):
    model = digits_cnn()
    x, y, ids = _digits(40)
    kw = {"steps": 15, "n_target_classes": 4}
    ours = FABTargeted(norm, eps, **kw)(model, x, y, index=ids)
    theirs = _reference(model, norm, eps, True, n_restarts=1, n_iter=15, n_target_classes=4).perturb(x, y)
    r_ours, r_theirs = robust_flags(model, x, y, ours), robust_flags(model, x, y, theirs)
    acc_ours, acc_theirs = r_ours.float().mean().item(), r_theirs.float().mean().item()
    assert 0.1 < acc_theirs < 0.9, "eps should leave a contested set"
    assert abs(acc_ours - acc_theirs) <= 0.005, (acc_ours, acc_theirs)
    assert (r_ours == r_theirs).float().mean() >= 0.97


def test_untargeted_fab_matches_pyautoattack_on_a_digits_cnn():
    model = digits_cnn()
    x, y, ids = _digits(30, offset=40)
    ours = FAB("linf", 0.1, steps=10, restarts=1)(model, x, y, index=ids)
    theirs = _reference(model, "linf", 0.1, False, n_restarts=1, n_iter=10).perturb(x, y)
    r_ours, r_theirs = robust_flags(model, x, y, ours), robust_flags(model, x, y, theirs)
    assert abs(r_ours.float().mean() - r_theirs.float().mean()) <= 0.005
    assert (r_ours == r_theirs).float().mean() >= 0.97


@pytest.mark.parametrize("targeted", [True, False])
def test_a_robust_sample_gets_exactly_the_reference_number_of_gradient_steps(targeted):
    x, y, ids = _digits(10)
    model = Counting(digits_cnn())
    keep = robust_flags(model, x, y, x).nonzero().squeeze(1)[:3]  # three correctly classified samples
    x, y, ids = x[keep], y[keep], ids[keep]
    eps, steps, k = 1e-4, 6, 10  # eps far below any boundary: every sample stays robust
    model.reset()
    if targeted:
        FABTargeted("linf", eps, steps=steps)(model, x, y, index=ids)
        n_runs, grads_per_step = 9, 1
    else:
        FAB("linf", eps, steps=steps, restarts=2)(model, x, y, index=ids)
        n_runs, grads_per_step = 2, k
    ours_fwd, ours_bwd = model.forward_images, model.backward_images
    model.reset()
    kw = {"n_target_classes": 9} if targeted else {}
    _reference(model, "linf", eps, targeted, n_restarts=1 if targeted else 2, n_iter=steps, **kw).perturb(x, y)
    # Per run and step: one gradient evaluation (K backward passes untargeted, one for FAB-T) and one
    # forward check, as the reference; the reference adds 2 bookkeeping forwards per run (3 for FAB-T: it
    # recomputes the clean logits to pick the target), we add 1 in all.
    assert ours_bwd == model.backward_images == 3 * n_runs * steps * grads_per_step
    assert ours_fwd == 3 * (1 + 2 * n_runs * steps)
    assert model.forward_images == 3 * (1 + n_runs * (2 * steps + (3 if targeted else 2)))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_deterministic_and_independent_of_batch_size(norm):
    model = digits_cnn()
    x, y, ids = _digits(50, offset=100)
    eps = 0.1 if norm == "linf" else 0.8
    attack = FAB(norm, eps, steps=8, restarts=2)
    whole = attack(model, x, y, index=ids, seed=3)
    again = attack(model, x, y, index=ids, seed=3)
    chunks = [slice(i, i + 5) for i in range(0, 50, 5)]
    parts = torch.cat([attack(model, x[c], y[c], index=ids[c], seed=3) for c in chunks])
    assert torch.equal(whole, again)  # same batch plan: bit for bit
    # Other batch plans: the same verdicts and equally strong points, not the same bits (tests/verdicts.py).
    assert_same_outcome(model, x, y, whole, parts, ThreatModel(norm, eps))
    assert (~robust_flags(model, x, y, whole)).any()


def test_bad_parameters_raise_a_usage_error():
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="steps = 0 is out of range"):
        ATTACKS.create("fab", norm="linf", eps=0.1, steps=0)
    with pytest.raises(UsageError, match="n_target_classes = 0 is out of range"):
        ATTACKS.create("fab-t", norm="linf", eps=0.1, n_target_classes=0)


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.8)])
def test_fab_t_reference_budgets_agree_with_pyautoattack_on_1000_samples(norm, eps, capsys):
    model = digits_cnn()
    ds = load_dataset("digits", split="all")
    x, y = ds.batch(slice(0, 1000))
    ours = ATTACKS.create("fab-t", norm=norm, eps=eps)(model, x, y, index=ds.ids[:1000])
    theirs = _reference(model, norm, eps, True, n_restarts=1, n_iter=100, n_target_classes=9).perturb(x, y)
    check_contract(x, ours, ThreatModel(norm, eps))
    r_ours, r_theirs = robust_flags(model, x, y, ours), robust_flags(model, x, y, theirs)
    agree = (r_ours == r_theirs).float().mean().item()
    with capsys.disabled():
        print(
            f"\nfab-t {norm} eps={eps}: native {r_ours.float().mean():.4f} pyautoattack "
            f"{r_theirs.float().mean():.4f} per-sample agreement {agree:.4f}"
        )
    assert r_ours.float().mean() <= r_theirs.float().mean() + 0.005
    assert abs(r_ours.float().mean() - r_theirs.float().mean()) <= 0.005
