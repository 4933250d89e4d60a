"""Complement-entropy objectives: COT, GCE (Chen et al.) and hierarchical COT.

Sources followed (all [V], the authors' code): `henry8527/COT` ``code/COT.py`` and ``code/main.py``
for COT; `henry8527/GCE` ``GCE.py`` for GCE; `henry8527/HCOT` ``HCOT.py`` and ``main.py`` for HCOT.
With q_j = p_j / (1 - p_y + 1e-7) over the wrong classes j != y:

- COT: a CE step, then a second forward pass and a step of a *second* optimizer (same kind and
  settings as the main one) on L_C = (1/(B K)) sum_i sum_{j != y} q_ij log(q_ij + 1e-10). Minimising
  L_C flattens the wrong-class distribution. The official code gives both optimizers the same
  schedule; here the complement optimizer's lr is set to the main optimizer's current lr each step.
- GCE: one loss replacing CE, L = (1/B) sum_i (p_iy + 1e-7)^alpha sum_{j != y} q_ij log(q_ij + 1e-10)
  / log K, alpha = 1/3 (official 0.333).
- HCOT: COT's alternation, the complement step on inner + outer complement entropy. Inner: softmax
  over the logits of the true class's coarse group G only, complement entropy over G minus y,
  divided by |G| (the official code divides by the constant group size 5 of CIFAR-100) and B.
  Outer: full softmax, q_j = p_j / (1 - sum_{k in G} p_k + 1e-7) for j outside G, divided by K and B.
  Logs use clamp(q, 1e-10) as in the official HCOT code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import OBJECTIVES

from ..objective import Objective, StepState, TrainContext
from ._shared import complement_entropy_terms


def complement_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """COT's normalised complement entropy: sum over the batch of sum_{j != y} q log q, / (B K)."""
    b, k = logits.shape
    return complement_entropy_terms(logits, y).sum() / (b * k)


@OBJECTIVES.register("cot")
@dataclass
class COT(Objective):
    """Complement objective training (Chen et al. 2019): alternate a CE step and a complement-entropy step."""

    def setup(self, ctx: TrainContext) -> None:
        self.complement_optimizer = ctx.make_optimizer()

    def complement_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return complement_entropy(logits, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        """The CE half (used by `step`); the complement half is `complement_loss`."""
        return F.cross_entropy(model(x), y), {}

    def step(
        self, model: nn.Module, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer, state: StepState
    ) -> dict[str, Tensor]:
        model.train()
        ce, _ = self.loss(model, x, y, state)
        optimizer.zero_grad(set_to_none=True)
        ce.backward()
        optimizer.step()
        opt_c = self.complement_optimizer
        for gc, g in zip(opt_c.param_groups, optimizer.param_groups):
            gc["lr"] = g["lr"]
        lc = self.complement_loss(model(x), y)
        opt_c.zero_grad(set_to_none=True)
        lc.backward()
        opt_c.step()
        return {"loss": ce.detach(), "complement": lc.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"complement_optimizer": self.complement_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "complement_optimizer" in state:
            self.complement_optimizer.load_state_dict(state["complement_optimizer"])


@OBJECTIVES.register("gce")
@dataclass
class GCE(Objective):
    """Guided complement entropy (Chen et al. 2019): complement entropy scaled by p_y^alpha, replaces CE."""

    alpha: float = 1 / 3
    PARAMS: ClassVar[dict[str, Param]] = {"alpha": Param("exponent of the guiding factor p_y^alpha", ge=0)}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        z = model(x)
        py = z.softmax(1).gather(1, y[:, None]).squeeze(1)
        terms = complement_entropy_terms(z, y)
        return ((py + 1e-7) ** self.alpha * terms).mean() / math.log(z.shape[1]), {}


def hierarchical_complement_entropy(logits: Tensor, y: Tensor, coarse_of_fine: Tensor) -> tuple[Tensor, Tensor]:
    """HCOT's (inner, outer) complement entropies for fine labels ``y`` and a fine -> coarse map."""
    b, k = logits.shape
    group = coarse_of_fine[None, :] == coarse_of_fine[y][:, None]  # (B, K): same coarse class as y
    not_y = torch.ones_like(group).scatter_(1, y[:, None], False)
    # inner: softmax restricted to the group, complement over group \ {y}
    p_in = logits.masked_fill(~group, float("-inf")).softmax(1)
    q_in = p_in / (1 - p_in.gather(1, y[:, None]) + 1e-7)
    inner_terms = (q_in * torch.log(q_in.clamp(min=1e-10)) * (group & not_y)).sum(1)
    inner = (inner_terms / group.sum(1)).sum() / b
    # outer: full softmax, complement over classes outside the group, normalised by 1 - group mass
    p = logits.softmax(1)
    q_out = p / (1 - (p * group).sum(1, keepdim=True) + 1e-7)
    outer = (q_out * torch.log(q_out.clamp(min=1e-10)) * ~group).sum() / (b * k)
    return inner, outer


@OBJECTIVES.register("hcot")
@dataclass
class HCOT(COT):
    """Hierarchical COT (Chen et al. 2019): COT whose complement step uses inner + outer (class-group) entropy.

    ``hierarchy`` is the fine -> coarse class map (one coarse id per class); when not given it is
    taken from the training data's ``info["coarse_labels_of_fine"]`` (CIFAR-100 fine labels).
    """

    hierarchy: list[int] | None = None
    PARAMS: ClassVar[dict[str, Param]] = {
        "hierarchy": Param("fine -> coarse class map, one coarse id per class (None: from the data)",
                           item=Param("a coarse class id", ge=0), max_len=100_000)
    }  # fmt: skip
    needs_info: ClassVar[tuple[str, ...]] = ("coarse_labels_of_fine",)

    def setup(self, ctx: TrainContext) -> None:
        h = self.hierarchy if self.hierarchy is not None else ctx.train_data.info.get("coarse_labels_of_fine")
        if h is None:
            raise UsageError(
                f"hcot needs a class hierarchy, and dataset {ctx.train_data.name!r} provides none",
                "train on CIFAR-100 with fine labels, or pass the fine->coarse map as the objective "
                "parameter hierarchy=[c_0, ..., c_{K-1}]",
            )
        h = [int(c) for c in h]
        if len(h) != ctx.num_classes or min(h) < 0:
            raise UsageError(
                f"hcot hierarchy has {len(h)} entries (min {min(h) if h else None}); "
                f"the data has {ctx.num_classes} classes",
                "give one non-negative coarse id per fine class",
            )
        self._coarse = torch.tensor(h, dtype=torch.int64, device=ctx.device)
        super().setup(ctx)

    def complement_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        inner, outer = hierarchical_complement_entropy(logits, y, self._coarse.to(logits.device))
        return inner + outer
