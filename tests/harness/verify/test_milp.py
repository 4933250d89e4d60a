"""The MILP verifier: exact on tiny ReLU networks, exact on affine ones, open on time-outs.

The oracle is `enumeration`: every activation pattern of the network solved as a linear program
with scipy's linprog, independent of the verifier's encoding. Max pooling is checked through an
equivalent ReLU network (max(a, b) = relu(a - b) + relu(b) - relu(-b)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import UsageError
from harness.registry import VERIFIERS
from harness.verify import FALSIFIED, OPEN, VERIFIED

from .enumeration import layers_of, min_margin, min_radius


def tiny_mlp(seed: int, widths=(4, 4), d: int = 4, k: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    w = d
    for h in widths:
        layers += [nn.Linear(w, h), nn.ReLU()]
        w = h
    layers.append(nn.Linear(w, k))
    return nn.Sequential(*layers).eval()


def check_against_enumeration(model, x, y, eps):
    layers = layers_of(model)
    v = VERIFIERS.create("milp", eps=eps, time_limit=30).verify(model, x, y)
    for i in range(len(x)):
        exact = min_margin(layers, x[i].flatten().double().numpy(), int(y[i]), eps)
        s = int(v.status[i])
        if exact > 1e-4:
            assert s == VERIFIED, (i, exact, v.bound[i])
            assert float(v.bound[i]) <= exact + 1e-6  # a proven lower bound
        elif exact < -1e-4:
            assert s == FALSIFIED, (i, exact)
            assert abs(float(v.bound[i]) - exact) < 1e-5  # the most violating point's margin
            xa = v.x_adv[i : i + 1]
            assert float((xa - x[i : i + 1]).abs().max()) <= eps + 1e-6
            assert float(xa.min()) >= 0 and float(xa.max()) <= 1
            with torch.no_grad():
                assert int(model(xa).argmax(1)) != int(y[i])
    return v


def run_enumeration_case(seed: int, widths: tuple[int, ...], n: int) -> None:
    model = tiny_mlp(seed, widths)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 2, generator=g)
    y = model(x).argmax(1)
    layers = layers_of(model)
    radius = VERIFIERS.create("milp", eps=0.1, time_limit=30).minimal_radius(model, x, y, t_max=1.0)
    exact_r = np.array([min_radius(layers, x[i].flatten().double().numpy(), int(y[i])) for i in range(len(x))])
    for i in range(len(x)):
        if np.isinf(exact_r[i]):
            assert np.isinf(float(radius.upper[i])) and float(radius.lower[i]) == 1.0
        else:
            assert abs(float(radius.upper[i]) - exact_r[i]) < 1e-5
            assert abs(float(radius.lower[i]) - exact_r[i]) < 1e-5
    finite = exact_r[np.isfinite(exact_r)]
    # verdicts at an eps near the radii (both answers occur) and a large one
    for eps in sorted({float(np.median(finite)) if len(finite) else 0.2, 0.3}):
        check_against_enumeration(model, x, y, eps)


@pytest.mark.parametrize("seed", [0, 1])
def test_milp_verdicts_and_radius_match_enumeration(seed):
    run_enumeration_case(seed, (3, 3), 3)  # 6 ReLUs: 64 patterns


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 8))
def test_milp_matches_enumeration_with_12_relus(seed):
    run_enumeration_case(seed, (6, 6), 4)  # 4096 patterns


class PoolNet(nn.Module):
    """Linear -> (1, 2, 2) -> max over pairs -> Linear."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 4)
        self.pool = nn.MaxPool2d((1, 2))
        self.fc2 = nn.Linear(2, k)

    def forward(self, x):
        return self.fc2(self.pool(self.fc1(x.flatten(1)).view(-1, 1, 2, 2)).flatten(1))


