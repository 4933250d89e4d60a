"""Quantities of logits shared by attacks, the engine and training objectives."""

from __future__ import annotations

from torch import Tensor


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{j != y} z_j: negative exactly when the sample is misclassified."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return zy - other
