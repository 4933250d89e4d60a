"""Every attack's declared cost (`harness.cost`) against a counted run: exact on a model nothing breaks
(the full budget runs), an upper bound on one where early stopping drops broken samples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.cost import Cost
from harness.registry import ATTACKS, CERTIFIERS

N, K, SHAPE = 6, 4, (1, 8, 8)
# Small budgets that still exercise every loop: restarts, targets, EOT, binary search, MALT ranking.
BUDGETS = [
    ("fgsm", {}),
    ("pgd", {"steps": 5, "restarts": 2}),
    ("pgd", {"steps": 4, "restarts": 1, "keep": "last", "early_stop": False}),
    ("pgd", {"steps": 3, "restarts": 2, "eot_samples": 3}),
    ("cw-linf", {"steps": 5}),
    ("apgd-ce", {"steps": 5, "restarts": 2}),
    ("apgd-dlr", {"steps": 4, "eot_iter": 2}),
    ("apgd-t", {"steps": 4, "n_target_classes": 2}),
    ("apgd-t", {"steps": 3, "n_target_classes": 9, "target_order": "malt"}),
    ("fab", {"steps": 5, "restarts": 2}),
    ("fab-t", {"steps": 4, "n_target_classes": 2}),
    ("fmn", {"steps": 5, "restarts": 2}),
    ("square", {"n_queries": 10, "restarts": 2}),
    ("autoattack", {"version": "custom", "components": ["apgd-ce", "apgd-t", "fab-t", "square"],
                    "component_params": {"apgd-ce": {"steps": 3}, "apgd-t": {"steps": 3, "n_target_classes": 2},
                                         "fab-t": {"steps": 3, "n_target_classes": 2}, "square": {"n_queries": 5}}}),
]  # fmt: skip


class _CountGrad(torch.autograd.Function):
    """Identity whose backward counts the images a gradient passed back through."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        ctx.counter.backward += len(g)
        return g, None


class Counted(nn.Module):
    """The model as the attack sees it, counting forward and backward passes of single images."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.forward_count = 0
        self.backward = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_count += len(x)
        return self.net(_CountGrad.apply(x, self) if x.requires_grad else x)

    @property
    def cost(self) -> Cost:
        return Cost(self.forward_count, self.backward)


def _net(robust: bool) -> nn.Module:
    """Linear on 8x8 images; ``robust``: class 0 leads by 50 logits, so no eps-bounded attack breaks it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, K))
    with torch.no_grad():
        if robust:
            net[1].weight.mul_(0.01)
            net[1].bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
    return net.eval()


def _data(robust: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, *SHAPE, generator=g)
    y = torch.zeros(N, dtype=torch.long) if robust else torch.randint(0, K, (N,), generator=g)
    return x, y


def _norm(name: str) -> str:
    return "l2" if name == "cw-l2" else "linf"


@pytest.mark.parametrize("name, params", [*BUDGETS, ("cw-l2", {"steps": 5, "binary_search_steps": 2})])
def test_declared_cost_is_exact_when_nothing_breaks_and_a_bound_otherwise(name, params):
    eps = 0.5 if name == "cw-l2" else 8 / 255
    attack = ATTACKS.create(name, norm=_norm(name), eps=eps, **params)
    declared = attack.cost(N, num_classes=K)
    assert isinstance(declared, Cost) and declared.forward > 0
    for robust in (True, False):
        model = Counted(_net(robust))
        x, y = _data(robust)
        attack(model, x, y)
        if robust:  # the full budget ran: the declaration is the count, pass for pass
            assert model.cost == declared, (name, model.cost, declared)
        else:  # early stopping can only save passes
            assert model.cost.forward <= declared.forward and model.cost.backward <= declared.backward, name


def test_smoothing_declared_cost_is_exact_on_a_model_it_certifies():
    cert = CERTIFIERS.create(
        "smoothing-l2", sigma=0.25, n0=10, n=20, alpha=0.01, radii=[0.0, 0.25], attack_steps=2, eot_samples=2,
        n_verdict=10,
    )  # fmt: skip
    model = Counted(_net(True))
    x, y = _data(True)
    cert.run(model, x, y, index=torch.arange(N), seed=0, num_classes=K)
    assert model.cost == cert.cost(N, num_classes=K)


def test_reference_backends_do_not_declare():
    aa = ATTACKS.create("autoattack", norm="linf", eps=8 / 255, backend="pyautoattack")
    assert aa.cost(N, num_classes=K) is None
