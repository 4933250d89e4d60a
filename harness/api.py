"""The Python API: the same verbs as the CLI (`train`, `evaluate`, `run`, `load_model`, ...).

The CLI is a thin layer over these functions. This module sits on top of all three packages: it
finds attacks and objectives only through the registries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data.base import ImageDataset
from harness.engine import EvalConfig, Evaluation, check_run_name
from harness.errors import CheckpointError, UsageError
from harness.registry import DATASETS, REGISTRIES
from harness.results import Result
from harness.spec import parse_spec
from harness.suites import Suite

DEFAULT_RUN_OBJECTIVES = ("ce", "pgd-at")


def load_dataset(spec: str | ImageDataset, **kwargs: Any) -> ImageDataset:
    """A registered dataset by spec (``"digits"``, ``"digits:split=train"``) or an `ImageDataset` as is."""
    if isinstance(spec, ImageDataset):
        return spec
    name, args = parse_spec(spec)
    return DATASETS.create(name, **{**args, **kwargs})


def load_model(spec: str | Path | nn.Module, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A model and its description from a harness checkpoint path (``x.safetensors`` or ``x``) or a module."""
    from harness.models.checkpoint import TORCH_SUFFIXES, load_checkpoint, load_torch_state, weights_path

    if isinstance(spec, nn.Module):
        return spec, {"name": type(spec).__name__, "source": "python"}
    p = Path(spec)
    if p.suffix in TORCH_SUFFIXES:
        # Checked (never unpickled beyond tensors) before anything else; a bare state_dict has no
        # architecture, so it needs the sidecar of a harness checkpoint.
        load_torch_state(p)
        raise CheckpointError(
            f"{p} holds bare weights without an architecture",
            "re-save it with harness.models.checkpoint.save_checkpoint (safetensors + sidecar)",
        )
    if not weights_path(p).is_file() and not p.is_file():
        raise UsageError(f"no checkpoint at {p}", "pass a <name>.safetensors written by `harness train`")
    model, meta = load_checkpoint(p, device)
    import dataclasses

    info = {"name": weights_path(p).stem, "source": str(weights_path(p)), **dataclasses.asdict(meta)}
    return model, info


def evaluate(
    model: str | Path | nn.Module,
    dataset: str | ImageDataset = "digits",
    suite: str | Suite = "quick",
    *,
    out: str | Path | None = None,
    name: str | None = None,
    **config: Any,
) -> Result:
    """Evaluate a model (module or checkpoint) with a suite; returns the `Result`.

    With ``name`` the run is written to ``out/name`` (default out: ``runs``) and is resumable.
    Keyword arguments are `EvalConfig` fields (batch_size, seed, device, max_samples, ...).
    """
    m, info = load_model(model)
    ds = load_dataset(dataset)
    cfg = EvalConfig(**config)
    return Evaluation(m, ds, suite, out=out, name=name, config=cfg, model_info=info).run()


def attack_unit_test(
    model: str | Path | nn.Module,
    dataset: str | ImageDataset = "digits",
    suite: str | Suite = "quick",
    **kwargs: Any,
):
    """The attack unit test (Zimmermann et al. 2022) of a suite on a model; see `harness.unit_test`.

    Returns a `UnitTestResult` (fraction of provably existing adversarial examples the suite found,
    per threat model; under 95 % the suite is too weak for the model). Keyword arguments:
    n_samples, inner_points, seed, device, eot_samples, threshold.
    """
    from harness.unit_test import attack_unit_test as _unit_test

    m, _ = load_model(model)
    return _unit_test(m, load_dataset(dataset), suite, **kwargs)


def train(
    objective: str = "ce",
    model: str = "cnn",
    dataset: str | ImageDataset = "digits",
    *,
    out: str | Path | None = None,
    objective_params: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    **config: Any,
):
    """Train a registered architecture with a registered objective; writes ``out.safetensors/.json``.

    ``dataset`` names the training set; its ``split`` is replaced by train/test automatically when
    given by name. Keyword arguments are `defenses.TrainConfig` fields (epochs, lr, seed, ...).
    """
    from defenses import TrainConfig
    from defenses import train as _train

    if isinstance(dataset, ImageDataset):
        train_ds, test_ds = dataset, None
    else:
        name, args = parse_spec(dataset)
        args.pop("split", None)
        train_ds = DATASETS.create(name, split="train", **args)
        test_ds = DATASETS.create(name, split="test", **args)
    return _train(
        objective,
        model,
        train_ds,
        test_ds,
        config=TrainConfig(**config),
        out=out,
        objective_params=objective_params,
        model_args=model_args,
    )


def run(
    objectives: tuple[str, ...] | list[str] = DEFAULT_RUN_OBJECTIVES,
    *,
    dataset: str = "digits",
    model: str = "cnn",
    suite: str = "quick",
    out: str | Path = "runs",
    name: str = "main",
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> list[Result]:
    """The main job: train each objective on ``dataset``, evaluate all with ``suite``, and build one
    report of all of them (``out/name/report.html`` and ``report.md``, see `harness.reporting`)."""
    from harness.reporting import build_report

    root = Path(out) / check_run_name(name)
    results = []
    for obj in objectives:
        ckpt = root / "checkpoints" / obj
        from harness.models.checkpoint import weights_path

        if not weights_path(ckpt).is_file():
            train(obj, model, dataset, out=ckpt, epochs=epochs, seed=seed, device=device, progress=progress)
        results.append(
            evaluate(
                weights_path(ckpt),
                dataset,
                suite,
                out=root / "evals",
                name=obj,
                seed=seed,
                device=device,
                progress=progress,
            )
        )
    build_report([root / "evals" / obj for obj in objectives], root, title=f"Robustness report: {name}")
    return results


def list_registry(kind: str, pattern: str = "*") -> list[tuple[str, str]]:
    """(name, one-line summary) pairs of a registry: datasets, models, attacks, corruptions, objectives, suites."""
    if kind not in REGISTRIES:
        from harness.registry import close_matches

        raise UsageError(
            f"unknown registry {kind!r}.{close_matches(kind, list(REGISTRIES))}",
            f"choose one of {', '.join(REGISTRIES)}",
        )
    return [(e.name, e.summary) for e in REGISTRIES[kind].entries(pattern)]
