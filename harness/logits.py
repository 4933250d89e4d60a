"""Quantities of logits shared by attacks, the engine and training objectives.

A row of logits with any NaN or Inf is no prediction at all, so it is never a correct one: its
margin is -inf (the most adversarial value there is) and `misclassified` is True for it, whatever
``argmax`` would pick. Attacks keep their best point by the lowest margin, so a candidate on which
the model returns non-finite logits is always kept, and the engine's verdict counts it as broken.
Both are element-wise masks (no host synchronisation).
"""

from __future__ import annotations

import torch
from torch import Tensor


def finite_rows(logits: Tensor) -> Tensor:
    """True for the rows whose logits are all finite."""
    return torch.isfinite(logits).all(1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{j != y} z_j: negative when the sample is misclassified; -inf for a non-finite row."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return torch.where(finite_rows(logits), zy - other, float("-inf"))


def misclassified(logits: Tensor, y: Tensor) -> Tensor:
    """argmax != y, or a non-finite row (which predicts nothing, so nothing correct)."""
    return (logits.argmax(1) != y) | ~finite_rows(logits)


def finite_grad(g: Tensor) -> Tensor:
    """An input gradient with NaN set to 0 and +-Inf to the largest finite value, in place.

    A model that returns NaN at a candidate also returns NaN gradients there; without this, one
    step would carry the NaN into the iterate and every later point of that sample. Identity on
    finite gradients, so it changes nothing for a well-behaved model.
    """
    return torch.nan_to_num_(g, nan=0.0)
