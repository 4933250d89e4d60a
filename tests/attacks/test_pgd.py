"""PGD/FGSM against oracles: the closed-form worst case of linear models, and torchattacks."""

import pytest
import torch

from harness.registry import ATTACKS
from harness.threat import ThreatModel, lp_norm
from tests.conftest import LinearModel
from tests.verdicts import assert_same_outcome


def _linear_case(norm: str, eps: float, seed: int = 0, n: int = 64, d: int = 16, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g)
    b = torch.randn(k, generator=g) * 0.1
    # inputs in [eps, 1 - eps] so the [0, 1] box never binds and the closed form is exact
    x = eps + (1 - 2 * eps) * torch.rand(n, 1, 4, 4, generator=g)
    model = LinearModel(w, b).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    diff = w[y][:, None, :] - w[None, :, :].expand(n, k, d)  # (n, k, d): w_y - w_j
    base = (diff * x.flatten(1)[:, None, :]).sum(-1) + (b[y][:, None] - b[None, :])
    dual = diff.abs().sum(-1) if norm == "linf" else diff.norm(dim=-1)
    worst = base - eps * dual
    worst[torch.arange(n), y] = float("inf")
    return model, x, y, worst.min(1).values


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_the_analytic_worst_case_margin_of_a_linear_model(norm):
    eps = 0.05 if norm == "linf" else 0.3
    # L2 with 3+ classes has local optima (untargeted PGD may settle on a non-worst class j; targeted
    # APGD-T covers that), so the L2 oracle uses two classes where the optimum is unique.
    model, x, y, optimum = _linear_case(norm, eps, k=3 if norm == "linf" else 2)
    attack = ATTACKS.create(
        "pgd",
        norm=norm,
        eps=eps,
        steps=60,
        step_size=eps / 2 if norm == "linf" else eps,
        restarts=3,
        loss="margin",
        early_stop=False,
    )
    xa = attack(model, x, y)
    with torch.no_grad():
        z = model(xa)
    got = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], float("-inf")).amax(1)
    assert (lp_norm(xa - x, norm) <= eps + 1e-6).all()
    assert (got >= optimum - 1e-4).all(), "an attack cannot beat the optimum"
    assert (got <= optimum + 1e-4).all(), f"max gap {float((got - optimum).max()):.3g}"


def test_fgsm_is_exact_on_a_two_class_linear_model():
    model, x, y, optimum = _linear_case("linf", 0.05, seed=1, k=2)
    xa = ATTACKS.create("fgsm", norm="linf", eps=0.05, loss="margin")(model, x, y)
    with torch.no_grad():
        z = model(xa)
    got = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)
    assert torch.allclose(got, optimum, atol=1e-4)


def _robust_acc(model, x, y, xa):
    with torch.no_grad():
        return float(((model(x).argmax(1) == y) & (model(xa).argmax(1) == y)).float().mean())


def test_fgsm_and_pgd_agree_with_torchattacks_on_500_plus_samples(ce_digits_model, digits_test):
    import torchattacks

    model = ce_digits_model
    x, y = digits_test.batch(slice(None))
    assert len(x) >= 500
    eps = 0.1
    for ours, theirs in (
        (ATTACKS.create("fgsm", norm="linf", eps=eps), torchattacks.FGSM(model, eps=eps)),
        (
            ATTACKS.create("pgd", norm="linf", eps=eps, steps=20, step_size=eps / 8),
            torchattacks.PGD(model, eps=eps, alpha=eps / 8, steps=20, random_start=True),
        ),
        (
            ATTACKS.create("pgd", norm="l2", eps=1.0, steps=20, step_size=0.125),
            torchattacks.PGDL2(model, eps=1.0, alpha=0.125, steps=20, random_start=True),
        ),
    ):
        torch.manual_seed(0)
        a_ours = _robust_acc(model, x, y, ours(model, x, y, index=digits_test.ids))
        a_ref = _robust_acc(model, x, y, theirs(x, y))
        assert abs(a_ours - a_ref) <= 0.01, f"{ours}: ours {a_ours:.4f} vs torchattacks {a_ref:.4f}"


def test_results_do_not_depend_on_batch_size(ce_digits_model, digits_test):
    model = ce_digits_model
    x, y = digits_test.batch(slice(0, 60))
    ids = digits_test.ids[:60]
    attack = ATTACKS.create("pgd", norm="linf", eps=0.1, steps=10, restarts=2)
    whole = attack(model, x, y, index=ids, seed=5)
    parts = torch.cat(
        [attack(model, x[i : i + 7], y[i : i + 7], index=ids[i : i + 7], seed=5) for i in range(0, 60, 7)]
    )
    assert torch.equal(whole, attack(model, x, y, index=ids, seed=5))  # same batch plan: bit for bit
    # Other batch plans: the same verdicts and equally strong points, not the same bits (tests/verdicts.py).
    assert_same_outcome(model, x, y, whole, parts, ThreatModel("linf", 0.1))


def test_restarts_and_best_keeping_never_weaken_the_attack(ce_digits_model, digits_test):
    model = ce_digits_model
    x, y = digits_test.batch(slice(0, 200))
    ids = digits_test.ids[:200]
    one = ATTACKS.create("pgd", norm="linf", eps=0.1, steps=10, restarts=1)(model, x, y, index=ids, seed=1)
    three = ATTACKS.create("pgd", norm="linf", eps=0.1, steps=10, restarts=3)(model, x, y, index=ids, seed=1)
    assert _robust_acc(model, x, y, three) <= _robust_acc(model, x, y, one)


def test_parameters_are_frozen_during_the_attack_and_restored(ce_digits_model, digits_test):
    model = ce_digits_model
    x, y = digits_test.batch(slice(0, 8))
    for p in model.parameters():
        p.grad = None
    ATTACKS.create("pgd", norm="linf", eps=0.1, steps=2)(model, x, y)
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters()), "attacks must not compute weight gradients"
