"""Per-sample attack losses on logits (higher = more adversarial for untargeted attacks)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from harness.errors import UsageError
from harness.logits import margin, misclassified

LossFn = Callable[[Tensor, Tensor], Tensor]


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin: max_{j != y} z_j - z_y (unbounded, no softmax saturation)."""
    return -margin(logits, y)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{j!=y} z_j) / (z_(1) - z_(3))."""
    s = logits.sort(dim=1).values
    zy = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = (s[:, -1] == zy).to(logits.dtype)
    other = s[:, -2] * top_is_y + s[:, -1] * (1 - top_is_y)
    return -(zy - other) / (s[:, -1] - s[:, -3] + 1e-12)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "margin": margin_loss, "cw": margin_loss, "dlr": dlr_loss}


def get_loss(name: str | LossFn) -> LossFn:
    if callable(name):
        return name
    try:
        return LOSSES[name]
    except KeyError:
        raise UsageError(f"unknown attack loss {name!r}", f"use one of {', '.join(LOSSES)}") from None


def predicted_wrong(logits: Tensor, y: Tensor) -> Tensor:
    """Misclassified, counting a non-finite row of logits as wrong (`harness.logits.misclassified`)."""
    return misclassified(logits, y)


def scaled(loss: LossFn, scale: float) -> LossFn:
    """Apply a loss to logits multiplied by ``scale`` (logit-scaled PGD against masked softmax)."""
    if scale == 1.0:
        return loss
    return lambda z, y: loss(z * scale, y)


__all__ = ["LOSSES", "ce_loss", "dlr_loss", "get_loss", "margin", "margin_loss", "predicted_wrong", "scaled"]
