"""APGD oracles: closed-form worst cases on linear models, the reference implementation
(pyautoattack) on a digits CNN, exact pass counts, and batch-size independence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.apgd import checkpoints
from harness.logits import margin
from harness.registry import ATTACKS
from harness.threat import ThreatModel
from tests.verdicts import assert_same_outcome

torch.set_num_threads(1)


class Linear(nn.Module):
    """z = W flatten(x) + b, with a counter of image passes with and without input gradients."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)
        self.grad_images = 0
        self.plain_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_images += len(x)
        else:
            self.plain_images += len(x)
        return x.flatten(1) @ self.W.T + self.b


def three_class_model(d: int = 8) -> Linear:
    """Classes 0 and 1 are free; class 2 copies class 0's weights with its bias 50 lower.

    Class 2 never sets the worst case yet keeps softmax/DLR gradients exactly along the worst
    pair's margin gradient, so CE, DLR and targeted DLR all have the margin's maximiser.
    """
    g = torch.Generator().manual_seed(1)
    W = torch.randn(3, d, generator=g)
    W[2] = W[0]
    b = torch.tensor([0.0, -0.5 * (W[1] - W[0]).sum().item(), -50.0])  # boundary through x = 0.5
    return Linear(W, b)


def worst_margin(model: Linear, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """min_j (w_y - w_j).x + b_y - b_j - eps * ||w_y - w_j||_q, q the dual norm (box not binding)."""
    W, b = model.W.detach(), model.b.detach()
    xf = x.flatten(1)
    out = torch.full((len(x),), float("inf"))
    for j in range(W.shape[0]):
        dw = W[y] - W[j]
        dual = dw.abs().sum(1) if norm == "linf" else dw.norm(dim=1)
        mj = (dw * xf).sum(1) + b[y] - b[j] - eps * dual
        out = torch.where(y == j, out, torch.minimum(out, mj))
    return out


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.1)])
@pytest.mark.parametrize(
    "name,params", [("apgd-ce", {}), ("apgd-dlr", {}), ("apgd-t", {}), ("apgd-t", {"n_target_classes": 1})]
)
def test_linear_worst_case(name, params, norm, eps):
    model = three_class_model()
    g = torch.Generator().manual_seed(2)
    x = (0.3 + 0.4 * torch.rand(200, 1, 2, 4, generator=g)).clamp(eps, 1 - eps)  # box never binds
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample correct at its clean point
    assert set(y.tolist()) == {0, 1}
    opt = worst_margin(model, x, y, norm, eps)
    assert (opt > 0).sum() > 20 and (opt < 0).sum() > 20  # both robust and breakable samples
    attack = ATTACKS.create(name, norm=norm, eps=eps, **params)
    xa = attack(model, x, y)
    assert (xa - x).flatten(1).norm(p=float("inf") if norm == "linf" else 2, dim=1).max() <= eps + 1e-6
    with torch.no_grad():
        m = margin(model(xa), y)
    robust = opt > 0
    # robust samples: the returned point attains the closed-form minimum margin
    assert torch.allclose(m[robust], opt[robust], atol=1e-4), (m - opt)[robust].abs().max()
    # breakable samples: a misclassified point is returned
    assert (m[~robust] < 0).all()


def test_checkpoint_schedule_matches_reference_rule():
    # 100 iterations: windows 22, 19, 16, 13, 10, 7, 6, 6, ... (0.22, -0.03 per check, floor 0.06)
    cps = checkpoints(100)
    assert [k for _, k in cps[:8]] == [22, 19, 16, 13, 10, 7, 6, 6]
    assert cps[0][0] == 21 and cps[1][0] == 40
    assert all(i < 100 for i, _ in cps) and cps[-1][0] + 6 >= 100


def _ten_class_robust_model() -> Linear:
    g = torch.Generator().manual_seed(3)
    W = torch.randn(10, 16, generator=g)
    b = torch.zeros(10)
    b[0] = 1000.0  # class 0 wins everywhere in the ball: every sample stays robust
    return Linear(W, b)


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_pass_count_matches_reference(name):
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    model = _ten_class_robust_model()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    xa = ATTACKS.create(name, norm="linf", eps=0.1)(model, x, y)
    native = (model.grad_images, model.plain_images)
    model.grad_images = model.plain_images = 0
    if name == "apgd-ce":
        ref = APGDAttack(model, eps=0.1, norm="Linf", seed=0, loss="ce")
        runs = 1
    else:
        ref = APGDAttack_targeted(model, eps=0.1, norm="Linf", seed=0, n_target_classes=9)
        runs = 9
    ref.perturb(x, y)
    reference = (model.grad_images, model.plain_images)
    assert (model(xa).argmax(1) == y).all()
    # forward+backward passes: one at the start point plus one per iteration, per run, per sample
    assert native[0] == reference[0] == 4 * runs * (100 + 1)
    # plain forwards: the reference re-evaluates the clean batch once per target; native once in all
    assert native[1] == 4 and reference[1] == 4 * (1 + (runs if name == "apgd-t" else 0))


