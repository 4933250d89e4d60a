"""Shared fixtures: seeded tiny models and data, fast on one CPU core."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("HARNESS_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def digits_test():
    from harness.api import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def ce_digits_model():
    """A small CNN trained with CE on digits for 8 epochs (about 10 s), cached for the session."""
    from harness.api import train

    torch.manual_seed(0)
    return train("ce", "cnn", "digits", epochs=8, progress=False, eval_samples=0).model.eval()


class LinearModel(torch.nn.Module):
    """f(x) = W flatten(x) + b: the worst case under L-inf/L2 is known in closed form."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)
        self.b = torch.nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


# Hypothesis: a bounded default profile keeps the default run fast; HYPOTHESIS_PROFILE=ci goes deeper.
from hypothesis import Phase, settings  # noqa: E402

# No "explain" phase: it traces every line of a failing example, minutes for an attack test.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)

settings.register_profile("fast", max_examples=6, deadline=None, derandomize=True, print_blob=True, phases=PHASES)
settings.register_profile("ci", max_examples=100, deadline=None, print_blob=True, phases=PHASES)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
