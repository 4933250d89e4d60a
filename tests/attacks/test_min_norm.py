"""Min-norm modes of FAB, FAB-T and CW-L2 (issue 22 §2): closed forms, returned points, FMN, batch plans.

- On an affine 4-class model with inputs well inside [0, 1], the minimal distance to misclassification
  is min_j |(w_y - w_j).x + b_y - b_j| / ||w_y - w_j||_dual (L2: dual L2; L-inf: dual L1) wherever the
  unconstrained minimiser stays in the box (the samples used are filtered on that). ``minimal`` is
  never below it (beyond float rounding) and within 2 % of it for FAB / FAB-T (the overshoot eta = 1.05
  settles about 0.5 % outside the boundary, docs/attacks.md), 10 % for CW-L2 at its default budget
  (100 Adam steps of lr 0.01 in tanh space, 5 binary-search steps; measured: median 1.001, max 1.073).
- Every point ``minimal`` returns is misclassified and its distance (`harness.threat.lp_norm`) is at
  most the norm it reports.
- On a small digits MLP, FAB / CW-L2 min-norm against FMN (100 steps), slow: the per-sample ratio of
  norms is measured and printed; asserted: the median ratio and the 90th percentile are at most 1.1.
  CW-L2 at its default budget does not meet it (measured median 1.53): a strict xfail that records it
  (docs/verification.md has the measured numbers).
- Verdicts do not depend on the batch plan (tests/verdicts.py), and ``mode`` is declared and checked.
"""

from __future__ import annotations

import pytest
import torch

from attacks.cw import CWL2
from attacks.fab import FAB, FABTargeted
from attacks.fmn import FMN
from harness.errors import UsageError
from harness.registry import ATTACKS
from harness.threat import TOLERANCE, ThreatModel, lp_norm
from tests.attacks.digits_mlp import digits_mlp as trained_digits_mlp
from tests.verdicts import assert_same_outcome

from .fab_square_helpers import Counting

CASES = [("fab", "linf"), ("fab", "l2"), ("fab-t", "linf"), ("fab-t", "l2"), ("cw-l2", "l2")]


def make(name: str, norm: str, eps: float, **kw):
    return ATTACKS.create(name, norm=norm, eps=eps, mode="min-norm", **kw)


def affine(seed: int = 0, d: int = 16, k: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, k))
    with torch.no_grad():
        model[1].weight.mul_(3)
    return model.eval()


def closed_form(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str):
    """Per sample: min_j margin_j / ||dw_j||_dual, and whether its unconstrained minimiser lies in [0, 1]."""
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    xf = x.flatten(1).double()
    dw = w[y][:, None, :] - w[None]  # (n, K, D): w_y - w_j
    m = (xf[:, None, :] * dw).sum(-1) + b[y][:, None] - b[None]
    dual = dw.abs().sum(-1) if norm == "linf" else dw.norm(dim=-1)
    dist = m / dual.clamp_min(1e-30)
    dist[torch.arange(len(y)), y] = float("inf")
    j = dist.argmin(1)
    d = dist[torch.arange(len(y)), j]
    g = dw[torch.arange(len(y)), j]
    step = g.sign() if norm == "linf" else g / g.norm(dim=1, keepdim=True)
    x_star = xf - d[:, None] * step  # the closest point of the boundary z_y = z_j
    inside = (x_star >= 0).all(1) & (x_star <= 1).all(1)
    return d, inside


@pytest.mark.parametrize("name, norm", CASES)
def test_min_norm_equals_the_closed_form_distance_on_an_affine_model(name, norm):
    model = affine(0)
    x = 0.3 + 0.4 * torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    exact, inside = closed_form(model, x, y, norm)
    keep = inside & (exact > 1e-3)
    assert int(keep.sum()) >= 20
    x, y, exact = x[keep], y[keep], exact[keep]
    kw = {"restarts": 1} if name == "fab" else {}  # one start suffices on an affine model
    xa, norms = make(name, norm, eps=0.1, **kw).minimal(model, x, y)
    found = norms.double()
    assert torch.isfinite(found).all()
    assert (found >= exact * (1 - 1e-5) - 1e-7).all(), "below the exact minimum: a misclassified point that cannot be"
    ratio = found / exact
    print(f"{name} {norm}: ratio to the closed form median {ratio.median():.4f}, max {ratio.max():.4f}, n={len(ratio)}")
    assert float(ratio.max()) <= (1.1 if name == "cw-l2" else 1.02), ratio
    # every returned point is misclassified and no further than reported
    with torch.no_grad():
        assert (model(xa).argmax(1) != y).all()
    assert (lp_norm(xa - x, norm) <= norms).all()
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1


