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

from harness import __version__
from harness.atomic import sha256_bytes, sha256_file, write_bytes, write_json
from harness.data.base import MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIDE
from harness.errors import CheckpointError, DataError, UsageError
from harness.paths import regular_file
from harness.registry import MODELS

SCHEMA_VERSION = 1
MAX_SIDECAR_BYTES = 1 << 20  # a sidecar is a few KB; a larger one is not read


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
        bad = [f"{k} ({_shown(d[k])}: {want})" for k, want in _field_problems(d)]
        if bad:
            raise CheckpointError(
                f"{where}: sidecar field(s) of the wrong type or range: {'; '.join(bad)}",
                "the sidecar was edited or damaged; re-save the checkpoint",
            )
        return cls(**d)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field_problems(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, what it must be) for every sidecar field whose value has the wrong type or range."""

    shape = d.get("input_shape")
    checks: dict[str, tuple[bool, str]] = {
        "architecture": (isinstance(d.get("architecture"), str) and bool(d.get("architecture")), "a non-empty string"),
        "arch_args": (isinstance(d.get("arch_args"), dict), "an object"),
        "dataset": (isinstance(d.get("dataset"), str), "a string"),
        "num_classes": (
            _is_int(d.get("num_classes")) and 1 <= d["num_classes"] <= MAX_CLASSES,
            f"an integer in 1..{MAX_CLASSES}",
        ),
        "input_shape": (
            isinstance(shape, list)
            and len(shape) == 3
            and all(_is_int(v) for v in shape)
            and 1 <= shape[0] <= MAX_CHANNELS
            and all(1 <= v <= MAX_IMAGE_SIDE for v in shape[1:]),
            f"[channels 1..{MAX_CHANNELS}, height, width 1..{MAX_IMAGE_SIDE}]",
        ),
        "seed": (d.get("seed") is None or _is_int(d.get("seed")), "an integer or null"),
        "clean_accuracy": (
            d.get("clean_accuracy") is None
            or (isinstance(d.get("clean_accuracy"), (int, float)) and not isinstance(d.get("clean_accuracy"), bool)),
            "a number or null",
        ),
        "schema_version": (_is_int(d.get("schema_version")), "an integer"),
    }
    for k in ("objective", "harness_version", "created", "weights_sha256"):
        checks[k] = (isinstance(d.get(k, ""), str), "a string")
    for k in ("objective_params", "condition", "train_config"):
        checks[k] = (isinstance(d.get(k, {}), dict), "an object")
    return [(k, want) for k, (ok, want) in checks.items() if k in d and not ok]


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix(".json") if p.suffix == ".safetensors" else p.with_name(p.name + ".json")


def weights_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def build_model(architecture: str, arch_args: dict[str, Any], device: str | torch.device | None = None) -> nn.Module:
    """Instantiate a registered architecture from its arguments (as stored in a sidecar).

    ``device="meta"`` builds the skeleton only (shapes and dtypes, no memory), which is how a
    checkpoint's arguments are checked against its weights before anything real is allocated.
    """
    try:
        if device is None:
            return MODELS.create(architecture, **arch_args)
        with torch.device(device):
            return MODELS.create(architecture, **arch_args)
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(
            f"architecture {architecture!r} cannot be built from the arguments {_shown(arch_args)} "
            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})",
            "the sidecar's arch_args must be the architecture's arguments; re-save the checkpoint",
        ) from None


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically; returns the weights path."""
    from safetensors.torch import save

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
    if not sp.exists() and not sp.is_symlink():
        raise CheckpointError(
            f"no sidecar {sp} next to the weights",
            "a harness checkpoint is <name>.safetensors plus <name>.json; "
            "for other weights use --model module:factory --weights",
        )
    _regular(sp, "sidecar")
    if sp.stat().st_size > MAX_SIDECAR_BYTES:
        raise CheckpointError(f"sidecar {sp} has {sp.stat().st_size} bytes; a sidecar is a few KB", "re-save it")
    try:
        d = json.loads(sp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{sp} is not valid JSON ({e})", "the sidecar is corrupt; re-save the checkpoint") from e
    return CheckpointMeta.from_dict(d, str(sp))


def load_state_dict_file(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, verifying its hash when one is known."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    wp = Path(path)
    if not wp.exists() and not wp.is_symlink():
        raise CheckpointError(f"weights file {wp} not found")
    _regular(wp, "weights file")
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


def _regular(path: Path, what: str) -> None:

    try:
        regular_file(path, what)
    except DataError as e:
        raise CheckpointError(e.what, e.hint) from None


def dtype_problem(file_dtype: torch.dtype, model_dtype: torch.dtype) -> str | None:
    """Why a tensor of ``file_dtype`` may not load into one of ``model_dtype`` (None: it may).

    The rule: same dtype always; floating into floating (values rounded to the model's
    precision, see `load_weights_into` for overflow); integer into integer (range checked);
    nothing else. Integer or boolean weights in a floating slot are not this layer's weights
    (quantised weights need their scales), and complex values would lose their imaginary part.
    """
    if file_dtype == model_dtype:
        return None
    if file_dtype.is_complex or model_dtype.is_complex:
        return "complex values do not load into a real tensor (or back)"
    if file_dtype.is_floating_point and model_dtype.is_floating_point:
        return None
    both_int = not file_dtype.is_floating_point and not model_dtype.is_floating_point
    if both_int and torch.bool not in (file_dtype, model_dtype):
        return None
    return "an integer or boolean tensor cannot stand for floating-point weights, nor a float for an integer"


def _cast_loses(value: torch.Tensor, model_dtype: torch.dtype) -> bool:
    """True when casting ``value`` to ``model_dtype`` changes what it says (overflow, out-of-range integers)."""
    if value.dtype == model_dtype or value.numel() == 0:
        return False
    if model_dtype.is_floating_point:
        return bool((torch.isfinite(value) & ~torch.isfinite(value.to(model_dtype))).any())
    info = torch.iinfo(model_dtype)
    return bool(value.min() < info.min or value.max() > info.max)


def check_fits(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> None:
    """Names, shapes and dtypes of ``state`` against a model's ``own`` tensors (which may be on the meta device).

    Raises `CheckpointError` listing the missing, unexpected, mis-shaped and mis-typed tensors.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    dtypes = sorted(
        f"{k}: file {state[k].dtype} vs model {own[k].dtype} ({why})"
        for k in set(own) & set(state)
        if (why := dtype_problem(state[k].dtype, own[k].dtype))
    )
    if missing or unexpected or shapes or dtypes:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", shapes),
            ("wrong dtype", dtypes),
        ):
            if items:
                shown = ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{where}: weights do not fit the architecture: " + "; ".join(parts),
            "the sidecar's architecture and arguments must describe these weights; re-save the checkpoint",
        )


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strictly load ``state``: names, shapes and dtypes must fit (`check_fits`, `dtype_problem`).

    A floating-point value that a narrower model dtype would turn into Inf, or an integer out of
    the model's integer range, is refused rather than cast.
    """
    own = model.state_dict()
    check_fits(own, state, where)
    lossy = sorted(k for k in own if _cast_loses(state[k], own[k].dtype))
    if lossy:
        raise CheckpointError(
            f"{where}: tensor(s) {', '.join(lossy[:6])} hold values that {own[lossy[0]].dtype} cannot represent "
            "(they would become Inf or wrap around)",
            "save the weights in the model's dtype",
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild a model from its sidecar and load verified weights; returned in eval mode."""
    meta = read_meta(path)
    wp = weights_path(path)
    state = load_state_dict_file(wp, meta.weights_sha256 or None)
    # The sidecar's arguments are checked against the weights on a skeleton first: a sidecar
    # promising a huge architecture costs nothing unless the file really holds those weights.
    try:
        skeleton = build_model(meta.architecture, meta.arch_args, device="meta")
    except (NotImplementedError, RuntimeError):  # an architecture that cannot be built on "meta"
        skeleton = None
    except UsageError as e:  # the declared parameter ranges refuse the sidecar's arguments
        raise CheckpointError(
            f"{sidecar_path(path)}: arch_args refused: {e.what}",
            "the sidecar was edited or damaged; re-save the checkpoint",
        ) from None
    if skeleton is not None:
        check_fits(skeleton.state_dict(), state, str(wp))
        del skeleton
    model = build_model(meta.architecture, meta.arch_args)
    load_weights_into(model, state, str(wp))
    return model.to(device).eval(), meta


def file_sha256(path: str | Path) -> str:
    return sha256_file(path)


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
