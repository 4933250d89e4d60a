"""The attack contract: ``perturb(model, x, y, index=, seed=) -> x_adv`` inside a declared threat model.

An attack only searches. The engine re-verifies every returned point (ball, box, finiteness) and
judges success with its own fp32 forward pass, so an attack can never report its own score.
Randomness comes from `harness.rng`, keyed by each sample's global ``index`` and the ``seed``, so a
sample's result is independent of the batch it was in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from harness.precision import frozen
from harness.threat import ThreatModel


class Attack:
    """Base class of registered attacks; subclasses implement `perturb`."""

    def __init__(self, norm: str = "linf", eps: float = 8 / 255) -> None:
        self.threat = ThreatModel(norm, eps)

    @property
    def norm(self) -> str:
        return self.threat.norm

    @property
    def min_classes(self) -> int:
        """Fewest classes the attack's loss is defined for (the DLR loss needs a third-largest logit)."""
        return 2

    @property
    def eps(self) -> float:
        return self.threat.eps

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        if index is None:
            index = torch.arange(len(x), device=x.device)
        with frozen(model):
            return self.perturb(model, x, y, index=index.to(x.device), seed=seed)

    def config(self) -> dict[str, Any]:
        """Parameters as recorded in result.json."""
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "threat"}
        return {"attack": getattr(type(self), "registry_name", type(self).__name__), **self.threat.__dict__, **out}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss) -> tuple[Tensor, Tensor]:
    """Logits at x and the gradient of sum(loss) w.r.t. x only (no weight gradients)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (g,) = torch.autograd.grad(loss(logits, y).sum(), x)
    return logits.detach(), g
