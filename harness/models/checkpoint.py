"""Checkpoints: weights in safetensors plus a JSON sidecar from which the model is rebuilt alone.

Loading verifies the sidecar's schema (unknown fields and other versions are refused), the weights'
sha256 (a bit flip or truncation is caught before parsing), and that every tensor fits the
architecture (mismatched keys and shapes are listed). Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.atomic import sha256_bytes, sha256_file, write_bytes, write_json
from harness.errors import CheckpointError
from harness.registry import MODELS

SCHEMA_VERSION = 1


@dataclass
class CheckpointMeta:
    """The sidecar: everything needed to rebuild and describe a trained model."""

    architecture: str
    arch_args: dict[str, Any]
    dataset: str
    num_classes: int
    input_shape: list[int]
    objective: str = "unknown"
    objective_params: dict[str, Any] = field(default_factory=dict)
    condition: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    clean_accuracy: float | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    harness_version: str = ""
    created: str = ""
    weights_sha256: str = ""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> CheckpointMeta:
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: sidecar is not a JSON object")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise CheckpointError(
                f"{where}: sidecar schema_version {d.get('schema_version')!r}, this harness reads {SCHEMA_VERSION}",
                "re-save the checkpoint with this version of the harness",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(
                f"{where}: sidecar has unknown fields {unknown}", "refusing a sidecar it cannot vouch for"
            )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in d
        ]  # type: ignore[misc]
        if missing:
            raise CheckpointError(f"{where}: sidecar lacks required fields {missing}")
        return cls(**d)


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix(".json") if p.suffix == ".safetensors" else p.with_name(p.name + ".json")


def weights_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def build_model(architecture: str, arch_args: dict[str, Any]) -> nn.Module:
    """Instantiate a registered architecture from its arguments (as stored in a sidecar)."""
    return MODELS.create(architecture, **arch_args)


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically; returns the weights path."""
    from safetensors.torch import save

    from harness import __version__

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    meta = dataclasses.replace(
        meta,
        weights_sha256=sha256_bytes(blob),
        harness_version=meta.harness_version or __version__,
        created=meta.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    wp = weights_path(path)
    write_bytes(wp, blob)
    write_json(sidecar_path(path), dataclasses.asdict(meta))
    return wp


def read_meta(path: str | Path) -> CheckpointMeta:
    sp = sidecar_path(path)
    if not sp.is_file():
        raise CheckpointError(
            f"no sidecar {sp} next to the weights",
            "a harness checkpoint is <name>.safetensors plus <name>.json; "
            "for other weights use --model module:factory --weights",
        )
    try:
        d = json.loads(sp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{sp} is not valid JSON ({e})", "the sidecar is corrupt; re-save the checkpoint") from e
    return CheckpointMeta.from_dict(d, str(sp))


def load_state_dict_file(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, verifying its hash when one is known."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    wp = Path(path)
    if not wp.is_file():
        raise CheckpointError(f"weights file {wp} not found")
    data = wp.read_bytes()
    if expected_sha256 and sha256_bytes(data) != expected_sha256:
        raise CheckpointError(
            f"{wp} does not match the sha256 in its sidecar (corrupt, truncated or replaced)",
            "restore the file from a good copy or retrain",
        )
    try:
        return load(data)
    except (SafetensorError, Exception) as e:  # safetensors raises several types for bad headers
        raise CheckpointError(f"{wp} is not a valid safetensors file ({e})", "the file is truncated or corrupt") from e


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strictly load ``state``; on mismatch, name the missing, unexpected and mis-shaped tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{where}: weights do not fit the architecture: " + "; ".join(parts),
            "the sidecar's architecture and arguments must describe these weights; re-save the checkpoint",
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild a model from its sidecar and load verified weights; returned in eval mode."""
    meta = read_meta(path)
    wp = weights_path(path)
    state = load_state_dict_file(wp, meta.weights_sha256 or None)
    model = build_model(meta.architecture, meta.arch_args)
    load_weights_into(model, state, str(wp))
    return model.to(device).eval(), meta


def file_sha256(path: str | Path) -> str:
    return sha256_file(path)


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
