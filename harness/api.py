"""The Python API: the same verbs as the CLI (`train`, `evaluate`, `run`, `load_model`, ...).

The CLI is a thin layer over these functions. This module sits on top of all three packages: it
finds attacks and objectives only through the registries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

import defenses
from defenses import TrainConfig
from defenses.conditions import apply_conditions
from harness.analyses.binarization import UnitTestResult
from harness.analyses.binarization import attack_unit_test as run_attack_unit_test
from harness.corruption_metrics import attach
from harness.data.base import ImageDataset
from harness.engine import EvalConfig, Evaluation, check_run_name
from harness.errors import UsageError
from harness.loading import load_dataset, load_model
from harness.models.checkpoint import weights_path
from harness.models.external import probe
from harness.paths import safe_join
from harness.recipes import Recipe, load_recipe
from harness.registry import DATASETS, OBJECTIVES, REGISTRIES, close_matches
from harness.reporting import build_report
from harness.results import Result
from harness.spec import split_spec
from harness.suites import Suite, load_suite
from harness.sweeps import Sweep

__all__ = [
    "DEFAULT_RUN_OBJECTIVES",
    "attack_unit_test",
    "describe_entry",
    "evaluate",
    "list_registry",
    "load_dataset",
    "load_model",
    "plan_sweep",
    "resolve_objectives",
    "run",
    "sweep",
    "train",
    "train_recipe",
]

# One objective per family (loss, augmentation, adversarial training, auxiliary data): the default main job.
DEFAULT_RUN_OBJECTIVES = ("ce", "mixup", "pgd-at", "odnl")


def evaluate(
    model: str | Path | nn.Module,
    dataset: str | ImageDataset = "digits",
    suite: str | Suite = "quick",
    *,
    out: str | Path | None = None,
    name: str | None = None,
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    trust_torchscript: bool = False,
    surrogate: Any = None,
    **config: Any,
) -> Result:
    """Evaluate a model with a suite; returns the `Result`.

    ``model`` and the loading options are as in `load_model` (checkpoint, ``robustbench:<Name>``,
    ``module:factory`` with ``weights``, TorchScript, or a module). With ``name`` the run is written
    to ``out/name`` (default out: ``runs``) and is resumable. ``surrogate`` (an nn.Module, a callable
    ``factory(model) -> nn.Module`` or ``"module.path:factory"``) gives gradient attacks BPDA
    gradients for a model without usable ones (``surrogate_mode="transfer"`` attacks it alone);
    verdicts always come from the model (`harness.surrogate`). Other keyword arguments are
    `EvalConfig` fields (batch_size, seed, device, max_samples, surrogate_mode, ...).
    """
    cfg = EvalConfig(**config)
    # The suite first (parsing and every declared parameter): a bad suite fails before any work.
    suite = load_suite(suite)
    suite.check()
    # Then the model: its errors do not wait for (possibly large) data to load.
    m, info = load_model(
        model,
        dataset=dataset,
        threat_model=threat_model,
        model_dir=model_dir,
        weights=weights,
        mean=mean,
        std=std,
        trust_torchscript=trust_torchscript,
    )
    ds = load_dataset(dataset)
    if not isinstance(dataset, ImageDataset):
        probe(m, ds.shape, ds.num_classes, f"model {info['name']!r}")
    return Evaluation(m, ds, suite, out=out, name=name, config=cfg, model_info=info, surrogate=surrogate).run()


def attack_unit_test(
    model: str | Path | nn.Module,
    dataset: str | ImageDataset = "digits",
    suite: str | Suite = "quick",
    **kwargs: Any,
) -> UnitTestResult:
    """The attack unit test (Zimmermann et al. 2022) of a suite on a model; see `harness.analyses.binarization`.

    Returns a `UnitTestResult` (fraction of provably existing adversarial examples the suite found,
    per threat model; under 95 % the suite is too weak for the model). Keyword arguments:
    n_samples, inner_points, seed, device, eot_samples, threshold.
    """
    m, _ = load_model(model)
    return run_attack_unit_test(m, load_dataset(dataset), suite, **kwargs)


def train(
    objective: str = "ce",
    model: str = "cnn",
    dataset: str | ImageDataset = "digits",
    *,
    out: str | Path | None = None,
    objective_params: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    label_noise: str | None = None,
    imbalance: str | None = None,
    overwrite: bool = False,
    **config: Any,
):
    """Train a registered architecture with a registered objective; writes ``out.safetensors/.json``.

    A checkpoint already at ``out`` from another training (objective, settings, data) is replaced
    only with ``overwrite=True``; the same training again, or a resume, needs no flag.

    ``dataset`` names the training set; its ``split`` is replaced by train/test automatically when
    given by name. Keyword arguments are `defenses.TrainConfig` fields (epochs, lr, seed, ...).
    ``label_noise`` (``sym:RATE``/``asym:RATE``) and ``imbalance`` (``exp:RHO``/``step:RHO``) alter the
    training split only, seeded by the training seed (`defenses.conditions`); the sidecar records them.
    """
    if isinstance(dataset, ImageDataset):
        train_ds, test_ds = dataset, None
    else:
        name, raw = split_spec(dataset)
        raw.pop("split", None)
        args = DATASETS.parse(name, raw)
        train_ds = DATASETS.create(name, split="train", **args)
        test_ds = DATASETS.create(name, split="test", **args)
    cfg = TrainConfig(**config)
    cond = apply_conditions(train_ds, label_noise=label_noise, imbalance=imbalance, seed=cfg.seed)
    return defenses.train(  # looked up at call time: tests and plug-ins may replace it
        objective,
        model,
        cond.train,
        test_ds,
        config=cfg,
        out=out,
        objective_params=objective_params,
        model_args=model_args,
        condition=cond.condition or None,
        overwrite=overwrite,
    )


def resolve_objectives(objectives: str | Sequence[str], dataset: str | ImageDataset = "digits") -> list[str]:
    """Objective names from ``"default"``, ``"all"`` (every one that applies to the dataset) or a list.

    ``"all"`` leaves out objectives that need data the dataset lacks (``hcot`` needs a class hierarchy).
    """
    if isinstance(objectives, str):
        if objectives == "default":
            return list(DEFAULT_RUN_OBJECTIVES)
        if objectives == "all":
            ds = load_dataset(dataset)
            return [n for n in OBJECTIVES.names() if _objective_class(n).applicable(ds)]
        objectives = [o.strip() for o in objectives.split(",") if o.strip()]
    names = list(objectives)
    if not names:
        raise UsageError("no objectives given", "name some, e.g. ce,pgd-at, or use default or all")
    for n in names:
        OBJECTIVES.get(n)  # unknown names fail here, with the closest suggestions
    return names


def _objective_class(name: str) -> Any:
    factory = OBJECTIVES.get(name).factory
    return factory if isinstance(factory, type) else type(factory())


def run(
    objectives: str | Sequence[str] = DEFAULT_RUN_OBJECTIVES,
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
    report of all of them (``out/name/report.html`` and ``report.md``, see `harness.reporting`).
    ``objectives``: names, ``"default"`` (one per family) or ``"all"``."""
    objectives = resolve_objectives(objectives, dataset)
    root = safe_join(out, check_run_name(name), what="run name")
    results = []
    for obj in objectives:
        ckpt = safe_join(root, "checkpoints", obj, what="objective name")
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
    if any(r.corruptions for r in results):
        # corruption errors are normalised by the plain cross-entropy model when it was trained
        ref = results[list(objectives).index("ce")] if "ce" in objectives else results[0]
        for obj, r in zip(objectives, results):
            attach(r, ref)
            r.save(safe_join(root, "evals", obj, "result.json", what="objective name"))
    build_report([safe_join(root, "evals", obj) for obj in objectives], root, title=f"Robustness report: {name}")
    return results


