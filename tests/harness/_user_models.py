"""Factories that stand in for users' own model code (`--model tests.harness._user_models:NAME`)."""

from __future__ import annotations

from torch import nn


def small_net() -> nn.Module:
    """8x8 grey images -> 10 logits, no normalisation inside (expects it from the harness)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def seven_classes() -> nn.Module:
    """Fits digits' input but returns 7 logits instead of 10."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))


def not_a_module() -> str:
    return "nope"


def raising_factory() -> nn.Module:
    """A factory that fails, as user code does (a missing file, a server that is down)."""
    raise RuntimeError("weights server unreachable")


class _IntLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_net()

    def forward(self, x):
        return (self.net(x) * 100).long()  # "logits" as int64: no gradient, ties under argmax


def int_logits() -> nn.Module:
    """Returns int64 logits: refused with one ModelError line."""
    return _IntLogits()


def rgb32() -> nn.Module:
    """CIFAR-shaped input (3 x 32 x 32) -> 10 logits: a linear stand-in for a RobustBench model."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