@pytest.mark.parametrize("name, norm", CASES)
def test_min_norm_perturb_breaks_exactly_the_samples_within_eps(name, norm):
    """perturb in min-norm mode: the smallest point found when within eps (the contract holds), else x."""
    model = affine(3)
    x = 0.3 + 0.4 * torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    exact, _ = closed_form(model, x, y, norm)
    eps = float(exact.median())
    attack = make(name, norm, eps)
    xa = attack(model, x, y, index=torch.arange(len(x)), seed=0)
    dist = lp_norm(xa - x, norm)
    assert float(dist.max()) <= eps + TOLERANCE
    with torch.no_grad():
        broken = model(xa).argmax(1) != y
    assert broken[exact.float() < eps * 0.97].all()
    assert not broken[exact.float() > eps].any()
    if name != "cw-l2":  # FAB returns the clean input on failure (CW moves it back onto the sphere)
        assert torch.equal(xa[~broken], x[~broken])
    _, norms = attack.minimal(model, x, y)
    both = broken & (norms <= eps)
    torch.testing.assert_close(dist[both], norms[both], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def digits_mlp():
    return trained_digits_mlp(40)


CW_SHORT = pytest.mark.xfail(
    strict=True,
    reason="measured (bench/results/min-norm-cpu.json): cw-l2 at its default budget (100 Adam steps, 5 binary-"
    "search steps) finds norms 1.53x FMN's (median; p90 2.05) on this MLP",
)


@pytest.mark.slow
@pytest.mark.parametrize("name, norm", [*CASES[:-1], pytest.param("cw-l2", "l2", marks=CW_SHORT)])
def test_min_norm_against_fmn_on_a_digits_mlp(digits_mlp, name, norm):
    """Default budgets (bench/min_norm.py measures the same on the same model and points)."""
    model, x, y = digits_mlp
    xa, norms = make(name, norm, eps=0.1).minimal(model, x, y)
    _, fmn = FMN(norm=norm, eps=0.1).minimal(model, x, y)
    with torch.no_grad():
        wrong = model(xa).argmax(1) != y
    assert wrong[torch.isfinite(norms)].all()
    assert (lp_norm(xa - x, norm) <= norms).all()
    both = torch.isfinite(norms) & torch.isfinite(fmn)
    print(f"{name} {norm}: found {int(torch.isfinite(norms).sum())}, FMN {int(torch.isfinite(fmn).sum())} of {len(x)}")
    ratio = (norms[both] / fmn[both]).double()
    q = torch.quantile(ratio, torch.tensor([0.5, 0.9], dtype=torch.float64))
    print(f"{name} {norm}: ratio to FMN median {q[0]:.3f}, p90 {q[1]:.3f}, max {ratio.max():.3f}, n={len(ratio)}")
    assert float(q[0]) <= 1.1 and float(q[1]) <= 1.1, ratio


@pytest.mark.parametrize("name, norm, eps", [("fab", "linf", 0.06), ("fab-t", "l2", 0.8), ("cw-l2", "l2", 0.8)])
def test_min_norm_verdicts_do_not_depend_on_the_batch_plan(digits_mlp, name, norm, eps):
    model, x, y = digits_mlp
    x, y = x[:21], y[:21]  # reduced budgets and points: seconds, while every code path still runs
    kw = {"steps": 20, "binary_search_steps": 3} if name == "cw-l2" else {"steps": 20, "restarts": 1}
    if name == "fab-t":
        kw["n_target_classes"] = 2
    attack = make(name, norm, eps, **kw)
    ids = torch.arange(len(x))
    whole = attack(model, x, y, index=ids, seed=0)
    parts = torch.cat(
        [attack(model, x[s : s + 7], y[s : s + 7], index=ids[s : s + 7], seed=0) for s in range(0, len(x), 7)]
    )
    assert_same_outcome(model, x, y, whole, parts, ThreatModel(norm, eps))
    _, n_whole = attack.minimal(model, x, y, index=ids)
    n_parts = torch.cat(
        [attack.minimal(model, x[s : s + 7], y[s : s + 7], index=ids[s : s + 7])[1] for s in range(0, len(x), 7)]
    )
    assert torch.equal(torch.isfinite(n_whole), torch.isfinite(n_parts))  # found / not found is a verdict


def test_fixed_mode_stops_early_with_the_same_verdicts(digits_mlp):
    """cw-l2 fixed: a sample found within eps skips the remaining binary-search steps; min-norm runs them all."""
    model, x, y = digits_mlp
    counting = Counting(model)
    verdicts, passes = {}, {}
    for mode in ("fixed", "min-norm"):
        counting.reset()
        attack = ATTACKS.create("cw-l2", norm="l2", eps=1.5, steps=20, binary_search_steps=4, mode=mode)
        xa = attack(counting, x, y, index=torch.arange(len(x)))
        passes[mode] = counting.forward_images
        with torch.no_grad():
            verdicts[mode] = model(xa).argmax(1) == y
    assert torch.equal(verdicts["fixed"], verdicts["min-norm"])
    assert int((~verdicts["fixed"]).sum()) >= 3  # some samples break early: the early stop has work to skip
    assert passes["fixed"] < passes["min-norm"]


def test_misclassified_inputs_have_norm_zero():
    model = affine(5)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    y = (model(x).argmax(1) + 1) % 4  # every label wrong
    for attack in (FAB("l2", 0.5, mode="min-norm"), FABTargeted("linf", 0.1, mode="min-norm"), CWL2("l2", 0.5)):
        xa, norms = attack.minimal(model, x, y)
        assert torch.equal(norms, torch.zeros(6)) and torch.equal(xa, x)


def test_mode_is_declared_and_checked():
    for name in ("fab", "fab-t", "cw-l2"):
        assert ATTACKS.get(name).params["mode"].choices == ("fixed", "min-norm")
        with pytest.raises(UsageError, match="mode"):
            ATTACKS.create(name, norm="l2", eps=0.5, mode="minnorm")
    # a min-norm search never stops at eps, and the recorded config says so
    assert ATTACKS.create("fab", eps=0.1, mode="min-norm").config()["early_stop"] is False
    assert ATTACKS.create("fab", eps=0.1).config()["mode"] == "fixed"
