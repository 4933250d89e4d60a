"""The objective interface: ``loss(model, x, y, state) -> (loss, info)`` plus optional hooks.

One trainer loop serves every objective. Hooks cover what the seed papers need:
- `setup(ctx)`: once before training (class counts for reweighting, a second optimizer for COT,
  auxiliary data for ODNL/open-sampling);
- `step(...)`: override for objectives that take more than one optimizer step per batch (COT);
- per-sample weights, extra forward passes and attacks inside the step are ordinary code in `loss`
  (use `defenses.crafting.craft` for eval-mode adversarial crafting).
``info`` values stay tensors on the device; the trainer averages them once per epoch (no host sync
per step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.data.base import ImageDataset


@dataclass
class StepState:
    """Where training is, and the keyed randomness an objective may use for this step."""

    epoch: int
    step: int
    epochs: int
    index: Tensor  # global sample ids of the batch (keys for per-sample random draws)
    seed: int  # a seed unique to (training seed, epoch, step)
    generator: torch.Generator  # seeded from the same key, on the batch's device
    num_classes: int


@dataclass
class TrainContext:
    """What `Objective.setup` can see."""

    model: nn.Module
    train_data: ImageDataset
    num_classes: int
    class_counts: Tensor
    epochs: int
    steps_per_epoch: int
    device: torch.device
    make_optimizer: Callable[[], torch.optim.Optimizer]
    default_eps: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class; subclasses are dataclasses whose fields are the objective's parameters."""

    #: keys of the training data's ``info`` the objective cannot work without (e.g. a class hierarchy)
    needs_info: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def applicable(cls, data: ImageDataset) -> bool:
        """Whether this objective can train on ``data`` with its default parameters."""
        return all(k in data.info for k in cls.needs_info)

    def setup(self, ctx: TrainContext) -> None:
        """Called once before the first epoch (and again on resume)."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def step(
        self, model: nn.Module, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer, state: StepState
    ) -> dict[str, Tensor]:
        """One optimisation step on one batch (default: loss, backward, step)."""
        model.train()
        loss, info = self.loss(model, x, y, state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach(), **info}

    def params(self) -> dict[str, Any]:
        """Parameters as recorded in the checkpoint sidecar."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {}

    def score_to_prob(self) -> str:
        """How the trained model's scores become probabilities: ``softmax`` unless the loss says otherwise.

        Recorded in the checkpoint sidecar; calibration reads it (`harness.calibration.scores_to_probs`).
        """
        return "softmax"

    def state_dict(self) -> dict[str, Any]:
        """Objective state to save for exact resume (e.g. a second optimizer)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
