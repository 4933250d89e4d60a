"""Threat models (norm, eps): the geometry every attack shares, and the contract the engine enforces.

Attacks search; the engine verifies. `enforce_contract` is the independent re-verification of every
adversarial example (inside the eps-ball up to `TOLERANCE`, inside [0, 1], finite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.errors import ThreatModelViolation, UsageError
from harness.rng import keyed_normal, keyed_uniform, stream_seed

NORMS = ("linf", "l2")
# Float slack for |x_adv - x| <= eps: float32 rounding of (x + d) - x is below 1 ulp of 1.0 (~6e-8);
# 1e-6 leaves margin for L2 norms accumulated over many pixels while staying far below any eps used.
TOLERANCE = 1e-6


def canonical_norm(norm: str) -> str:
    n = norm.lower().replace("-", "").replace("_", "")
    n = {"linf": "linf", "inf": "linf", "l∞": "linf", "l2": "l2", "2": "l2"}.get(n, n)
    if n not in NORMS:
        raise UsageError(f"unknown norm {norm!r}", "use 'linf' or 'l2'")
    return n


def norm_alias(norm: object) -> object:
    """'Linf', 'inf', 'L2', ... -> 'linf'/'l2'; anything else unchanged, for a declared `choices` to refuse."""
    try:
        return canonical_norm(norm)  # type: ignore[arg-type]
    except (UsageError, AttributeError):
        return norm


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation set: the ``norm`` ball of radius ``eps`` intersected with [0, 1]."""

    norm: str
    eps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        bad_type = isinstance(self.eps, bool) or not isinstance(self.eps, (int, float))
        if bad_type or not math.isfinite(self.eps) or self.eps <= 0:
            raise UsageError(
                f"eps must be a positive number, not {self.eps!r}",
                "eps is the radius of the threat model in [0, 1] pixel units, e.g. 8/255 = 0.0314 for L-inf",
            )
        if self.norm == "linf" and self.eps > 1:
            raise UsageError(
                f"L-inf eps {self.eps} exceeds 1, the whole pixel range",
                "eps is in [0, 1] pixel units: 8/255 is 0.0314",
            )

    @property
    def key(self) -> str:
        return f"{self.norm}-{self.eps:.6g}"

    def validate_for(self, shape: tuple[int, ...]) -> None:
        """L2 eps beyond the diagonal of the image cube is meaningless."""
        diag = math.sqrt(math.prod(shape))
        if self.norm == "l2" and self.eps > diag:
            raise UsageError(f"L2 eps {self.eps} exceeds the diameter {diag:.3g} of [0, 1]^{tuple(shape)}")


def _flat_norm(v: Tensor, norm: str) -> Tensor:
    f = v.flatten(1)
    return f.abs().amax(1) if norm == "linf" else f.norm(p=2, dim=1)


def lp_norm(v: Tensor, norm: str) -> Tensor:
    """Per-sample norm of a batch of perturbations."""
    return _flat_norm(v, norm)


def per_sample(t: Tensor, like: Tensor) -> Tensor:
    """A per-sample vector (mask, scale, eps) shaped to broadcast against the batch ``like``.

    The one helper for this reshape: attacks, defenses and analyses use it instead of writing
    ``t.view(-1, 1, 1, 1)`` (which assumes image batches) or its generic form out by hand.
    """
    return t.view(-1, *([1] * (like.dim() - 1)))


