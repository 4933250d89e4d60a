"""FMN (fast minimum-norm attack): oracles and the fixed-eps contract.

- On an affine model the minimal L-inf / L2 / L1 distance to the decision boundary inside [0, 1]
  is computed exactly (L-inf and L1 as linear programs, L2 from the KKT form d = clip(-mu w)
  by bisection on mu); FMN's norm is never below it and within 2 % of it (1 % for L-inf/L2), for
  inputs in [0.25, 0.75]. Where the box binds harder FMN can be far off: it descends towards the
  runner-up class, and inside the box another class may be closer (measured: 67 % above the exact
  L-inf distance for one of 16 points drawn from all of [0, 1]).
- On a tiny ReLU network the MILP gives the exact minimal L-inf radius; FMN's norm is never below
  it (below would mean a misclassified point closer than the exact minimum: a bug).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from attacks.fmn import FMN, minimal_norm, norm_of, project_l1
from harness.errors import UsageError
from harness.registry import ATTACKS, VERIFIERS
from harness.threat import TOLERANCE, lp_norm


def affine_model(d: int, k: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, k))
    with torch.no_grad():
        model[1].weight.mul_(3)
    return model.eval()


def exact_distance(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: int, norm: str) -> float:
    """min ||d|| over rivals j with (w_y - w_j).(x + d) + b_y - b_j <= 0 and x + d in [0, 1]."""
    best = np.inf
    d = len(x)
    for j in range(len(b)):
        if j == y:
            continue
        dw, m = w[y] - w[j], (w[y] - w[j]) @ x + b[y] - b[j]
        if dw @ np.where(dw > 0, -x, 1 - x) > -m:  # even the best corner stays on y's side
            continue
        if norm == "l2":  # d(mu) = clip(-mu dw, -x, 1 - x); dw.d(mu) decreases in mu
            lo, hi = 0.0, 1.0
            while dw @ np.clip(-hi * dw, -x, 1 - x) > -m:
                hi *= 2
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if dw @ np.clip(-mid * dw, -x, 1 - x) > -m else (lo, mid)
            best = min(best, float(np.linalg.norm(np.clip(-hi * dw, -x, 1 - x))))
            continue
        # variables (d+, d-, t): d = d+ - d-, 0 <= d+ <= 1 - x, 0 <= d- <= x
        if norm == "linf":  # min t s.t. d+_i + d-_i <= t
            cost = np.r_[np.zeros(2 * d), 1.0]
            a_ub = [np.r_[dw, -dw, 0.0]]
            a_ub += [np.r_[np.eye(d)[i], np.eye(d)[i], -1.0] for i in range(d)]
            b_ub = np.r_[-m, np.zeros(d)]
        else:  # min sum d+ + d-
            cost = np.r_[np.ones(2 * d), 0.0]
            a_ub, b_ub = [np.r_[dw, -dw, 0.0]], np.array([-m])
        bounds = [(0, 1 - xi) for xi in x] + [(0, xi) for xi in x] + [(0, None)]
        res = linprog(cost, A_ub=np.array(a_ub), b_ub=b_ub, bounds=bounds, method="highs")
        assert res.status == 0
        best = min(best, float(res.fun))
    return best


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_fmn_matches_the_exact_distance_on_an_affine_model(norm):
    d, k = 16, 4
    model = affine_model(d, k, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 4, 4, generator=g) * 0.5 + 0.25  # some minimal points still touch the box (L1, L2)
    y = model(x).argmax(1)
    w, b = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    exact = np.array([exact_distance(w, b, xi.flatten().double().numpy(), int(yi), norm) for xi, yi in zip(x, y)])
    res = minimal_norm(model, x, y, norm, steps=200)
    found = res.norms.double().numpy()
    reachable = np.isfinite(exact)
    assert reachable.sum() >= 12
    assert np.all(np.isinf(found[~reachable]))  # nothing to find: nothing claimed
    assert np.all(found[reachable] >= exact[reachable] * (1 - 1e-4) - 1e-6), "FMN below the exact minimum"
    rel = 0.02 if norm == "l1" else 0.01
    assert np.all(found[reachable] <= exact[reachable] * (1 + rel)), found / exact
    # the returned points are misclassified and have the reported norms
    with torch.no_grad():
        wrong = model(res.x_adv).argmax(1) != y
    assert wrong[torch.from_numpy(reachable)].all()
    assert torch.allclose(norm_of(res.x_adv - x, norm)[reachable], res.norms[reachable], atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_fmn_never_beats_the_exact_milp_radius(norm):
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(6, 6),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    ).eval()
    x = torch.rand(8, 1, 2, 3)
    y = model(x).argmax(1)
    t_max = 1.0 if norm == "linf" else 6.0
    exact = VERIFIERS.create("milp", eps=0.1, time_limit=30).minimal_radius(model, x, y, t_max=t_max, norm=norm)
    finite = torch.isfinite(exact.upper)
    assert torch.allclose(exact.lower[finite], exact.upper[finite])  # solved to optimality
    if norm == "linf":
        _, norms = FMN(norm="linf", eps=0.1, steps=200).minimal(model, x, y)
    else:
        norms = minimal_norm(model, x, y, "l1", steps=200).norms
    assert (norms.double() >= exact.lower - 1e-5).all(), (norms, exact.lower)
    assert torch.isfinite(norms[finite]).all()  # FMN finds an adversarial point wherever one exists
    assert (norms.double()[finite] <= exact.upper[finite] * 1.25 + 1e-4).all(), (norms, exact.upper)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fixed_eps_mode_keeps_the_contract_and_breaks_what_min_norm_breaks(norm):
    model = affine_model(16, 4, seed=2)
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    attack = FMN(norm=norm, eps=0.05 if norm == "linf" else 0.3, steps=50)
    _, norms = attack.minimal(model, x, y)
    xa = attack(model, x, y, index=torch.arange(16), seed=0)
    assert float(lp_norm(xa - x, norm).max()) <= attack.eps + TOLERANCE
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    with torch.no_grad():
        broken = model(xa).argmax(1) != y
    assert broken[norms <= attack.eps].all()
    assert 0 < int(broken.sum()) < 16  # the eps is in the interesting range


def test_non_finite_logits_count_as_misclassified():
    class NaNModel(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 3), float("nan")) + x.flatten(1)[:, :1]

    x = torch.rand(4, 1, 2, 2)
    y = torch.zeros(4, dtype=torch.long)
    res = minimal_norm(NaNModel(), x, y, "l2", steps=5)
    assert torch.equal(res.norms, torch.zeros(4))
    xa = FMN(norm="linf", eps=0.1, steps=5)(NaNModel(), x, y, index=torch.arange(4))
    assert torch.isfinite(xa).all() and float((xa - x).abs().max()) <= 0.1 + TOLERANCE


def test_restarts_are_keyed_by_sample_index():
    model = affine_model(16, 4, seed=4)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    y = model(x).argmax(1)
    ids = torch.arange(100, 106)
    attack = FMN(norm="l2", eps=0.3, steps=20, restarts=3)
    a = attack(model, x, y, index=ids, seed=9)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    b = attack(model, x[perm], y[perm], index=ids[perm], seed=9)
    assert torch.allclose(a[perm], b, atol=1e-5)


def test_l1_projection_and_parameter_checks():
    d = torch.tensor([[3.0, -1.0, 0.5, 0.0], [0.1, 0.1, 0.0, 0.0]])
    p = project_l1(d, torch.tensor([2.0, 1.0]))
    # Duchi et al.: soft-threshold theta = 1 for the first row (3 - 1 = 2); the second is inside
    assert torch.allclose(p, torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.0, 0.0]]))
    assert "fmn" in ATTACKS
    with pytest.raises(UsageError, match="minimal_norm"):
        FMN(norm="l1")
    with pytest.raises(UsageError):
        FMN(steps=0)
    with pytest.raises(UsageError):
        FMN(gamma_init=1.5)
