"""Differentiable surrogates for models whose input gradients are missing or obfuscated (BPDA, transfer).

Athalye, Carlini & Wagner (ICML 2018) break defences that shatter gradients (input quantisation,
a forward under ``torch.no_grad()``, numpy pre-processing) with BPDA: run the real forward pass,
but take the gradient of a differentiable approximation. The user names the approximation as a
factory, ``--surrogate module.path:factory`` (Python: ``surrogate=``), called as ``factory(model)``
with the real model (so it can return, for example, the same network without its quantiser and
share its weights) or as ``factory()`` when it takes no argument; it returns an `nn.Module` with the
model's contract (images in [0, 1] to (N, K) logits) and loads any weights it needs itself.

Two ways to use it, both sound because the engine's verdict always comes from the real model:

- ``bpda`` (default): z = s(x) + (f(x) - s(x)).detach(). Values, and so every margin, best point
  and early stop inside the attack, are the real model's; gradients are the surrogate's.
- ``transfer``: the attack runs on the surrogate alone and the real model judges the point it
  returns. Cheaper (one forward per step) but weaker: the attack stops when the surrogate is
  fooled, whether or not the model is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import HarnessError, UsageError
from harness.guard import first_line
from harness.models.external import import_factory, is_factory_spec

SURROGATE_MODES = ("bpda", "transfer")

SurrogateSpec = nn.Module | Callable[..., nn.Module] | str


class BPDA(nn.Module):
    """Forward value of ``model``, input gradient of ``surrogate``: s(x) + (f(x) - s(x)).detach()."""

    def __init__(self, model: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.surrogate = surrogate
        self.training = False

    def forward(self, x: Tensor) -> Tensor:
        if not (x.requires_grad and torch.is_grad_enabled()):
            return self.model(x)  # no gradient asked for: the real model alone
        with torch.no_grad():
            f = self.model(x.detach())
        s = self.surrogate(x)
        return s + (f.to(s.dtype) - s).detach()


def check_mode(mode: str) -> str:
    if mode not in SURROGATE_MODES:
        raise UsageError(f"unknown surrogate mode {mode!r}", f"use one of {', '.join(SURROGATE_MODES)}")
    return mode


def _call(factory: Callable[..., Any], model: nn.Module) -> Any:
    """``factory(model)``, or ``factory()`` when it takes no positional argument."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return factory(model)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return factory(model) if positional else factory()


def build_surrogate(spec: SurrogateSpec, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The surrogate module and its description for result.json, from a module, a callable or a spec."""

    if isinstance(spec, nn.Module):
        return spec, {"source": "python", "name": type(spec).__name__}
    if isinstance(spec, str):
        if not is_factory_spec(spec):
            raise UsageError(f"--surrogate {spec!r} is not module.path:factory", "e.g. --surrogate mydefense:bpda")
        factory, info = import_factory(spec, "--surrogate"), {"source": spec, "name": spec.rpartition(":")[2]}
    elif callable(spec):
        factory, info = spec, {"source": "python", "name": getattr(spec, "__name__", type(spec).__name__)}
    else:
        raise UsageError(
            f"surrogate must be an nn.Module, a callable or 'module.path:factory', not {type(spec).__name__}"
        )
    try:
        sur = _call(factory, model)
    except HarnessError:
        raise
    except Exception as e:
        raise UsageError(
            f"the surrogate factory {info['source']} raised {first_line(e)}",
            "it is called as factory(model) (or factory()) and must return an nn.Module",
        ) from e
    if not isinstance(sur, nn.Module):
        raise UsageError(f"the surrogate factory {info['source']} returned {type(sur).__name__}, not an nn.Module")
    return sur, info


__all__ = ["BPDA", "SURROGATE_MODES", "build_surrogate", "check_mode"]
