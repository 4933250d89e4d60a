"""Per-sample attack losses on logits, the one table every attack and training crafting use.

Higher is more adversarial. `LOSSES` holds the untargeted losses ``(logits, y)``; `TARGETED_LOSSES`
those that also take a target class per sample ``(logits, y, t)`` (APGD-T's). `SOFTMAX_LOSSES` names
the losses computed through the softmax, whose gradients vanish where it saturates: the masking
check compares attacks ascending them with attacks that see through saturation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from harness.errors import UsageError
from harness.logits import margin

LossFn = Callable[[Tensor, Tensor], Tensor]
TargetedLossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


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


def targeted_dlr(z: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2), sorted logits z_(1) >= z_(2) >= ...

    The reference needs four classes; with three, the denominator falls back to z_(1) - z_(3)
    (any positive, shift- and scale-invariant normaliser keeps the loss's purpose).
    """
    s = z.sort(dim=1, descending=True).values
    den = s[:, 0] - (0.5 * (s[:, 2] + s[:, 3]) if z.shape[1] >= 4 else s[:, -1])
    zy = z.gather(1, y[:, None]).squeeze(1)
    zt = z.gather(1, t[:, None]).squeeze(1)
    return -(zy - zt) / (den + 1e-12)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "margin": margin_loss, "cw": margin_loss, "dlr": dlr_loss}
TARGETED_LOSSES: dict[str, TargetedLossFn] = {"dlr-targeted": targeted_dlr}
# Computed through the softmax: saturation (max prob -> 1) zeroes their gradients.
SOFTMAX_LOSSES = frozenset({"ce"})
# Fewest classes a loss is defined for (DLR needs a third-largest logit).
MIN_CLASSES: dict[str, int] = {"dlr": 3, "dlr-targeted": 3}


def get_loss(name: str | LossFn) -> LossFn:
    if callable(name):
        return name
    try:
        return LOSSES[name]
    except KeyError:
        raise UsageError(f"unknown attack loss {name!r}", f"use one of {', '.join(LOSSES)}") from None


def scaled(loss: LossFn, scale: float) -> LossFn:
    """Apply a loss to logits multiplied by ``scale`` (logit-scaled PGD against masked softmax)."""
    if scale == 1.0:
        return loss
    return lambda z, y: loss(z * scale, y)


__all__ = [
    "LOSSES",
    "MIN_CLASSES",
    "SOFTMAX_LOSSES",
    "TARGETED_LOSSES",
    "ce_loss",
    "dlr_loss",
    "get_loss",
    "margin_loss",
    "scaled",
    "targeted_dlr",
]
