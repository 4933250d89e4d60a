"""Soundness of IBP, CROWN and alpha-CROWN on random networks (hypothesis), and their ordering.

What is asserted, per random network (MLP; CNNs with normalisation, conv, eval-mode batch norm,
average or max pooling; a pre-activation residual block with or without a conv shortcut), input,
label, norm and eps:
- every margin z_y - z_j at 48 random points of the ball ∩ [0, 1] (L-inf: also box corners) and at
  the points an inline PGD on each margin finds lies within the lower and upper bounds of IBP,
  CROWN (CROWN intermediates), CROWN with IBP intermediates, alpha-CROWN and the raw backward
  CROWN bound (before it is intersected with IBP), up to 1e-4 of the logit scale (the model runs
  in fp32, the bounds in float64);
- the CROWN verifier's bounds are never looser than IBP's, and alpha-CROWN's lower bounds never
  looser than CROWN's (up to float64 rounding, 1e-9 relative).
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from harness.registry import VERIFIERS
from harness.rng import stream_seed
from harness.threat import ascent_direction, lp_norm, project_ball_box, random_start
from harness.verify.bounds import Domain, backward_bounds, crown_intermediate, ibp, margin_spec
from harness.verify.network import read_network

from .nets import KINDS, build

EPS = {"linf": st.floats(0.002, 0.25), "l2": st.floats(0.01, 1.5)}


def sample_ball(x: torch.Tensor, norm: str, eps: float, m: int, seed: int) -> torch.Tensor:
    """(N, m, *shape) points of the ball ∩ [0, 1]; clipping to [0, 1] never leaves the ball."""
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    shape = x.shape[1:]
    if norm == "linf":
        d = (torch.rand(n, m, *shape, generator=g) * 2 - 1) * eps
        corners = torch.randint(0, 2, (n, m // 2, *shape), generator=g) * 2.0 - 1
        d[:, : m // 2] = corners * eps
    else:
        d = torch.randn(n, m, *shape, generator=g)
        d = d / d.flatten(2).norm(dim=2).view(n, m, *([1] * len(shape)))
        d = d * eps * torch.rand(n, m, *([1] * len(shape)), generator=g)
    return (x[:, None] + d).clamp(0, 1)


def pgd_points(model, x, y, norm, eps, k, seed, steps=10):
    """For each rival j, the point an L-{norm} PGD minimising z_y - z_j ends at: (N, K, *shape)."""
    out = []
    idx = torch.arange(len(x))
    for j in range(k):
        xa = x + random_start(x, norm, eps, stream_seed(seed, j), idx)
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            z = model(xa)
            m = z.gather(1, y[:, None]).squeeze(1) - z[:, j]
            (g,) = torch.autograd.grad(m.sum(), xa)
            xa = project_ball_box(x, xa.detach() - 2.5 * eps / steps * ascent_direction(g, norm), norm, eps)
        out.append(xa.detach())
    return torch.stack(out, 1)


@given(
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 10**6),
    norm=st.sampled_from(["linf", "l2"]),
    n=st.integers(1, 3),
    k=st.integers(2, 4),
    shape=st.sampled_from([(1, 4), (2, 4), (1, 6)]),
    data=st.data(),
)
def test_bounds_contain_every_reachable_margin(kind, seed, norm, n, k, shape, data):
    eps = data.draw(EPS[norm])
    c, h = shape
    model = build(kind, c, h, k, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, h, generator=g)
    x[torch.rand(x.shape, generator=g) < 0.15] = 0.0  # pixels on the box faces
    x[torch.rand(x.shape, generator=g) < 0.15] = 1.0
    y = torch.randint(0, k, (n,), generator=g)

    pts = sample_ball(x, norm, eps, 48, seed)
    pts = torch.cat([pts, pgd_points(model, x, y, norm, eps, k, seed)], 1)
    assert float(lp_norm((pts - x[:, None]).flatten(0, 1), norm).max()) <= eps + 1e-6
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(n, pts.shape[1], k).double()
    margins = z.gather(2, y.view(n, 1, 1).expand(-1, pts.shape[1], 1)) - z  # (N, P, K)
    tol = 1e-4 * (1 + z.abs().amax())

    results = {}
    for name, params in (
        ("ibp", {}),
        ("crown", {}),
        ("crown", {"intermediate": "ibp"}),
        ("alpha-crown", {"iterations": 3}),
    ):
        b = VERIFIERS.create(name, norm=norm, eps=eps, **params).bounds(model, x, y)
        results[(name, params.get("intermediate", ""))] = b
        assert (margins >= b.lower[:, None, :] - tol).all(), f"{name} {params}: lower bound above a reachable margin"
        assert (margins <= b.upper[:, None, :] + tol).all(), f"{name} {params}: upper bound below a reachable margin"

    net = read_network(model, x)
    dom = Domain.around(x, norm, eps)
    spec = margin_spec(y, k, torch.float64)
    with torch.no_grad():
        for inter in (ibp(net, dom), crown_intermediate(net, dom)):
            lb, ub = backward_bounds(net, inter, net.output, spec, dom)
            assert (margins >= lb[:, None, :] - tol).all(), "raw CROWN lower bound above a reachable margin"
            assert (margins <= ub[:, None, :] + tol).all(), "raw CROWN upper bound below a reachable margin"

    ib, cr, al = results[("ibp", "")], results[("crown", "")], results[("alpha-crown", "")]
    slack = 1e-9 * (1 + ib.lower.abs() + ib.upper.abs())
    assert (cr.lower >= ib.lower - slack).all() and (cr.upper <= ib.upper + slack).all()
    assert (results[("crown", "ibp")].lower >= ib.lower - slack).all()
    assert (al.lower >= cr.lower - slack).all()


def test_crown_is_exact_on_affine_networks_and_ibp_is_not():
    """Two stacked linear layers: CROWN's L-inf bound is the exact minimum over the box; IBP's is looser."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.Linear(5, 3)).eval()
    x = torch.rand(4, 1, 2, 3) * 0.6 + 0.2
    y = torch.tensor([0, 1, 2, 0])
    eps = 0.1
    w = (model[2].weight @ model[1].weight).double()
    b = (model[2].weight @ model[1].bias + model[2].bias).double()
    xf = x.flatten(1).double()
    exact = torch.empty(4, 3, dtype=torch.float64)
    for i in range(4):
        d = w[y[i]] - w  # (3, 6): margin coefficients
        exact[i] = d @ xf[i] + (b[y[i]] - b) - eps * d.abs().sum(1)  # interior box: x +- eps in [0, 1]
    crown = VERIFIERS.create("crown", eps=eps).bounds(model, x, y)
    ibp_b = VERIFIERS.create("ibp", eps=eps).bounds(model, x, y)
    assert torch.allclose(crown.lower, exact, atol=1e-5)
    assert (ibp_b.worst() < crown.worst() - 1e-3).all()
