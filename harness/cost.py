"""What an attack costs, declared as data: forward and backward passes of one image through the model.

Every attack's ``cost(n, num_classes=K)`` returns the passes its full budget takes on ``n`` images
(`Cost`), counted as the model sees them: a forward of a batch of b images is b forward passes, one
``autograd.grad`` through it b backward passes. It is an upper bound: early stopping (samples
already broken are dropped) only lowers the real count. `harness.plan` adds the engine's own verdict
passes and multiplies by the data size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Forward and backward passes of single images through the model."""

    forward: int = 0
    backward: int = 0

    @property
    def passes(self) -> int:
        """Forward plus backward passes."""
        return self.forward + self.backward

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forward + other.forward, self.backward + other.backward)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.forward - other.forward, self.backward - other.backward)

    def __mul__(self, k: int) -> Cost:
        return Cost(self.forward * int(k), self.backward * int(k))

    __rmul__ = __mul__


def steps(k: int) -> Cost:
    """``k`` gradient steps: a forward and a backward pass each."""
    return Cost(int(k), int(k))
