"""The model attacks search with: the eager fp32 model, or bf16 autocast and/or torch.compile around it.

Only the search goes through `SearchModel`. The engine's verdict (`Evaluation.score`), the threat
contract check and the sanity checks call the eager model in fp32 outside autocast, so a bf16 or
compiler artefact can change where an attack looks but never what counts as a success.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.batching import is_oom

PRECISIONS = ("fp32", "bf16")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off parameter gradients for the duration (attacks need input gradients only)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


class SearchModel(nn.Module):
    """Wraps a model for attack search: optional bf16 autocast (channels_last on CUDA) and torch.compile.

    Logits always come back as fp32, so losses, margins and the gradient w.r.t. the fp32 input stay
    fp32. A compiled model that fails to compile or run falls back to eager; ``fallback`` says why.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", compile: bool = False) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.model = model
        self.training = model.training  # the flag only: leave the model's submodules as they are
        self.precision = precision
        self.fallback: str | None = None
        # Kept out of the module tree: the compiled wrapper shares the model's parameters.
        self.__dict__["_compiled"] = None
        if compile:
            try:
                # dynamic=True: one graph for all batch sizes, not a recompile per compaction.
                self.__dict__["_compiled"] = torch.compile(model, dynamic=True)
            except Exception as e:  # e.g. a Python version dynamo does not support
                self._give_up(e)

    @property
    def compiled(self) -> bool:
        """True while the search runs the compiled model."""
        return self._compiled is not None

    def forward(self, x: Tensor) -> Tensor:
        low = self.precision == "bf16"
        if low and x.is_cuda and x.dim() == 4:
            # Convolutions follow the input's memory format; the model's weights are left as they are.
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if low else contextlib.nullcontext()
        with ctx:
            out = self._call(x)
        return out.float()

    def _call(self, x: Tensor) -> Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as e:
                if is_oom(e):
                    raise
                self._give_up(e)
        return self.model(x)

    def _give_up(self, e: BaseException) -> None:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        self.fallback = f"{type(e).__name__}: {first}"[:300]
        self.__dict__["_compiled"] = None
        warnings.warn(f"torch.compile failed, the attack search runs eagerly: {self.fallback}", stacklevel=3)

    def warm_up(self, x: Tensor, y: Tensor) -> None:
        """Compile now (a forward+backward and a no-grad forward), so a failure falls back before the attacks."""
        if self._compiled is None:
            return
        try:
            xg = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(F.cross_entropy(self(xg), y, reduction="sum"), xg)
            with torch.no_grad():
                self(x)
        except Exception as e:
            if is_oom(e):
                raise
            self._give_up(e)

    def describe(self) -> dict[str, Any]:
        """What result.json records about the search model."""
        return {"compiled_search": self.compiled, "compile_fallback": self.fallback}