def sweep(
    models: str | Sequence[str],
    suites: str | Sequence[str] = "quick",
    dataset: str | ImageDataset = "digits",
    *,
    out: str | Path = "sweep",
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    trust_torchscript: bool = False,
    title: str = "Robustness report",
    threat: str | None = None,
    progress: bool = True,
    **config: Any,
):
    """Evaluate every model × suite (a cell each, ``out/<model>-<suite>-<key>``) and report them all.

    ``models`` are checkpoint paths, globs, ``robustbench:<Name>`` or TorchScript files (as in
    `load_model`). Finished cells are skipped, changed ones get a new key and are computed,
    interrupted ones resume; the combined report goes to ``out/report/``. Other keyword arguments
    are `EvalConfig` fields (batch_size, chunk_size, seed, device, max_samples, checks, eot_samples,
    eps). Returns a `harness.sweeps.SweepResult` (cells, their states, results, report).
    """
    sw = Sweep(
        models,
        suites,
        dataset,
        out=out,
        threat_model=threat_model,
        model_dir=model_dir,
        trust_torchscript=trust_torchscript,
        **config,
    )
    return sw.run(progress=progress, title=title, threat=threat)


def plan_sweep(
    models: str | Sequence[str],
    suites: str | Sequence[str] = "quick",
    dataset: str = "digits",
    *,
    out: str | Path = "sweep",
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    trust_torchscript: bool = False,
    executable: str = "harness",
    **config: Any,
) -> list[str]:
    """The cells of `sweep` as `harness evaluate` command lines (one per cell, for a job array).

    Runs nothing; writes ``out/sweep.json`` so that `harness report out` afterwards reports
    exactly these cells. Loads each model once on the CPU to hash its weights.
    """
    sw = Sweep(
        models,
        suites,
        dataset,
        out=out,
        threat_model=threat_model,
        model_dir=model_dir,
        trust_torchscript=trust_torchscript,
        **config,
    )
    return sw.commands(executable)


def list_registry(kind: str, pattern: str = "*") -> list[tuple[str, str]]:
    """(name, one-line summary) pairs of a registry: datasets, models, attacks, corruptions, objectives, suites."""
    return [(e.name, e.summary) for e in _registry(kind).entries(pattern)]


def describe_entry(kind: str, name: str) -> dict[str, Any]:
    """One entry's declared parameters (kind, allowed values, default, doc) and reference budget, if any.

    ``{"name", "summary", "params": [{"name", "type", "allowed", "default", "doc"}], "reference": ...}``
    """
    entry = _registry(kind).get(name)
    params = [
        {
            "name": n,
            "type": p.type_name(),
            "allowed": p.allowed(),
            "default": "required" if p.required else p.default,
            "doc": p.doc,
        }
        for n, p in entry.params.items()
    ]
    ref = getattr(entry.factory, "REFERENCE", None)
    reference = {"budget": dict(ref.budget), "source": ref.source} if ref is not None else None
    return {"name": entry.name, "summary": entry.summary, "params": params, "reference": reference}


def _registry(kind: str):
    if kind not in REGISTRIES:
        raise UsageError(
            f"unknown registry {kind!r}.{close_matches(kind, list(REGISTRIES))}",
            f"choose one of {', '.join(REGISTRIES)}",
        )
    return REGISTRIES[kind]


def train_recipe(recipe: str | Path | Recipe, **overrides: Any) -> Any:
    """Train from a recipe (a preset name, a .toml file or a `Recipe`); ``overrides`` are `train` keywords that win."""
    return train(**load_recipe(recipe).train_kwargs(**overrides))
