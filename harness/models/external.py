"""Models that were not trained by the harness: users' factories, weight files, TorchScript.

Weights are read without executing anything: safetensors, or ``torch.load(weights_only=True)``,
which refuses pickles that need arbitrary Python objects. TorchScript archives carry code and are
loaded only on explicit trust.
"""

from __future__ import annotations

import importlib
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.checks import check_logits
from harness.errors import CheckpointError, ModelError, UsageError

from .base import Normalize
from .checkpoint import load_state_dict_file, load_weights_into

FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# Wrappers that training scripts put around a state dict, tried in this order.
STATE_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "ema")
# Prefixes left by nn.DataParallel / DistributedDataParallel and by model wrappers.
STRIP_PREFIXES = ("module.", "model.")


class NormalizedModel(nn.Module):
    """``model(normalize(x))``: lets a model that expects normalised input take images in [0, 1]."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], in_channels: int | None = None):
        super().__init__()
        mean, std = list(mean), list(std)
        if len(mean) != len(std):
            raise UsageError(f"--mean has {len(mean)} values but --std has {len(std)}", "give one value per channel")
        if any(s <= 0 for s in std):
            raise UsageError(f"--std must be positive, got {std}")
        if in_channels and len(mean) == 1:
            mean, std = mean * in_channels, std * in_channels
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


def is_factory_spec(spec: str) -> bool:
    """``package.module:function`` (and not an existing file)."""
    return bool(FACTORY_SPEC.match(spec)) and not Path(spec).exists()


def import_factory(spec: str, option: str = "--model") -> Any:
    """Import ``module.path`` and return its callable ``factory`` (the user's modules resolve from the cwd)."""
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the user's own modules resolve from here
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UsageError(
            f"cannot import module {module_name!r} for {option} {spec} ({e})",
            "run from the directory that contains it or add it to PYTHONPATH",
        ) from e
    except Exception as e:  # the user's module fails while being imported: its error, in one line
        raise ModelError(
            f"importing {module_name!r} for {option} {spec} raised {_one_line(e)}",
            "fix the module (python -c 'import " + module_name + "' shows the traceback)",
        ) from e
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UsageError(f"module {module_name!r} has no callable {attr!r}", f"{option} takes module.path:factory")
    return factory


def build_from_factory(spec: str) -> nn.Module:
    """Import ``module.path`` and call ``factory()``; the result must be an `nn.Module`."""
    factory = import_factory(spec)
    module_name, _, attr = spec.partition(":")
    try:
        model = factory()
    except Exception as e:  # any error of the user's code is the model's, not the harness's
        raise ModelError(
            f"the model factory {spec}() raised {_one_line(e)}",
            f"fix the factory: it must build the network with no arguments (python -c 'import {module_name}; "
            f"{module_name}.{attr}()' shows the traceback)",
        ) from e
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _one_line(e: BaseException) -> str:
    """``TypeName: first line of the message`` (at most 300 characters)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold ``code/`` and ``constants.pkl``; torch.save archives do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_torchscript(path: str | Path, *, trust: bool, device: str | torch.device = "cpu") -> nn.Module:
    """A TorchScript model; refused unless ``trust``, because loading it runs the code it contains."""
    p = Path(path)
    if not trust:
        raise CheckpointError(
            f"{p} is a TorchScript program: loading it runs code from the file, when loaded and when called",
            "load it only if you trust its author: pass --trust-torchscript (trust_torchscript=True in Python)",
        )
    try:
        return torch.jit.load(str(p), map_location=device).eval()
    except RuntimeError as e:
        raise CheckpointError(f"{p} is not a loadable TorchScript archive ({str(e).splitlines()[0]})") from e


def read_torch_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything else is refused."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file {p} not found")
    if is_torchscript(p):
        raise CheckpointError(
            f"{p} is a TorchScript program, not a state dict: loading it runs code from the file",
            "pass it as the model itself, if you trust its source (harness evaluate FILE --trust-torchscript)",
        )
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, EOFError, ... depending on the damage
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "UnpicklingError" in type(e).__name__:
            raise CheckpointError(
                f"refused to unpickle {p}: it needs arbitrary Python objects, and unpickling them could run code "
                f"({first})",
                "save only the state dict (torch.save(model.state_dict(), f)) or convert it to safetensors",
            ) from e
        raise CheckpointError(f"{p} is not a readable torch file ({first})", "the file is truncated or corrupt") from e


def unwrap_state(obj: Any, where: str, wrappers: Sequence[str] = STATE_WRAPPERS) -> dict[str, Tensor]:
    """The flat ``{name: tensor}`` dict inside a checkpoint (``{'state_dict': ...}`` and similar)."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{where}: found no state dict of tensors (top level: {keys})",
        f"save model.state_dict(), optionally under one of {', '.join(STATE_WRAPPERS)}",
    )


def fit_prefixes(state: dict[str, Tensor], expected: Sequence[str]) -> dict[str, Tensor]:
    """Drop ``module.``/``model.`` prefixes the architecture does not use; add ``model.`` if it does.

    DataParallel saves ``module.x``; some wrappers save ``model.x``; robustbench's ImageNet models
    expect ``model.x`` from checkpoints without it. Decided against the architecture's own keys.
    """
    exp = set(expected)
    for prefix in STRIP_PREFIXES:
        if any(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in exp):
            state = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
    if exp and all(k.startswith("model.") for k in exp) and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``.pt``/``.pth``/``.bin``), never unpickling objects."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return load_state_dict_file(p)
    return unwrap_state(read_torch_file(p), str(p))


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a weights file strictly into ``model``; mismatched keys and shapes are listed."""
    state = fit_prefixes(read_state_dict(path), list(model.state_dict()))
    load_weights_into(model, state, str(path))
    return model


def maybe_normalize(
    model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, in_channels: int | None = None
) -> nn.Module:
    """Wrap with `NormalizedModel` when both mean and std are given (one of them alone is an error)."""
    if mean is None and std is None:
        return model
    if mean is None or std is None:
        raise UsageError("--mean and --std go together", "give both, one value per channel (or one for all)")
    return NormalizedModel(model, mean, std, in_channels)


def probe(model: nn.Module, shape: tuple[int, ...] | list[int], num_classes: int, where: str) -> None:
    """One forward pass on two blank images: clear errors for wrong channels, sizes or class counts."""

    x = torch.full((2, *shape), 0.5, device=next((p.device for p in model.parameters()), torch.device("cpu")))
    try:
        with torch.no_grad():
            z = model(x)
    except Exception as e:  # whatever the user's forward raises: the model fails the contract
        raise ModelError(
            f"{where} fails on a batch of shape {tuple(x.shape)}: {_one_line(e)}",
            "the model must take images (N, C, H, W) in [0, 1] of the dataset's shape",
        ) from e
    if not isinstance(z, Tensor):
        raise ModelError(f"{where} returned {type(z).__name__}, not a tensor of logits")
    check_logits(z, 2, num_classes)
