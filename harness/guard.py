"""The model as the engine lets attacks and verdicts call it: its failures become one clear error.

`ModelGuard` wraps every model the engine hands to an attack, a corruption verdict or a certifier.
An exception raised inside the model's forward becomes a `ModelError` (out-of-memory passes through,
so that the batch runner can halve the batch); an output that is not an (N, K) floating tensor is a
`ModelError` too. A model that stops being differentiable on some inputs (a forward under
``torch.no_grad()``, on ``x.detach()`` or through numpy, only off the data grid) gets an output
joined to the input with a zero gradient, so the attack sees a zero gradient there and goes on,
instead of failing inside autograd: the verdict is then whatever the model predicts.

An exception raised while autograd runs the model's own backward code (a custom
``autograd.Function``, a tensor hook, a gradient of the wrong shape) is not raised through the
forward, so the guard cannot catch it; `backward_failure` recognises it from its traceback and the
engine turns it into a `ModelError` naming the attack.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.batching import is_oom
from harness.errors import HarnessError, ModelError

HINT = "the model must map images (N, C, H, W) in [0, 1] to (N, K) float logits for every input in the threat model"


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


# Code that is not the user's: torch itself and the harness's own packages.
_OURS = tuple(
    f"{p}{os.sep}"
    for p in (
        Path(torch.__file__).resolve().parent,
        *(Path(__file__).resolve().parent.parent / d for d in ("harness", "attacks", "defenses")),
    )
)


def backward_failure(e: BaseException) -> str | None:
    """Where an exception raised inside autograd's backward pass came from in user code, else None.

    Autograd re-raises an exception of a Python backward (a custom Function, a tensor hook) with the
    frames of that code after torch's ``_engine_run_backward``; a gradient of the wrong shape
    is refused there with "returned an invalid gradient". Out-of-memory is never a model failure.
    """
    if is_oom(e):
        return None
    frames = traceback.extract_tb(e.__traceback__)
    inside = [i for i, f in enumerate(frames) if f.name == "_engine_run_backward"]
    if not inside:
        return None
    after = frames[inside[-1] + 1 :]
    user = [f for f in after if not str(Path(f.filename).resolve()).startswith(_OURS)]
    if user:
        f = user[-1]
        return f"{Path(f.filename).name}:{f.lineno} in {f.name}"
    if not after and "returned an invalid gradient" in str(e):
        return "a backward function of the model"
    return None


def backward_error(e: BaseException, during: str) -> ModelError | None:
    """The one-line `ModelError` for an exception the model's backward raised ``during`` something, else None."""
    where = backward_failure(e)
    if where is None:
        return None
    return ModelError(
        f"{during}: the model's backward raised {first_line(e)} (at {where})",
        "the model's gradient must be computable for every input in the threat model",
    )


class ModelGuard(nn.Module):
    """``model(x)`` with the contract checked on the output's metadata only (no host synchronisation)."""

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.training = model.training

    def forward(self, x: Tensor) -> Tensor:
        try:
            out = self.model(x)
        except HarnessError:
            raise
        except Exception as e:
            if is_oom(e):
                raise
            raise ModelError(f"the model raised {first_line(e)} on a batch of shape {tuple(x.shape)}", HINT) from e
        if not isinstance(out, Tensor):
            raise ModelError(f"the model returned {type(out).__name__}, not a tensor of logits", HINT)
        if out.dim() != 2 or out.shape[0] != x.shape[0] or (self.num_classes and out.shape[1] != self.num_classes):
            raise ModelError(f"the model returned shape {tuple(out.shape)} for a batch of shape {tuple(x.shape)}", HINT)
        if not out.is_floating_point():
            raise ModelError(f"the model returned {out.dtype} logits", "return floating-point logits")
        if x.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
            # Not connected to x: give the attack a zero gradient rather than an autograd error.
            out = out + 0 * x.flatten(1)[:, :1]
        return out
