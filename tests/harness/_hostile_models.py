"""Models that fight the evaluation (the hostile-model zoo), each wrapping a working classifier.

Every wrapper keeps the wrapped model's predictions on clean digits (whose pixels lie on the 1/16
grid) and misbehaves on the inputs an attack produces. The module-level factories stand in for
users' code on the command line (``--model tests.harness._hostile_models:NAME``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

GRID = 16  # digits pixels are k / 16


def on_grid(x: Tensor) -> Tensor:
    """Per sample: every pixel is a multiple of 1/16."""
    return ((x * GRID - torch.round(x * GRID)).abs() < 1e-4).flatten(1).all(1)


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


class NaNOffGrid(Wrapper):
    """The inner logits on the 1/16 grid, NaN anywhere else (finite on every clean digit)."""

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        return torch.where(on_grid(x)[:, None], z, torch.full_like(z, float("nan")))


class InfOffGrid(Wrapper):
    """+Inf on the true-looking class off the grid: argmax would still pick the inner prediction."""

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        top = F.one_hot(z.argmax(1), z.shape[1]).bool()
        return torch.where(on_grid(x)[:, None] | ~top, z, torch.full_like(z, float("inf")))


class ConstantOffGrid(Wrapper):
    """Zeros off the grid (argmax: class 0), the inner logits on it."""

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        return torch.where(on_grid(x)[:, None], z, torch.zeros_like(z))


class NoGrad(Wrapper):
    """A forward under torch.no_grad(): no input gradient at all."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.inner(x)


class Detach(Wrapper):
    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.detach())


class NumpyRoundTrip(Wrapper):
    """Pre-processing in numpy: the autograd graph ends at the input."""

    def forward(self, x: Tensor) -> Tensor:
        a = np.clip(x.detach().cpu().numpy(), 0.0, 1.0).astype(np.float32)
        return self.inner(torch.from_numpy(a).to(x.device))


class Quantise(Wrapper):
    """x -> round(16 x) / 16 (identity on clean digits): zero input gradients almost everywhere."""

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.round(x * GRID) / GRID)


class RandomNoise(nn.Module):
    """Ignores the input: fresh Gaussian logits on every call."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return torch.randn(len(x), self.num_classes, device=x.device)


class TrainModeBN(Wrapper):
    """Batch normalisation of the logits with the batch's own statistics, even in eval mode."""

    def __init__(self, inner: nn.Module, num_classes: int = 10) -> None:
        super().__init__(inner)
        self.bn = nn.BatchNorm1d(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(self.inner(x), None, None, self.bn.weight, self.bn.bias, training=True)


class WithBN(Wrapper):
    """An ordinary BatchNorm layer (running statistics in eval mode): harmless when evaluated in eval mode."""

    def __init__(self, inner: nn.Module, num_classes: int = 10) -> None:
        super().__init__(inner)
        self.bn = nn.BatchNorm1d(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.inner(x))


class BatchCentred(Wrapper):
    """Each sample's logits minus the batch mean of the logits: outputs depend on the other samples."""

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        return z - z.mean(0, keepdim=True)


class Scaled(Wrapper):
    """Logits multiplied by 1e30 (finite in float32, a saturated softmax)."""

    def forward(self, x: Tensor) -> Tensor:
        return 1e30 * self.inner(x)


class LogProbs(Wrapper):
    """Log-probabilities instead of logits (a per-row shift of the logits)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.inner(x), 1)


class RaisesOffGrid(Wrapper):
    """Fine on clean digits; raises on any input off the grid (only the attack's points)."""

    def forward(self, x: Tensor) -> Tensor:
        if not bool(on_grid(x).all()):
            raise RuntimeError("cannot handle this input")
        return self.inner(x)


class _FailingBackward(torch.autograd.Function):
    """Identity whose backward raises when the input is off the grid."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.off_grid = not bool(on_grid(x).all())
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        if ctx.off_grid:
            raise ValueError("no gradient off the grid")
        return g


class BackwardRaisesOffGrid(Wrapper):
    """Forward fine everywhere; its backward raises off the grid (the gradient probe at clean points passes)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(_FailingBackward.apply(x))


# ---- factories for the command line ---------------------------------------------------------------
def _net() -> nn.Module:
    """The architecture of tests.harness._digits_models.ce_model (its weights load into it)."""
    from harness.api import load_dataset
    from harness.models import create_model

    return create_model("mlp", load_dataset("digits"), hidden=(128,))


def nograd_quantised() -> nn.Module:
    """A quantised network under torch.no_grad(): weights for ``NoGrad(Quantise(ce_model))``."""
    return NoGrad(Quantise(_net()))


def raises_off_grid() -> nn.Module:
    return RaisesOffGrid(_net())


def backward_raises_off_grid() -> nn.Module:
    return BackwardRaisesOffGrid(_net())


def strip(model: nn.Module) -> nn.Module:
    """Surrogate factory: the network inside ``nograd_quantised`` (same weights, differentiable)."""
    return model.inner.inner
