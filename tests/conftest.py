"""Shared fixtures: seeded tiny models and data, fast on one CPU core."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("HARNESS_TEST_THREADS", "2")))

# The default run's --timeout (600 s, pyproject.toml) catches a hung test. A slow test (an oracle of
# AutoAttack against pyautoattack on 1797 digits, on one thread) can need more than that on a loaded
# 2-core machine without hanging: slow tests get this limit unless they carry their own marker.
SLOW_TIMEOUT_S = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


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
