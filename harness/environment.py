"""The environment an evaluation ran in: versions, device, platform (recorded in every result)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import torch

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


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return out


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
