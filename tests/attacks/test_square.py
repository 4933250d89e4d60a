"""Square Attack: linear-model success, pyautoattack oracle, exact query budget, batch independence, contract."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.square import SquareAttack

from attacks.square import Square, l2_square_pattern, p_schedule
from harness.api import load_dataset
from harness.registry import ATTACKS
from harness.threat import ThreatModel, enforce_contract
from tests.verdicts import assert_same_outcome

from .fab_square_helpers import Counting, Linear2, digits_cnn, robust_flags

REF_NORM = {"linf": "Linf", "l2": "L2"}


def _reference(model, norm, eps, n_queries):
    return SquareAttack(
        model, norm=REF_NORM[norm], eps=eps, n_queries=n_queries, p_init=0.8, n_restarts=1, seed=0, resc_schedule=False
    )


def test_p_schedule_halves_at_the_paper_thresholds():
    assert p_schedule(0, 0.8, 5000, False) == 0.8
    assert p_schedule(10, 0.8, 5000, False) == 0.8
    assert p_schedule(11, 0.8, 5000, False) == 0.4
    assert p_schedule(51, 0.8, 5000, False) == 0.2
    assert p_schedule(4999, 0.8, 5000, False) == 0.8 / 128
    assert p_schedule(2500, 0.8, 5000, True) == 0.8 / 128  # rescaled: 2500/5000 of 10000 iterations


def test_l2_pattern_is_the_papers_two_pyramids():
    eta = l2_square_pattern(5)
    assert torch.isclose(eta.norm(), torch.tensor(1.0))
    assert (eta[:2] > 0).all() and (eta[2:] < 0).all()
    # Inside each half, the value is a sum over rings 1/(k+1)^2 from the Chebyshev distance outwards.
    top = eta[:2] / eta[:2].norm()
    ring = {0: 1 + 1 / 4 + 1 / 9, 1: 1 / 4 + 1 / 9, 2: 1 / 9}
    expect = torch.tensor([[ring[max(abs(i - 1), abs(j - 2))] for j in range(5)] for i in range(2)])
    torch.testing.assert_close(top, expect / expect.norm())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_is_broken_when_eps_exceeds_the_minimal_distance(norm):
    model = Linear2(64, seed=5)
    x = 0.3 + 0.4 * torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    y = model(x).argmax(1)
    dstar = model.min_distance(x, norm)
    eps = 2 * float(dstar.max())
    xa = Square(norm, eps, n_queries=1000)(model, x, y)
    enforce_contract(x, xa, ThreatModel(norm, eps))
    broken = (~robust_flags(model, x, y, xa)).float().mean()
    ref = (~robust_flags(model, x, y, _reference(model, norm, eps, 1000).perturb(x, y))).float().mean()
    assert broken >= 0.95 and broken >= ref - 0.05, (broken, ref)


def _digits(n, offset=0):
    ds = load_dataset("digits")
    x, y = ds.batch(slice(offset, offset + n))
    return x, y, ds.ids[offset : offset + n]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0)])
def test_square_is_as_strong_as_pyautoattack_on_a_digits_cnn(norm, eps):
    # Random search with different random streams: the two runs differ on a few samples either way.
    # The yardstick is the reference against itself over seeds (150 queries, these 60 images): robust
    # counts differ by up to 2 and agreement is 0.92-0.95; native vs reference over seeds 0-3 gave
    # 0.87-0.93 (old per-sample proposals: 0.88-0.95).
    model = digits_cnn()
    x, y, ids = _digits(60)
    ours = Square(norm, eps, n_queries=150)(model, x, y, index=ids)
    theirs = _reference(model, norm, eps, 150).perturb(x, y)
    r_ours, r_theirs = robust_flags(model, x, y, ours), robust_flags(model, x, y, theirs)
    assert 0.1 < r_theirs.float().mean() < 0.9
    assert r_ours.sum() <= r_theirs.sum() + 2, (r_ours.sum(), r_theirs.sum())
    assert (r_ours == r_theirs).float().mean() >= 0.85


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_robust_sample_spends_exactly_n_queries(norm):
    model = Counting(digits_cnn())
    x, y, ids = _digits(10)
    keep = robust_flags(model, x, y, x).nonzero().squeeze(1)[:3]
    x, y, ids = x[keep], y[keep], ids[keep]
    eps, nq = 1e-4, 40  # far below any boundary: nothing breaks
    model.reset()
    Square(norm, eps, n_queries=nq)(model, x, y, index=ids)
    ours = model.forward_images
    model.reset()
    _reference(model, norm, eps, nq).perturb(x, y)
    # Both: one clean forward, one at the initial point, n_queries proposals; the reference adds a final check.
    assert ours == 3 * (nq + 2)
    assert model.forward_images == 3 * (nq + 3)
    assert model.backward_images == 0


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0)])
def test_deterministic_and_independent_of_batch_size(norm, eps):
    model = digits_cnn()
    x, y, ids = _digits(50, offset=200)
    attack = ATTACKS.create("square", norm=norm, eps=eps, n_queries=60, compact_every=7)
    whole = attack(model, x, y, index=ids, seed=4)
    again = attack(model, x, y, index=ids, seed=4)
    chunks = [slice(i, i + 5) for i in range(0, 50, 5)]
    parts = torch.cat([attack(model, x[c], y[c], index=ids[c], seed=4) for c in chunks])
    assert torch.equal(whole, again)  # same batch plan: bit for bit
    # Other batch plans: the same verdicts and equally strong points, not the same bits (tests/verdicts.py).
    assert_same_outcome(model, x, y, whole, parts, ThreatModel(norm, eps))
    other_seed = attack(model, x, y, index=ids, seed=5)
    assert not torch.equal(whole, other_seed)
    enforce_contract(x, whole, ThreatModel(norm, eps))
    assert torch.isfinite(whole).all() and whole.min() >= 0 and whole.max() <= 1


def test_bad_parameters_raise_a_usage_error():
    from harness.errors import UsageError
    from harness.registry import ATTACKS

    with pytest.raises(UsageError, match="loss = 'dlr' is not a valid choice"):
        ATTACKS.create("square", norm="linf", eps=0.1, loss="dlr")
    with pytest.raises(UsageError, match=r"p_init = 0 is out of range; allowed: number in \(0, 1\]"):
        ATTACKS.create("square", norm="linf", eps=0.1, p_init=0)
    with pytest.raises(UsageError, match="n_queries = 0 is out of range"):
        ATTACKS.create("square", norm="linf", eps=0.1, n_queries=0)


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps", "n_queries"), [("linf", 0.15, 1000), ("l2", 1.0, 1000)])
def test_square_agrees_with_pyautoattack_on_1000_samples(norm, eps, n_queries, capsys):
    model = digits_cnn()
    ds = load_dataset("digits", split="all")
    x, y = ds.batch(slice(0, 1000))
    ours = Square(norm, eps, n_queries=n_queries)(model, x, y, index=ds.ids[:1000])
    theirs = _reference(model, norm, eps, n_queries).perturb(x, y)
    enforce_contract(x, ours, ThreatModel(norm, eps))
    r_ours, r_theirs = robust_flags(model, x, y, ours), robust_flags(model, x, y, theirs)
    agree = (r_ours == r_theirs).float().mean().item()
    with capsys.disabled():
        print(
            f"\nsquare {norm} eps={eps} q={n_queries}: native {r_ours.float().mean():.4f} "
            f"pyautoattack {r_theirs.float().mean():.4f} per-sample agreement {agree:.4f}"
        )
    assert r_ours.float().mean() <= r_theirs.float().mean() + 0.005
