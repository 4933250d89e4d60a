"""Loading what an evaluation needs from its spec: datasets, models, and a run's recorded data.

The shared loaders sit here, below the engine, the gate, the sweeps and the API, so that every layer
above can use them without importing the API (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.data.base import ImageDataset
from harness.environment import resolve_device
from harness.errors import UsageError
from harness.models import external, zoo
from harness.models.checkpoint import TORCH_SUFFIXES, load_checkpoint, weights_path
from harness.registry import DATASETS
from harness.spec import parse_spec


def load_dataset(spec: str | ImageDataset, **kwargs: Any) -> ImageDataset:
    """A registered dataset by spec (``"digits"``, ``"digits:split=train"``) or an `ImageDataset` as is.

    Spec values are converted by the dataset's declared parameter kinds and checked against their
    ranges (`harness.params`) before anything is loaded or allocated.
    """
    if isinstance(spec, ImageDataset):
        return spec
    return DATASETS.from_spec(spec, **kwargs)


def dataset_name(spec: str) -> str:
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
    device = resolve_device(device)  # an unknown or absent device is one line, before anything loads
    ds = dataset if isinstance(dataset, ImageDataset) else None
    ds_name = ds.name if ds is not None else (dataset_name(dataset) if dataset else None)
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


def dataset_spec_of(desc: dict[str, Any]) -> str:
    """A dataset spec rebuilding a run's data from its description (name, split, factory args in info)."""
    name = desc["name"]
    if name not in DATASETS:
        return name
    params = DATASETS.get(name).parameters()
    args: dict[str, Any] = {}
    if "split" in params and desc.get("split"):
        args["split"] = desc["split"]
    for k, v in (desc.get("info") or {}).items():
        if k in params and k != "split" and isinstance(v, (int, float, str, bool)):
            args[k] = v
    fmt = lambda v: v if isinstance(v, str) and v.replace("_", "").replace("-", "").isalnum() else repr(v)
    return name + (":" + ",".join(f"{k}={fmt(v)}" for k, v in args.items()) if args else "")


def select_ids(dataset: Any, ids: np.ndarray) -> Any:
    """The rows of ``dataset`` holding ``ids``, in that order (a subset keeping global ids)."""
    have = np.asarray(dataset.ids, dtype=np.int64)
    pos = {int(v): i for i, v in enumerate(have)}
    rows = [pos.get(int(i), -1) for i in ids]
    lacking = [int(i) for i, r in zip(ids, rows) if r < 0]
    if lacking:
        raise UsageError(
            f"{len(lacking)} of the baseline's {len(ids)} sample ids are not in dataset "
            f"{dataset.name}:{dataset.split} (e.g. {lacking[:5]})",
            "check the dataset spec against the baseline's (dataset.spec in the baseline file)",
        )
    return dataset.subset(np.asarray(rows, dtype=np.int64))
