"""The Python API: the same verbs as the CLI (`train`, `evaluate`, `run`, `load_model`, ...).

The CLI is a thin layer over these functions. This module sits on top of all three packages: it
finds attacks and objectives only through the registries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data.base import ImageDataset
from harness.engine import EvalConfig, Evaluation, check_run_name
from harness.errors import UsageError
from harness.registry import DATASETS, REGISTRIES
from harness.results import Result
from harness.spec import parse_spec, split_spec
from harness.suites import Suite, load_suite

# One objective per family (loss, augmentation, adversarial training, auxiliary data): the default main job.
DEFAULT_RUN_OBJECTIVES = ("ce", "mixup", "pgd-at", "odnl")


def load_dataset(spec: str | ImageDataset, **kwargs: Any) -> ImageDataset:
    """A registered dataset by spec (``"digits"``, ``"digits:split=train"``) or an `ImageDataset` as is.

    Spec values are converted by the dataset's declared parameter kinds and checked against their
    ranges (`harness.params`) before anything is loaded or allocated.
    """
    if isinstance(spec, ImageDataset):
        return spec
    return DATASETS.from_spec(spec, **kwargs)


def _dataset_name(spec: str) -> str:
    """The name a dataset spec's data will carry: ``name=`` when given (``imagefolder:...,name=imagenet``)."""
    name, args = parse_spec(spec)
    return str(args.get("name", name))


def load_model(
    spec: str | Path | nn.Module,
    *,
    device: str | torch.device = "cpu",
    dataset: str | ImageDataset | None = None,
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    trust_torchscript: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model in eval mode and its description, from any of the supported sources (docs/models.md).

    ``spec`` is an `nn.Module`; a harness checkpoint (``x.safetensors`` with its ``x.json``);
    ``robustbench:<Name>`` (weights from ``model_dir/<dataset>/<threat_model>/<Name>.pt``);
    ``module.path:factory`` (with ``weights``: safetensors or a ``.pt`` state dict); or a
    TorchScript file (only with ``trust_torchscript``). ``mean``/``std`` wrap a model that expects
    normalised input. With an `ImageDataset` (or a RobustBench model) one forward pass checks the
    output against the classes.
    """
    from harness.environment import resolve_device
    from harness.models import external, zoo
    from harness.models.checkpoint import TORCH_SUFFIXES, load_checkpoint, weights_path

    device = resolve_device(device)  # an unknown or absent device is one line, before anything loads
    ds = dataset if isinstance(dataset, ImageDataset) else None
    ds_name = ds.name if ds is not None else (_dataset_name(dataset) if dataset else None)
    if not zoo.is_zoo_spec(spec) and (threat_model is not None or model_dir is not None):
        raise UsageError(
            "--threat-model and --model-dir apply only to robustbench:<Name> models",
            "drop them, or name the model as robustbench:<Name>",
        )
    if weights is not None and not (isinstance(spec, nn.Module) or external.is_factory_spec(str(spec))):
        raise UsageError(
            "--weights applies to --model module.path:factory (or a module in Python)",
            "harness checkpoints, RobustBench and TorchScript models carry their own weights",
        )
    if isinstance(spec, nn.Module):
        model = external.load_weights_file(spec, weights) if weights is not None else spec
        info: dict[str, Any] = {"name": type(spec).__name__, "source": "python"}
        if weights is not None:
            info["weights"] = str(weights)
    elif zoo.is_zoo_spec(spec):
        name = str(spec)[len(zoo.PREFIX) :].strip()
        if not name:
            raise UsageError("robustbench: needs a model name, e.g. robustbench:Standard")
        if ds_name is None:
            raise UsageError(f"which dataset is {spec} for?", "pass --dataset cifar10, cifar100 or imagenet")
        rb_dataset = ds_name if ds_name in zoo.DATASETS else ds_name.split("-")[0].split("_")[0]
        model, info = zoo.load_zoo_model(
            name, dataset=rb_dataset, threat_model=threat_model, model_dir=model_dir or "models"
        )
    elif external.is_factory_spec(str(spec)):
        if weights is None:
            raise UsageError(
                f"--model {spec} needs --weights FILE",
                "a .safetensors file or a .pt state dict; evaluating random weights is meaningless",
            )
        model = external.load_weights_file(external.build_from_factory(str(spec)), weights)
        info = {"name": str(spec).rpartition(":")[2], "source": str(spec), "weights": str(weights)}
    else:
        p = Path(spec)
        if p.is_file() and p.suffix != ".safetensors" and external.is_torchscript(p):
            model = external.load_torchscript(p, trust=trust_torchscript, device=device)
            info = {"name": p.stem, "source": str(p), "format": "torchscript"}
        elif weights_path(p).exists() or (p.exists() and not p.is_dir()):  # a pipe is refused by name, below
            if p.is_file() and p.suffix in TORCH_SUFFIXES:
                # Checked first (never unpickling anything but tensors), so a hostile pickle is named as such.
                external.read_torch_file(p)
                raise UsageError(
                    f"{p} is a torch weights file without an architecture",
                    "pass --model module.path:factory --weights FILE (or a TorchScript file)",
                )
            model, meta = load_checkpoint(p, device)
            import dataclasses

            info = {"name": weights_path(p).stem, "source": str(weights_path(p)), **dataclasses.asdict(meta)}
        else:
            raise UsageError(
                f"no model at {p}",
                "pass a <name>.safetensors written by `harness train`, robustbench:<Name>, "
                "module.path:factory with --weights, or a TorchScript file",
            )
    in_channels = ds.shape[0] if ds is not None else info.get("input_shape", [None])[0]
    model = external.maybe_normalize(model, mean, std, in_channels)
    if mean is not None:
        info["normalize"] = {"mean": list(mean), "std": list(std or [])}
    model = model.to(device).eval()
    if ds is not None:
        external.probe(model, ds.shape, ds.num_classes, f"model {info['name']!r}")
    elif "num_classes" in info and "input_shape" in info:
        external.probe(model, info["input_shape"], info["num_classes"], f"model {info['name']!r}")
    return model, info


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
    from harness.models.external import probe

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
    from defenses import TrainConfig
    from defenses import train as _train
    from defenses.conditions import apply_conditions

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
    return _train(
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
    from harness.registry import OBJECTIVES

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
    from harness.registry import OBJECTIVES

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
    from harness.reporting import build_report

    objectives = resolve_objectives(objectives, dataset)
    from harness.paths import safe_join

    root = safe_join(out, check_run_name(name), what="run name")
    results = []
    for obj in objectives:
        ckpt = safe_join(root, "checkpoints", obj, what="objective name")
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
    if any(r.corruptions for r in results):
        from harness.corruption_metrics import attach

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
    from harness.sweeps import Sweep

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
    from harness.sweeps import Sweep

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
        from harness.registry import close_matches

        raise UsageError(
            f"unknown registry {kind!r}.{close_matches(kind, list(REGISTRIES))}",
            f"choose one of {', '.join(REGISTRIES)}",
        )
    return REGISTRIES[kind]
