"""The bound-based verifiers (IBP, CROWN, alpha-CROWN), registered in `harness.registry.VERIFIERS`.

A verifier is built for one threat model (norm, eps) and called as ``verifier(model, x, y)``; it
returns a `Verdict` per sample: verified where the certified lower bound of every margin
z_y - z_j exceeds ``tol`` (and the clean point is classified right), open elsewhere. ``radius``
bisects the largest radius the verifier proves, per sample: a lower bound on the robust radius.
Everything runs batched on the device of ``x`` (the model's), in ``dtype`` (float64 by default, so
the bound's own rounding is far below ``tol``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import VERIFIERS
from harness.threat import NORMS, ThreatModel, norm_alias

from .bounds import Domain, Interval, backward_bounds, crown_intermediate, ibp, margin_spec, optimise_alpha
from .network import Network, read_network
from .ops import Affine
from .verdict import MarginBounds, Verdict

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter gradients while bounding (alpha-CROWN differentiates w.r.t. its slopes only)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def interval_concretize(a: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """min and max of a.h over the box lo <= h <= hi, for a of shape (B, S, *shape) and lo/hi (B, *shape)."""
    c = ((lo + hi) / 2).flatten(1).unsqueeze(2)
    r = ((hi - lo) / 2).flatten(1).unsqueeze(2)
    af = a.flatten(2)
    centre = torch.bmm(af, c).squeeze(2)
    spread = torch.bmm(af.abs(), r).squeeze(2)
    return centre - spread, centre + spread


def ibp_margins(net: Network, bounds: list[Interval], spec: Tensor) -> tuple[Tensor, Tensor]:
    """Interval bounds of spec . logits, the specification folded into the last affine layer (Gowal et al.)."""
    last = net.nodes[-1]
    if isinstance(last.op, Affine):
        a = last.op.backward(spec)
        lo, hi = interval_concretize(a, *bounds[last.inputs[0]])
        bt = last.op.bias_term(spec)
        return (lo, hi) if bt is None else (lo + bt, hi + bt)
    return interval_concretize(spec, *bounds[-1])


# Declarations (`harness.params`) checked by `harness.registry.Registry.create`.
NORM = Param("norm of the ball verified ('linf' or 'l2')", choices=NORMS, convert=norm_alias)
EPS = Param("radius of the ball in [0, 1] pixel units", gt=0)
TOL = Param("margin threshold: verified only when the lower bound exceeds tol * (1 + max |z|)", ge=0)
DTYPE = Param("floating type the bounds are computed in (float64 keeps them sound to rounding)", choices=DTYPES)


class BoundVerifier:
    """Base of the bound-based verifiers: ``margin_bounds`` is what a subclass defines."""

    PARAMS: ClassVar[dict[str, Param]] = {"norm": NORM, "eps": EPS, "tol": TOL, "dtype": DTYPE}

    def __init__(self, norm: str = "linf", eps: float = 8 / 255, tol: float = 1e-5, dtype: str = "float64") -> None:
        self.threat = ThreatModel(norm, eps)
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise UsageError(f"tol must be a finite number >= 0, not {tol!r}")
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
        self.tol = float(tol)
        self.dtype = dtype

    @property
    def norm(self) -> str:
        return self.threat.norm

    @property
    def eps(self) -> float:
        return self.threat.eps

    def margin_bounds(self, net: Network, dom: Domain, y: Tensor) -> MarginBounds:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public API ------------------------------------------------------------------------------
    def bounds(self, model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor | None = None) -> MarginBounds:
        """Bounds on z_y - z_j over the ball of radius ``eps`` (default: the threat's; may be per sample)."""
        net = read_network(model, x)
        with frozen_parameters(model):
            return self._bounds(net, x, y, self.eps if eps is None else eps)

    def verify(self, model: nn.Module, x: Tensor, y: Tensor) -> Verdict:
        """Per-sample verdicts at the threat model's eps."""
        t0 = time.perf_counter()
        net = read_network(model, x)
        with frozen_parameters(model):
            mb = self._bounds(net, x, y, self.eps)
            ok, thr = clean_threshold(model, x, y, self.tol)
        return Verdict.from_bound(mb.worst().cpu(), ok.cpu(), thr.cpu(), time.perf_counter() - t0)

    __call__ = verify

    def radius(self, model: nn.Module, x: Tensor, y: Tensor, *, hi: float | None = None, steps: int = 16) -> Tensor:
        """Largest radius proven per sample, by bisection on [0, hi] (a lower bound on the robust radius).

        ``hi`` defaults to 1 (L-inf) or the diameter of [0, 1]^d (L2). Each proven radius was
        verified at that radius, so the result is sound whatever the bound's behaviour in eps;
        it is within (hi / 2^steps) of the largest radius this verifier proves when proofs are
        monotone in eps (they are for IBP and CROWN: their relaxations only widen as eps grows).
        Misclassified points get 0.
        """
        if steps < 1:
            raise UsageError(f"steps must be >= 1, not {steps}")
        if hi is None:
            hi = 1.0 if self.norm == "linf" else math.sqrt(math.prod(x.shape[1:]))
        net = read_network(model, x)
        n = len(x)
        lo_r = torch.zeros(n, dtype=torch.float64, device=x.device)
        hi_r = torch.full((n,), float(hi), dtype=torch.float64, device=x.device)
        with frozen_parameters(model):
            ok, thr = clean_threshold(model, x, y, self.tol)
            ok, thr = ok.to(x.device), thr.to(x.device)
            top = self._bounds(net, x, y, hi_r).worst() > thr
            lo_r = torch.where(top & ok, hi_r, lo_r)
            todo = ok & ~top
            for _ in range(steps):
                if not bool(todo.any()):
                    break
                mid = (lo_r + hi_r) / 2
                proven = self._bounds(net, x, y, mid).worst() > thr
                lo_r = torch.where(todo & proven, mid, lo_r)
                hi_r = torch.where(todo & ~proven, mid, hi_r)
        return torch.where(ok, lo_r, torch.zeros_like(lo_r))

    def config(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "threat"}
        return {"verifier": getattr(type(self), "registry_name", type(self).__name__), **self.threat.__dict__, **out}

    # -- internals -------------------------------------------------------------------------------
    def _bounds(self, net: Network, x: Tensor, y: Tensor, eps: float | Tensor) -> MarginBounds:
        dom = Domain.around(x, self.norm, eps, DTYPES[self.dtype])
        with torch.no_grad():
            return self.margin_bounds(net, dom, y)


def clean_threshold(model: nn.Module, x: Tensor, y: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """(classified right with finite logits, the per-sample threshold a margin bound must exceed).

    The threshold is ``tol * (1 + max_j |z_j(x)|)`` in float64: the bounds are about the network in
    exact arithmetic, the engine scores its fp32 forward pass, whose rounding grows with the logits'
    scale (about 1e-6 of it); the default tol 1e-5 keeps a verdict clear of that.
    """
    with torch.no_grad():
        z = model(x)
    finite = torch.isfinite(z).all(1)
    ok = finite & (z.argmax(1) == y)
    scale = torch.where(finite, z.detach().abs().amax(1).double(), torch.full_like(z[:, 0], float("inf")).double())
    return ok, tol * (1 + scale)


@VERIFIERS.register("ibp")
class IBPVerifier(BoundVerifier):
    """Interval bound propagation (Gowal et al. 2018): intervals layer by layer, margins folded into the last layer."""

    def margin_bounds(self, net: Network, dom: Domain, y: Tensor) -> MarginBounds:
        bounds = ibp(net, dom)
        spec = margin_spec(y, net.nodes[-1].shape[0], dom.x.dtype)
        lo, hi = ibp_margins(net, bounds, spec)
        return MarginBounds(lo, hi, y)


@VERIFIERS.register("crown")
class CROWNVerifier(BoundVerifier):
    """CROWN (Zhang et al. 2018): backward linear relaxation with adaptive ReLU slopes, never looser than IBP.

    ``intermediate="crown"`` bounds the pre-ReLU nodes IBP leaves unstable by CROWN too (full
    CROWN); ``"ibp"`` keeps IBP's intermediate bounds (the CROWN-IBP bound, much cheaper).
    """

    PARAMS: ClassVar[dict[str, Param]] = {
        "intermediate": Param("bounds of the pre-ReLU nodes: 'crown' (full CROWN) or 'ibp' (CROWN-IBP)",
                              choices=("crown", "ibp")),
    }  # fmt: skip

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        tol: float = 1e-5,
        dtype: str = "float64",
        intermediate: str = "crown",
    ) -> None:
        super().__init__(norm, eps, tol, dtype)
        if intermediate not in ("crown", "ibp"):
            raise UsageError(f"unknown intermediate bounds {intermediate!r}", "use 'crown' or 'ibp'")
        self.intermediate = intermediate

    def intermediate_bounds(self, net: Network, dom: Domain) -> list[Interval]:
        return crown_intermediate(net, dom) if self.intermediate == "crown" else ibp(net, dom)

    def margin_bounds(self, net: Network, dom: Domain, y: Tensor) -> MarginBounds:
        return self._crown(net, dom, y)[2]

    def _crown(self, net: Network, dom: Domain, y: Tensor) -> tuple[list[Interval], Tensor, MarginBounds]:
        bounds = self.intermediate_bounds(net, dom)
        spec = margin_spec(y, net.nodes[-1].shape[0], dom.x.dtype)
        lb, ub = backward_bounds(net, bounds, net.output, spec, dom)
        assert lb is not None and ub is not None
        il, iu = ibp_margins(net, bounds, spec)
        return bounds, spec, MarginBounds(torch.maximum(lb, il), torch.minimum(ub, iu), y)


@VERIFIERS.register("alpha-crown")
class AlphaCROWNVerifier(CROWNVerifier):
    """alpha-CROWN (Xu et al. 2021): CROWN with the lower ReLU slopes optimised by projected Adam.

    The slopes (one per sample and neuron, shared by the margins) start at CROWN's adaptive choice;
    each of ``iterations`` Adam steps (learning rate ``lr``) raises the sum of the final lower
    bounds and clips the slopes to [0, 1]. Intermediate bounds stay CROWN's (not optimised).
    Every slope in [0, 1] gives a sound bound; the best per margin is kept, so the result is never
    looser than CROWN's.
    """

    PARAMS: ClassVar[dict[str, Param]] = {
        "iterations": Param("Adam steps on the ReLU slopes (0: plain CROWN)", ge=0),
        "lr": Param("Adam learning rate of the slopes", gt=0),
    }

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        tol: float = 1e-5,
        dtype: str = "float64",
        intermediate: str = "crown",
        iterations: int = 20,
        lr: float = 0.1,
    ) -> None:
        super().__init__(norm, eps, tol, dtype, intermediate)
        if int(iterations) != iterations or iterations < 0:
            raise UsageError(f"iterations must be an integer >= 0, not {iterations!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise UsageError(f"lr must be a positive number, not {lr!r}")
        self.iterations = int(iterations)
        self.lr = float(lr)

    def margin_bounds(self, net: Network, dom: Domain, y: Tensor) -> MarginBounds:
        bounds, spec, base = self._crown(net, dom, y)
        lower = optimise_alpha(net, bounds, spec, dom, iterations=self.iterations, lr=self.lr, initial=base.lower)
        return MarginBounds(torch.maximum(lower, base.lower), base.upper, y)


__all__ = [
    "AlphaCROWNVerifier",
    "BoundVerifier",
    "CROWNVerifier",
    "IBPVerifier",
    "frozen_parameters",
    "ibp_margins",
    "interval_concretize",
]