def project(delta: Tensor, norm: str, eps: float | Tensor) -> Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps`` (scalar or per sample)."""
    if norm == "linf":
        if isinstance(eps, Tensor):
            e = per_sample(eps, delta)
            return torch.maximum(torch.minimum(delta, e), -e)
        return delta.clamp(-eps, eps)
    n = _flat_norm(delta, "l2")
    e = eps if isinstance(eps, Tensor) else torch.full_like(n, eps)
    factor = torch.clamp(e / (n + 1e-12), max=1.0)
    return delta * per_sample(factor, delta)


def linf_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-pixel bounds of the L-inf ball around x intersected with [0, 1].

    Projecting onto both is then one clamp, ``v.clamp(lo, hi)`` (the reference's min/max/clamp
    chain gives the same floats), instead of subtract, clamp, add, clamp and subtract.
    """
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def project_ball_box(x: Tensor, v: Tensor, norm: str, eps: float, box: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``v`` moved back into the ``norm`` ball of radius eps around x and into [0, 1].

    ``box = linf_box(x, eps)`` (L-inf only) makes this a single clamp, done in place: pass a
    temporary (a freshly computed step), not a tensor you keep.
    """
    if box is not None:
        return v.clamp_(*box)
    return x + clip_box(x, project(v - x, norm, eps))


def clip_box(x: Tensor, delta: Tensor) -> Tensor:
    """Shrink ``delta`` so that x + delta lies in [0, 1] (keeps it inside any norm ball)."""
    return (x + delta).clamp(0.0, 1.0) - x


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit ``norm``-size: sign for L-inf, normalised gradient for L2."""
    if norm == "linf":
        return grad.sign()
    n = _flat_norm(grad, "l2")
    return grad / per_sample(n + 1e-12, grad)


def random_start(x: Tensor, norm: str, eps: float, seed: int, index: Tensor, init: str = "uniform") -> Tensor:
    """A keyed random initial perturbation (already projected and box-clipped).

    ``uniform``: uniform in the L-inf cube; for L2 a uniform direction at radius eps * U(0, 1) (the
    torchattacks convention: volume-uniform radii eps * u^(1/d) sit on the sphere in high dimension
    and measured slightly weaker on digits); ``normal``: 0.001 * N(0, 1) (TRADES/MART); ``zero``: no perturbation.
    """
    shape = tuple(x.shape[1:])
    if init == "zero":
        return torch.zeros_like(x)
    if init == "normal":
        d = 0.001 * keyed_normal(seed, index, shape).to(x.device, x.dtype)
    elif init == "uniform":
        if norm == "linf":
            d = (2 * keyed_uniform(seed, index, shape) - 1).to(x.device, x.dtype) * eps
        else:
            g = keyed_normal(stream_seed(seed, "dir"), index, shape).to(x.device, x.dtype)
            r = keyed_uniform(stream_seed(seed, "radius"), index, (1,)).to(x.device, x.dtype)
            d = g / per_sample(_flat_norm(g, "l2") + 1e-12, g) * per_sample(r, g) * eps
    else:
        raise UsageError(f"unknown init {init!r}", "use 'uniform', 'normal' or 'zero'")
    return clip_box(x, project(d, norm, eps))


def enforce_contract(x: Tensor, x_adv: Tensor, threat: ThreatModel, who: str = "attack") -> None:
    """Raise `ThreatModelViolation` unless x_adv is finite, in [0, 1] and inside the eps-ball (the attack contract)."""
    if x_adv.shape != x.shape:
        raise ThreatModelViolation(f"{who} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise ThreatModelViolation(f"{who} returned non-finite values")
    lo, hi = x_adv.amin(), x_adv.amax()
    if lo < 0 or hi > 1:
        raise ThreatModelViolation(f"{who} left [0, 1]: values in [{float(lo):.6g}, {float(hi):.6g}]")
    dist = lp_norm(x_adv - x, threat.norm)
    worst = dist.max() if len(dist) else torch.tensor(0.0)
    if worst > threat.eps + TOLERANCE:
        raise ThreatModelViolation(
            f"{who} left the {threat.norm} ball: distance {float(worst):.8g} > eps {threat.eps:.8g} (+{TOLERANCE:g})",
            "this is a bug in the attack; results were not recorded",
        )


# The former name of `enforce_contract` (public API, kept: "check" now means the sanity checks only).
check_contract = enforce_contract
