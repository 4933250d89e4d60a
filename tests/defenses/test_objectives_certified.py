"""IBP and CROWN-IBP certified training: hand-computed bounds and losses, schedules, and a digits epoch.

The tiny network: x in R^2 (an image of shape 1 x 1 x 2), W1 = [[1, -1], [2, 1]], b1 = [0.05, -1],
ReLU, W2 = [[1, 2], [-1, 1]], b2 = [0.1, -0.2]; x = (0.5, 0.5), y = 0, eps = 0.1 (the ball stays in
[0, 1]). By hand:
- pre-activations: h1 = 0.05 +- 0.2 = [-0.15, 0.25] (unstable), h2 = 0.5 +- 0.3 = [0.2, 0.8] (active);
  after ReLU [0, 0.25] and [0.2, 0.8];
- the margin z_0 - z_1 = 2 r1 + r2 + 0.3 (the specification folded into the last layer);
- IBP: 2 * 0 + 0.2 + 0.3 = 0.5;
- CROWN with IBP intermediates: h1's adaptive lower slope is 1 (0.25 > 0.15), so the margin is at
  least 2 h1 + h2 + 0.3 = 4 x1 - x2 - 0.6, whose minimum over [0.4, 0.6]^2 is 0.4 (looser than
  IBP here, which is why CROWN-IBP mixes the two);
- natural logits at x: z = (1.15, 0.25).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from defenses.objective import StepState
from harness.errors import ModelError
from harness.registry import OBJECTIVES
from harness.rng import torch_generator

from .objective_helpers import make_ctx

NAT_CE = math.log(1 + math.exp(0.25 - 1.15))


def tiny_net() -> nn.Sequential:
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
        net[1].bias.copy_(torch.tensor([0.05, -1.0]))
        net[3].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
        net[3].bias.copy_(torch.tensor([0.1, -0.2]))
    return net


def setup(name: str, **params):
    net = tiny_net()
    x = torch.tensor([[[[0.5, 0.5]]]])
    y = torch.tensor([0])
    obj = OBJECTIVES.create(name, eps=0.2, warmup=0.1, rampup=0.5, **params)
    ctx = make_ctx(net, x, y, 2)
    ctx.epochs, ctx.steps_per_epoch = 10, 10  # 100 steps: warm-up to step 10, ramp-up to step 60
    obj.setup(ctx)
    return obj, net, x, y


def state(epoch: int, step: int) -> StepState:
    return StepState(epoch, step, 10, torch.arange(1), 7, torch_generator("t"), 2)


@pytest.mark.parametrize("name, lower", [("ibp", 0.5), ("crown-ibp", 0.5 * 0.4 + 0.5 * 0.5)])
def test_loss_at_mid_ramp_is_the_hand_computed_value(name, lower):
    obj, net, x, y = setup(name)
    loss, info = obj.loss(net, x, y, state(3, 5))  # step 35: progress 0.5 -> eps 0.1, kappa 0.75, beta 0.5
    assert float(info["eps"]) == pytest.approx(0.1)
    assert float(info["kappa"]) == pytest.approx(0.75)
    robust = math.log(1 + math.exp(-lower))  # CE of the worst-case logits (0, -lower)
    assert float(loss.detach()) == pytest.approx(0.75 * NAT_CE + 0.25 * robust, rel=1e-6)
    assert float(info["verified_train"]) == 1.0  # the lower bound is positive
    loss.backward()
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0  # bounds train the weights


def test_crown_ibp_at_the_end_of_the_ramp_is_pure_ibp():
    obj, net, x, y = setup("crown-ibp")
    loss, info = obj.loss(net, x, y, state(8, 0))  # after the ramp: eps 0.2, kappa 0.5, beta 0
    # eps 0.2: h1 = [-0.35, 0.45] -> r1 in [0, 0.45]; h2 = [-0.1, 1.1] -> r2 in [0, 1.1]; lower = 0 + 0 + 0.3
    assert float(info["eps"]) == pytest.approx(0.2)
    assert float(loss.detach()) == pytest.approx(0.5 * NAT_CE + 0.5 * math.log(1 + math.exp(-0.3)), rel=1e-6)


def test_warm_up_is_natural_training():
    obj, net, x, y = setup("ibp")
    loss, info = obj.loss(net, x, y, state(0, 5))
    assert float(loss.detach()) == pytest.approx(NAT_CE, rel=1e-6) and float(info["eps"]) == 0.0


def test_paper_defaults_and_parameter_checks():
    ibp, crown = OBJECTIVES.create("ibp"), OBJECTIVES.create("crown-ibp")
    assert (ibp.warmup, ibp.rampup, ibp.kappa_start, ibp.kappa_end) == (0.033, 0.167, 1.0, 0.5)
    assert (crown.warmup, crown.rampup, crown.kappa_end, crown.beta_start, crown.beta_end) == (
        0.01,
        0.61,
        0.5,
        1.0,
        0.0,
    )
    from harness.errors import UsageError

    ctx = make_ctx(tiny_net(), torch.zeros(1, 1, 1, 2), torch.tensor([0]), 2)
    for bad in ({"warmup": 0.7, "rampup": 0.5}, {"kappa_end": 2.0}, {"norm": "l1"}, {"eps": -0.1}):
        with pytest.raises(UsageError):
            OBJECTIVES.create("ibp", **bad).setup(ctx)
    with pytest.raises(UsageError):
        OBJECTIVES.create("crown-ibp", beta_end=-1.0).setup(ctx)


def test_batch_norm_in_training_mode_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    obj = OBJECTIVES.create("ibp", eps=0.1, warmup=0.0, rampup=0.0)
    obj.setup(make_ctx(net, x, y, 2))
    net.train()
    with pytest.raises(ModelError, match="BatchNorm2d"):
        obj.loss(net, x, y, StepState(0, 0, 1, torch.arange(2), 1, torch_generator("t"), 2))


@pytest.mark.parametrize("name", ["ibp", "crown-ibp"])
def test_one_epoch_on_digits(name):
    from harness.api import train

    torch.manual_seed(0)
    res = train(name, "mlp", "digits", epochs=1, progress=False, eval_samples=0, objective_params={"warmup": 0.0})
    row = res.log[-1]
    assert math.isfinite(row["loss"]) and math.isfinite(row["robust_ce"]) and row["eps"] > 0
    assert res.meta.objective == name


@pytest.mark.slow
def test_certified_training_beats_pgd_at_on_crown_verified_accuracy():
    """The claim of docs/verification.md on digits (MLP, 30 epochs, first 100 test digits, L-inf 0.1):
    IBP and CROWN-IBP training give a much higher CROWN-verified accuracy than PGD-AT."""
    from harness.api import load_dataset, train
    from harness.registry import VERIFIERS

    x, y = load_dataset("digits").batch(slice(0, 100))
    verified = {}
    for name, cfg in (
        ("pgd-at", {}),
        ("ibp", {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}),
        ("crown-ibp", {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}),
    ):
        torch.manual_seed(0)
        model = train(name, "mlp", "digits", epochs=30, progress=False, eval_samples=0, seed=0, **cfg).model.eval()
        verified[name] = float(VERIFIERS.create("crown", eps=0.1).verify(model, x, y).verified.float().mean())
    assert verified["ibp"] >= verified["pgd-at"] + 0.2, verified
    assert verified["crown-ibp"] >= verified["pgd-at"] + 0.2, verified
