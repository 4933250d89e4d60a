"""Certified training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020).

Both minimise ``kappa * CE(z(x), y) + (1 - kappa) * CE(-m_lower, y)``, where m_lower (N, K) holds
certified lower bounds of the margins z_y - z_j over the eps-ball ∩ [0, 1] (0 at j = y), so the
second term is the cross-entropy of the worst-case logits. The bounds come from
`harness.verify` in float32 with gradients to the weights; the margin specification is folded into
the last layer (Gowal et al.'s elision).

Schedules, over the global step s = epoch * steps_per_epoch + step (0-based) and the total
T = epochs * steps_per_epoch: natural training for the first ``warmup * T`` steps, then eps ramps
linearly from 0 to ``eps`` over ``rampup * T`` steps, and kappa from ``kappa_start`` to
``kappa_end`` with it (both are at their final value afterwards). The papers count steps and
epochs; here they are fractions so that a short digits run keeps the papers' proportions.

- IBP, paper defaults (deepmind/interval-bound-propagation ``examples/train.py``, MNIST): 60001
  steps of batch 100, warm-up 2000 steps (warmup = 0.033), ramp-up 10000 steps (rampup = 0.167),
  nominal weight 1 -> 0.5 (kappa_start 1, kappa_end 0.5), training eps = 0.4 for a test eps of
  0.3 on MNIST (1.1x on CIFAR-10), Adam 1e-3.
- CROWN-IBP, paper defaults (huanzhang12/CROWN-IBP ``config/mnist_crown.json`` and
  ``defaults.json``): 100 epochs, ramp-up from epoch 1 over 61 epochs (warmup = 0.01,
  rampup = 0.61), kappa 1 -> final_kappa 0.5 (the paper also reports kappa_end = 0), the bound
  beta * CROWN-IBP + (1 - beta) * IBP with beta 1 -> final_beta 0 along the ramp-up, Adam 5e-4.
  CROWN-IBP's bound: IBP intermediate bounds, CROWN's backward pass for the last layer.

``eps=None`` takes the dataset's training eps for ``norm`` (0.1 L-inf on digits). The harness's
trainer schedules the learning rate; use ``--optimizer adam --lr 5e-4`` to follow the papers.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import OBJECTIVES
from harness.verify.bounds import Domain, backward_bounds, ibp, margin_spec
from harness.verify.network import Network, read_network
from harness.verify.verifiers import ibp_margins

from ..objective import Objective, StepState, TrainContext


def ramp(step: int, total: int, warmup: float, rampup: float) -> float:
    """Progress in [0, 1] of a linear ramp that starts after ``warmup * total`` steps and lasts ``rampup * total``."""
    start = warmup * total
    length = rampup * total
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start) / length)


def robust_cross_entropy(margin_lower: Tensor, y: Tensor) -> Tensor:
    """CE of the worst-case logits: logit 0 for y and -m_lower[j] for j != y (m_lower[y] must be 0)."""
    return F.cross_entropy(-margin_lower, y)


def mixed_loss(logits: Tensor, margin_lower: Tensor, y: Tensor, kappa: float) -> tuple[Tensor, Tensor, Tensor]:
    """(kappa * CE(z, y) + (1 - kappa) * robust CE, natural CE, robust CE)."""
    nat = F.cross_entropy(logits, y)
    rob = robust_cross_entropy(margin_lower, y)
    return kappa * nat + (1 - kappa) * rob, nat, rob


@dataclass
class _Certified(Objective):
    eps: float | None = None
    norm: str = "linf"
    warmup: float = 0.033
    rampup: float = 0.167
    kappa_start: float = 1.0
    kappa_end: float = 0.5

    PARAMS: ClassVar[dict[str, Param]] = {
        "eps": Param("certified radius trained for (None: the dataset's training eps)", gt=0, nullable=True),
        "norm": Param("norm of the certified ball", choices=("linf", "l2")),
        "warmup": Param("fraction of training steps of natural training before eps ramps up", ge=0, le=1),
        "rampup": Param("fraction of training steps over which eps rises linearly to its final value", ge=0, le=1),
        "kappa_start": Param("weight of the natural CE at the start of the ramp", ge=0, le=1),
        "kappa_end": Param("weight of the natural CE at the end of the ramp", ge=0, le=1),
    }
    _net: object = field(default=None, init=False, repr=False, compare=False)

    def setup(self, ctx: TrainContext) -> None:
        if self.norm not in ("linf", "l2"):
            raise UsageError(f"certified training bounds L-inf and L2 balls, not {self.norm!r}")
        for name in ("warmup", "rampup", "kappa_start", "kappa_end"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
                raise UsageError(f"{name} must be in [0, 1], not {v!r}")
        if self.warmup + self.rampup > 1:
            raise UsageError("warmup + rampup must not exceed 1 (they are fractions of the training steps)")
        if self.eps is None:
            self.eps = ctx.default_eps.get(self.norm, 8 / 255)
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise UsageError(f"eps must be a positive number, not {self.eps!r}")
        self._steps_per_epoch = ctx.steps_per_epoch

    def schedule(self, state: StepState) -> tuple[float, float]:
        """(eps, progress in [0, 1]) at this step."""
        spe = getattr(self, "_steps_per_epoch", 1)
        p = ramp(state.epoch * spe + state.step, state.epochs * spe, self.warmup, self.rampup)
        assert self.eps is not None, "setup() resolves eps"
        return self.eps * p, p

    def network(self, model: nn.Module, x: Tensor) -> Network:
        """The model read once (and re-read if another model or input shape comes)."""
        cached = self._net
        if isinstance(cached, tuple):
            ref, shape, net = cached
            if ref() is model and shape == tuple(x.shape[1:]):
                return net
        net = read_network(model, x)
        self._net = (weakref.ref(model), tuple(x.shape[1:]), net)
        return net

    def margin_lower(self, net: Network, x: Tensor, y: Tensor, eps: float, progress: float) -> Tensor:
        raise NotImplementedError

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        eps, p = self.schedule(state)
        kappa = self.kappa_start + p * (self.kappa_end - self.kappa_start)
        logits = model(x)
        if eps <= 0:  # warm-up: natural training
            nat = F.cross_entropy(logits, y)
            return nat, {"natural_ce": nat.detach(), "eps": torch.tensor(0.0)}
        net = self.network(model, x)
        lower = self.margin_lower(net, x, y, eps, p)
        loss, nat, rob = mixed_loss(logits, lower, y, kappa)
        masked = lower.scatter(1, y[:, None], float("inf"))
        verified = (masked.amin(1) > 0).float().mean()
        return loss, {
            "natural_ce": nat.detach(),
            "robust_ce": rob.detach(),
            "verified_train": verified.detach(),
            "eps": torch.tensor(eps),
            "kappa": torch.tensor(kappa),
        }


@OBJECTIVES.register("ibp")
@dataclass
class IBPTraining(_Certified):
    """IBP certified training (Gowal et al. 2018): kappa * CE + (1 - kappa) * CE of IBP worst-case logits."""

    def margin_lower(self, net: Network, x: Tensor, y: Tensor, eps: float, progress: float) -> Tensor:
        dom = Domain.around(x, self.norm, eps, torch.float32)
        bounds = ibp(net, dom)
        spec = margin_spec(y, net.nodes[-1].shape[0], torch.float32)
        lower, _ = ibp_margins(net, bounds, spec)
        return lower


@OBJECTIVES.register("crown-ibp")
@dataclass
class CrownIBPTraining(_Certified):
    """CROWN-IBP (Zhang et al. 2020): IBP intermediates, CROWN last layer, beta-mixed with IBP; kappa 1 -> 0.5."""

    warmup: float = 0.01
    rampup: float = 0.61
    beta_start: float = 1.0
    beta_end: float = 0.0

    PARAMS: ClassVar[dict[str, Param]] = {
        **_Certified.PARAMS,
        "beta_start": Param("weight of the CROWN bound (vs IBP) at the start of the ramp", ge=0, le=1),
        "beta_end": Param("weight of the CROWN bound (vs IBP) at the end of the ramp", ge=0, le=1),
    }

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        for name in ("beta_start", "beta_end"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
                raise UsageError(f"{name} must be in [0, 1], not {v!r}")

    def margin_lower(self, net: Network, x: Tensor, y: Tensor, eps: float, progress: float) -> Tensor:
        dom = Domain.around(x, self.norm, eps, torch.float32)
        bounds = ibp(net, dom)
        spec = margin_spec(y, net.nodes[-1].shape[0], torch.float32)
        ibp_lower, _ = ibp_margins(net, bounds, spec)
        beta = self.beta_start + progress * (self.beta_end - self.beta_start)
        if beta <= 0:
            return ibp_lower
        crown_lower, _ = backward_bounds(net, bounds, net.output, spec, dom, upper=False)
        assert crown_lower is not None
        return beta * crown_lower + (1 - beta) * ibp_lower


__all__ = ["CrownIBPTraining", "IBPTraining", "mixed_loss", "ramp", "robust_cross_entropy"]
