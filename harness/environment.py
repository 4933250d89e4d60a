"""The environment a run sees: the device, the ``HARNESS_*`` variables, versions (recorded in every result).

Every ``HARNESS_*`` variable the harness reads is declared in `VARIABLES` with its parser and read
through `env`; the CLI checks all of them before doing anything (`check_variables`), so a
malformed value is one line naming the variable, never a traceback deep inside a run.
"""

from __future__ import annotations

import math
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness import faults
from harness.errors import UsageError

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "safetensors",
    "scikit-learn",
    "torchattacks",
    "robustbench",
    "pyautoattack",
    "harness-robustness",
)
# Device types an evaluation or training can run on (`resolve_device`).
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_HINT = "use --device auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps"


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return out


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else must exist on this machine (else `UsageError`)."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        text = device.strip().lower() if isinstance(device, str) else device
        try:
            dev = torch.device(text)  # type: ignore[arg-type]
        except (RuntimeError, ValueError, TypeError):
            raise UsageError(f"unknown device {device!r}", DEVICE_HINT) from None
    if dev.type not in DEVICE_TYPES:
        raise UsageError(f"device {device!r} is not supported (type {dev.type!r})", DEVICE_HINT)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"device {device!r}: {why} on this machine", "use --device cpu, or auto")
        if dev.index is not None and dev.index >= n:
            raise UsageError(
                f"device {device!r}: this machine has {n} CUDA device(s): {', '.join(f'cuda:{i}' for i in range(n))}",
                "choose one of them (CUDA_VISIBLE_DEVICES renumbers them), or use --device cuda",
            )
    if dev.type == "mps" and not (torch.backends.mps.is_available()):
        raise UsageError(f"device {device!r}: MPS (Apple silicon) is not available here", "use --device cpu, or auto")
    return dev


def describe(device: torch.device) -> dict[str, Any]:
    d: dict[str, Any] = {
        "versions": versions(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        d["gpu"] = torch.cuda.get_device_name(device)
    return d


# ---- HARNESS_* environment variables ------------------------------------------------------------------
@dataclass(frozen=True)
class Variable:
    """One environment variable: what it means, what it must look like, and its parser (raises ValueError)."""

    name: str
    meaning: str
    expected: str
    parse: Callable[[str], Any]
    default: Any = None


def _folder(text: str) -> Path:
    if not text.strip():
        raise ValueError("it is empty")
    p = Path(text).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{p} is a file, not a folder")
    return p


def _seconds(text: str) -> float:
    v = float(text)  # ValueError for non-numbers
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{v} is not a positive finite number of seconds")
    return v


def _token(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", text):
        raise ValueError("it must be 1-128 letters, digits, '.', '_' or '-'")
    return text


def _test_hook(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def run(text: str) -> Any:
        try:
            return parse(text)
        except UsageError as e:  # the faults module's own message, as a ValueError for `env`
            raise ValueError(e.what.split(": ", 1)[-1]) from None

    return run


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("HARNESS_DATA", "root folder of on-disk datasets (DATA/cifar-10-batches-bin, ...)", "a folder",
                 _folder, Path("data")),
        Variable("HARNESS_LOG_DIR", "where tracebacks of internal errors go when a command has no run folder",
                 "a folder", _folder),
        Variable("HARNESS_DIST_TIMEOUT_S", "timeout of torch.distributed collectives, in seconds",
                 "a positive number of seconds, e.g. 1800", _seconds),
        Variable("HARNESS_LAUNCH_ID", "set by `harness evaluate --nproc` for its ranks (internal)",
                 "a token of letters and digits", _token),
        Variable("HARNESS_LAUNCH_ERRORS", "set by `harness evaluate --nproc` for its ranks (internal): the folder "
                 "where a rank writes the error that stopped it", "a folder", _folder),
        Variable(faults.ENV, "test-only: SIGKILL the process at a named point (harness/faults.py)",
                 "<point>[@N], e.g. eval:chunk@2", _test_hook(faults.parse_kill_at)),
        Variable(faults.OSERROR_ENV, "test-only: raise OSError at a named point (harness/faults.py)",
                 "<point>=<ERRNO>[@N], e.g. tmpfile:*=ENOSPC", _test_hook(faults.parse_oserror)),
    )
}  # fmt: skip


def env(name: str, default: Any = None) -> Any:
    """The parsed value of a declared ``HARNESS_*`` variable; unset or empty gives ``default``
    (else the declared default). A malformed value is a `UsageError` naming the variable."""
    var = VARIABLES[name]
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return var.default if default is None else default
    try:
        return var.parse(raw)
    except ValueError as e:
        raise UsageError(
            f"environment variable {name}={raw!r} is malformed ({e}); it must be {var.expected}",
            f"fix or unset {name} ({var.meaning})",
        ) from None


def check_variables() -> None:
    """Parse every declared ``HARNESS_*`` variable that is set: a malformed one fails here, before any work."""
    for name in VARIABLES:
        env(name)