@pytest.mark.parametrize("name,params", [("apgd-ce", {"steps": 25}), ("apgd-t", {"steps": 25, "n_target_classes": 2})])
def test_batch_size_independent(digits_cnn, name, params):
    from harness import api

    x, y = api.load_dataset("digits").batch(slice(0, 64))
    ids = torch.arange(1000, 1064)
    attack = ATTACKS.create(name, norm="linf", eps=0.1, **params)
    whole = attack(digits_cnn, x, y, index=ids, seed=5)
    parts = torch.cat(
        [attack(digits_cnn, x[i : i + 7], y[i : i + 7], index=ids[i : i + 7], seed=5) for i in range(0, 64, 7)]
    )
    assert torch.equal(whole, attack(digits_cnn, x, y, index=ids, seed=5))  # same batch plan: bit for bit
    # Other batch plans: the same verdicts and equally strong points, not the same bits (tests/verdicts.py).
    assert_same_outcome(digits_cnn, x, y, whole, parts, ThreatModel("linf", 0.1))


def _oracle(model, n: int, eps: float, split: str = "test"):
    from pyautoattack.autopgd_base import APGDAttack

    from harness import api

    ds = api.load_dataset(f"digits:split={split}")
    x, y = ds.batch(slice(0, n))
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    xn = ATTACKS.create("apgd-ce", norm="linf", eps=eps)(model, x, y, index=ds.ids[:n], seed=0)
    torch.manual_seed(0)
    xr = APGDAttack(model, eps=eps, norm="Linf", seed=0, loss="ce").perturb(x, y)
    with torch.no_grad():
        rn, rr = model(xn).argmax(1) == y, model(xr).argmax(1) == y
    return x, y, correct, rn, rr


def test_apgd_ce_matches_pyautoattack(digits_cnn):
    """Modest sample: native may differ from the reference by at most one sample, never weaker beyond."""
    n = 120
    _, _, _, rn, rr = _oracle(digits_cnn, n, 0.1)
    acc_n, acc_r = rn.float().mean().item(), rr.float().mean().item()
    agreement = (rn == rr).float().mean().item()
    print(f"native {acc_n:.4f} reference {acc_r:.4f} agreement {agreement:.4f}")
    assert 0.2 < acc_r < 0.9  # eps gives a meaningful robust accuracy
    assert acc_n <= acc_r + 1.0 / n + 1e-9
    assert agreement >= 0.96


@pytest.mark.slow
def test_apgd_ce_and_t_match_pyautoattack_1797(digits_cnn):
    """All 1797 digits: APGD-CE within +-0.5 points of the reference, APGD-T too."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    from harness import api

    x, y, _, rn, rr = _oracle(digits_cnn, 1797, 0.1, split="all")
    acc_n, acc_r = rn.float().mean().item(), rr.float().mean().item()
    print(f"APGD-CE native {acc_n:.4f} reference {acc_r:.4f} agreement {(rn == rr).float().mean().item():.4f}")
    assert abs(acc_n - acc_r) <= 0.005
    ids = api.load_dataset("digits:split=all").ids
    xn = ATTACKS.create("apgd-t", norm="linf", eps=0.1)(digits_cnn, x, y, index=ids, seed=0)
    torch.manual_seed(0)
    xr = APGDAttack_targeted(digits_cnn, eps=0.1, norm="Linf", seed=0, n_target_classes=9).perturb(x, y)
    with torch.no_grad():
        tn, tr = digits_cnn(xn).argmax(1) == y, digits_cnn(xr).argmax(1) == y
    print(
        f"APGD-T native {tn.float().mean():.4f} reference {tr.float().mean():.4f} "
        f"agreement {(tn == tr).float().mean():.4f}"
    )
    assert abs(tn.float().mean().item() - tr.float().mean().item()) <= 0.005


def test_malt_ranks_targets_by_the_linear_boundary_distance():
    from attacks.apgd import malt_targets

    g = torch.Generator().manual_seed(5)
    model = Linear(torch.randn(10, 16, generator=g), torch.randn(10, generator=g))
    x = torch.rand(64, 1, 4, 4, generator=g)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    W = model.W.detach()
    for norm, q in (("linf", 1), ("l2", 2)):
        got = malt_targets(model, x, y, z, norm, candidates=9)
        # closed form: |z_y - z_t| / ||w_t - w_y||_q, nearest first, over all 9 other classes
        dist = (z.gather(1, y[:, None]) - z).abs() / (W[None] - W[y][:, None]).norm(p=q, dim=-1)
        dist.scatter_(1, y[:, None], float("inf"))
        assert torch.equal(got, dist.argsort(1)[:, :9])


def test_malt_pass_count_is_the_reference_budget_plus_one_ranking_pass():
    model = _ten_class_robust_model()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    xa = ATTACKS.create("apgd-t", norm="linf", eps=0.1, n_target_classes=3, target_order="malt")(model, x, y)
    # per target: start point + 100 iterations, as the reference; plus one forward (with its 9
    # backward passes) to rank the targets, and one plain forward of the clean batch
    assert model.grad_images == 4 * (3 * (100 + 1) + 1)
    assert model.plain_images == 4
    assert (model(xa).argmax(1) == y).all()
