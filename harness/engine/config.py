"""How an evaluation runs (not what: that is the suite): `EvalConfig`, its command-line form, run
names and locks, and the model's state hash that keys a run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import environment
from harness.atomic import ensure_dir, lock_file, remove_stale_temps
from harness.errors import UsageError
from harness.precision import PRECISIONS
from harness.records.gallery import GALLERY_DIR
from harness.surrogate import check_mode

CHECK_LEVELS = ("basic", "full")
# Batch and chunk sizes are recorded per sample in the record's int32 batch-plan column; larger
# values mean "the whole chunk" anyway, so anything beyond int32 is refused, not wrapped.
SIZE_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1  # seeds are int64: the range every keyed draw and torch generator takes
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass
class EvalConfig:
    """How to run an evaluation (not what: that is the suite)."""

    # An int, or "auto" (None means the same): the largest batch a forward+backward fits, probed once.
    batch_size: int | str | None = 256
    chunk_size: int = 512
    seed: int = 0
    device: str = "auto"
    max_samples: int | None = None
    overwrite: bool = False
    progress: bool = True
    # Draws per gradient and per verdict for randomised models (EOT); None: 1, or
    # EOT_AUTO_SAMPLES when the precheck finds the model stochastic.
    eot_samples: int | None = None
    # "basic": the sanity checks; "full": also the unbounded-eps check and the attack unit test.
    checks: str = "basic"
    # Replaces the dataset's eps grid for suite entries with eps = "dataset", e.g. {"linf": (0.1,)}.
    eps: dict[str, tuple[float, ...]] | None = None
    # Attack search under bf16 autocast ("bf16") or fp32; verdicts are always fp32 (docs/performance.md).
    precision: str = "fp32"
    # torch.compile the model for the attack search only; verdicts use the eager model.
    compile: bool = False
    # With a surrogate (Evaluation(surrogate=...)): "bpda" (real forward, surrogate gradient) or
    # "transfer" (attack the surrogate, verdict on the real model); see harness.surrogate.
    surrogate_mode: str = "bpda"
    # Write the report's gallery side file (a few samples' images, records/gallery/); off for large runs.
    gallery: bool = True

    def __post_init__(self) -> None:
        self.batch_size = parse_batch_size(self.batch_size)
        _check_int("chunk_size", self.chunk_size, 1, "the samples per record chunk, e.g. --chunk-size 512")
        _check_at_most("chunk_size", self.chunk_size, SIZE_MAX, "e.g. --chunk-size 512")
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples, 1, "omit --max-samples to evaluate the whole dataset")
        _check_int("seed", self.seed, 0, "e.g. --seed 0", high=SEED_MAX)
        self.chunk_size, self.seed = int(self.chunk_size), int(self.seed)  # numpy integers become ints
        self.max_samples = None if self.max_samples is None else int(self.max_samples)
        environment.resolve_device(self.device)  # an unknown or absent device fails here, before any work
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.checks not in CHECK_LEVELS:
            raise UsageError(f"unknown checks level {self.checks!r}", f"use one of {', '.join(CHECK_LEVELS)}")
        if self.eot_samples is not None and (not isinstance(self.eot_samples, int) or self.eot_samples < 1):
            raise UsageError(f"eot_samples must be a positive integer, not {self.eot_samples!r}")
        check_mode(self.surrogate_mode)
        if not isinstance(self.gallery, bool | np.bool_):
            raise UsageError(f"gallery must be true or false, not {self.gallery!r}", "--gallery or --no-gallery")
        self.gallery = bool(self.gallery)

    def to_argv(self) -> list[str]:
        """The `harness evaluate` flags that reproduce how this config runs (not overwrite/progress).

        The one place the config becomes a command line: `--nproc` hands it to every rank and a sweep
        to every cell, so both pass on the same fields (precision, compile, ``--batch-size auto``).
        """
        args = ["--batch-size", str(self.batch_size), "--chunk-size", str(self.chunk_size)]
        args += ["--seed", str(self.seed), "--device", self.device, "--checks", self.checks]
        args += ["--max-samples", str(self.max_samples)] if self.max_samples is not None else []
        args += ["--eot-samples", str(self.eot_samples)] if self.eot_samples is not None else []
        args += ["--precision", self.precision] if self.precision != "fp32" else []
        args += ["--compile"] if self.compile else []
        args += [] if self.gallery else ["--no-gallery"]
        for norm, values in (self.eps or {}).items():
            args += ["--eps", f"{norm}=" + ",".join(repr(float(v)) for v in values)]
        return args


def _check_int(name: str, value: Any, low: int, hint: str, high: int | None = None) -> None:
    """``value`` is an int (not a bool) in [low, high]: EvalConfig's declared ranges."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = (
            ("a positive integer" if low == 1 else f"an integer ≥ {low}")
            if high is None
            else f"an integer in [{low}, {high}]"
        )
        raise UsageError(f"{name} must be {bound}, not {value!r}", hint)


def _check_at_most(name: str, value: int, high: int, hint: str) -> None:
    if value > high:
        raise UsageError(f"{name} must be at most {high}, not {value!r}", hint)


def parse_batch_size(value: int | str | None) -> int | str:
    """A positive int, or "auto" (also for None): the batch-size forms EvalConfig and the CLI accept."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    try:
        n = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1:
        raise UsageError(f"batch size must be a positive integer or 'auto', not {value!r}", "e.g. --batch-size 256")
    _check_at_most("batch size", n, SIZE_MAX, "e.g. --batch-size 256, or --batch-size auto")
    return n


def check_run_name(name: str) -> str:
    """Run names are single path components: no separators, no '..', no absolute paths."""
    if not RUN_NAME.match(name) or ".." in name:
        raise UsageError(
            f"invalid run name {name!r}",
            "use letters, digits and . _ + - (no path separators or '..'); the run is created under the output root",
        )
    return name


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on a run directory; a second writer gets `RunLockedError`."""
    ensure_dir(directory)
    with lock_file(directory / ".lock", f"another process is writing to {directory}"):
        remove_stale_temps(directory)
        remove_stale_temps(directory / "records")
        remove_stale_temps(directory / "records" / GALLERY_DIR)
        yield


def model_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def config_hash(
    config: EvalConfig,
    *,
    model_sha: str,
    data_hash: str,
    entries: list[dict[str, Any]],
    version: str,
    calibration: dict[str, Any] | None = None,
    surrogate: dict[str, Any] | None = None,
    nested: bool = False,
) -> str:
    """16 hex digits over everything that decides a run's per-sample numbers (a pure function).

    The model's weights, the data's content, the resolved entries (`Entry.describe`), the seed, chunk
    size, EOT, search precision/compile, the tool version, calibration settings, the surrogate, and
    whether nested eps reuses points (`harness.engine.nested`; only when it does, so suites it leaves
    alone keep their hashes). Not
    the batch size, device or thread count: the verdicts do not depend on them (docs/reliability.md),
    so a run resumes and compares across them.
    """
    blob = json.dumps(
        {
            "model": model_sha,
            "data": data_hash,
            "entries": entries,
            "seed": config.seed,
            "chunk": config.chunk_size,
            "eot": config.eot_samples,
            # Only when not the default, so the hashes (and resumability) of fp32 eager runs stay as they were.
            **({"precision": config.precision} if config.precision != "fp32" else {}),
            **({"compile": True} if config.compile else {}),
            "version": version,
            **({"calibration": calibration} if calibration else {}),
            **({"surrogate": surrogate} if surrogate else {}),
            **({"nested": True} if nested else {}),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