def relu_equivalent(net: PoolNet) -> nn.Sequential:
    """The same function as a ReLU network: [a - b, b, -b] -> relu -> m = r0 + r1 - r2 for each pair."""
    w1, b1 = net.fc1.weight.detach().double(), net.fc1.bias.detach().double()
    mix = torch.tensor(
        [[1, -1, 0, 0], [0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 1, -1], [0, 0, 0, 1], [0, 0, 0, -1]], dtype=torch.float64
    )
    back = torch.tensor([[1, 1, -1, 0, 0, 0], [0, 0, 0, 1, 1, -1]], dtype=torch.float64)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(w1.shape[1], 6), nn.ReLU(), nn.Linear(6, net.fc2.out_features)).double()
    with torch.no_grad():
        seq[1].weight.copy_(mix @ w1)
        seq[1].bias.copy_(mix @ b1)
        seq[3].weight.copy_(net.fc2.weight.double() @ back)
        seq[3].bias.copy_(net.fc2.bias.double())
    return seq


def test_l1_minimal_radius_matches_enumeration():
    model = tiny_mlp(11, (3, 3))
    x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(11))
    y = model(x).argmax(1)
    layers = layers_of(model)
    got = VERIFIERS.create("milp", eps=0.1).minimal_radius(model, x, y, t_max=2.0, norm="l1")
    for i in range(len(x)):
        exact = min_radius(layers, x[i].flatten().double().numpy(), int(y[i]), t_max=2.0, norm="l1")
        if np.isinf(exact):
            assert np.isinf(float(got.upper[i]))
        else:
            assert abs(float(got.upper[i]) - exact) < 1e-5 and abs(float(got.lower[i]) - exact) < 1e-5
            assert abs(float((got.x_adv[i] - x[i]).abs().sum()) - exact) < 1e-4


def test_max_pooling_encoding_is_exact():
    torch.manual_seed(4)
    net = PoolNet(4, 3).eval()
    x = torch.rand(5, 1, 2, 2)
    y = net(x).argmax(1)
    eq = relu_equivalent(net)
    assert torch.allclose(eq(x.double()).float(), net(x), atol=1e-5)
    layers = layers_of(eq)
    radius = VERIFIERS.create("milp", eps=0.1).minimal_radius(net, x, y, t_max=1.0)
    for i in range(len(x)):
        exact = min_radius(layers, x[i].flatten().double().numpy(), int(y[i]))
        if np.isinf(exact):
            assert np.isinf(float(radius.upper[i]))
        else:
            assert abs(float(radius.upper[i]) - exact) < 1e-5


def test_linear_model_radius_is_the_closed_form():
    """An affine model: min_j (z_y - z_j) / ||w_y - w_j||_1 (inputs far enough from the box faces)."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).eval()
    with torch.no_grad():
        model[1].weight.mul_(4)
    x = torch.rand(6, 1, 2, 3) * 0.2 + 0.4
    y = model(x).argmax(1)
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    z = x.flatten(1).double() @ w.T + b  # float64: the fp32 forward pass is off by ~1e-7
    closed = torch.full((6,), float("inf"), dtype=torch.float64)
    for j in range(4):
        r = (z.gather(1, y[:, None]).squeeze(1) - z[:, j]) / (w[y] - w[j]).abs().sum(1)
        closed = torch.where(y == j, closed, torch.minimum(closed, r))
    assert float(closed.max()) < 0.4  # the box never binds
    milp = VERIFIERS.create("milp", eps=0.1).minimal_radius(model, x, y, t_max=0.5)
    assert torch.allclose(milp.upper, closed, atol=1e-6) and torch.allclose(milp.lower, closed, atol=1e-6)
    crown = VERIFIERS.create("crown", eps=0.1, tol=0.0).radius(model, x, y, steps=30, hi=0.5)
    assert (crown <= closed + 1e-9).all() and torch.allclose(crown, closed, atol=1e-7)


def test_time_out_leaves_points_open():
    model = tiny_mlp(7, widths=(48, 48), d=16, k=10)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    v = VERIFIERS.create("milp", eps=0.3, time_limit=0.05).verify(model, x, y)
    assert set(v.status.tolist()) <= {OPEN, FALSIFIED}
    assert (v.seconds < 5).all()


def test_milp_refuses_l2_and_bad_parameters():
    with pytest.raises(UsageError, match="L-inf"):
        VERIFIERS.create("milp", norm="l2", eps=0.5)
    with pytest.raises(UsageError):
        VERIFIERS.create("milp", time_limit=0)
    with pytest.raises(UsageError):
        VERIFIERS.create("milp", bounds="lp")
