"""RobustBench models offline: the architecture from robustbench's registry, weights from a local file.

Files follow robustbench's own layout (``robustbench.utils.load_model``):
``MODEL_DIR/<dataset>/<threat_model>/<Name>.pt``, and ensembles ``<Name>.pt_m0.pt``, ``<Name>.pt_m1.pt``...
Unlike robustbench's loader, nothing is downloaded and checkpoints are read with
``torch.load(weights_only=True)``. Its state-dict conventions are handled: ``state_dict`` wrappers,
``last`` for the models saved as {'last', 'best'}, ``module.``/``model.`` prefixes, and the few
tensors robustbench tolerates as missing (normalisation constants the architecture defines itself)
or unexpected (unused pruning scores, an auxiliary head).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from harness.compat import NetworkRefused, import_robustbench, no_network
from harness.errors import CheckpointError, UsageError
from harness.registry import close_matches

from .checkpoint import load_weights_into
from .external import fit_prefixes, read_torch_file, unwrap_state

PREFIX = "robustbench:"
# Dataset name -> (input shape, classes), for robustbench's three benchmarks.
DATASETS = {"cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "imagenet": ((3, 224, 224), 1000)}
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions", "corruptions_3d": "corruptions"}
# Checkpoints stored as {'last': ..., 'best': ...}; robustbench takes 'last' (robustbench/utils.py).
LAST_CHECKPOINT = ("Kireev2021Effectiveness", "Andriushchenko2020Understanding")
# Missing tensors robustbench accepts: constants the architecture sets in its constructor.
TOLERATED_MISSING = {"mu", "sigma", "mean", "std", "normalize.mean", "normalize.std"}
# Unexpected tensors robustbench accepts: an unused auxiliary head and pruning scores.
TOLERATED_UNEXPECTED_PREFIX = ("model_preact_hl1.",)
TOLERATED_UNEXPECTED_SUFFIX = (".scores",)
# Ensembles whose members are not `model.models[i]` with plain state dicts.
UNSUPPORTED_ENSEMBLES = ("Bai2023Improving", "Bai2024MixedNUTS")


@dataclass(frozen=True)
class ZooEntry:
    """One RobustBench model: its registry coordinates and where its weights must lie."""

    name: str
    dataset: str
    threat_model: str
    model_dir: Path
    files: tuple[Path, ...]
    factory: Any


def is_zoo_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _zoo() -> dict:

    import_robustbench()
    from robustbench.model_zoo import model_dicts

    return {ds.value: {tm.value: models for tm, models in tms.items()} for ds, tms in model_dicts.items()}


def resolve(name: str, dataset: str, threat_model: str | None, model_dir: str | Path) -> ZooEntry:
    """Find ``name`` in robustbench's registry and the file(s) its weights must be in."""
    if dataset not in DATASETS:
        raise UsageError(
            f"RobustBench has no models for dataset {dataset!r}",
            f"use one of {', '.join(DATASETS)} (--dataset)",
        )
    zoo = _zoo()[dataset]
    if threat_model is None:
        found = [tm for tm, models in zoo.items() if name in models and tm != "corruptions_3d"]
        if len(found) != 1:
            where = f"it is listed under {', '.join(found)}" if found else "name it"
            raise UsageError(
                f"RobustBench model {name!r}: which threat model? ({where})",
                "pass --threat-model Linf, L2 or corruptions",
            )
        threat_model = found[0]
    tm = THREAT_MODELS.get(threat_model.lower())
    if tm is None:
        raise UsageError(f"unknown RobustBench threat model {threat_model!r}", "use Linf, L2 or corruptions")
    models = zoo.get(tm, {})
    if name not in models:
        raise UsageError(
            f"{name!r} is not a RobustBench {dataset} {tm} model.{close_matches(name, list(models))}",
            "names as in robustbench's model zoo (robustbench.model_zoo), e.g. Standard",
        )
    info = models[name]
    gid = info.get("gdrive_id")
    if gid is None:
        raise UsageError(
            f"RobustBench model {name!r} has its weights on the timm hub, not as a robustbench checkpoint",
            "load it with timm yourself and pass the module to harness.api.evaluate",
        )
    if isinstance(gid, list) and name.startswith(UNSUPPORTED_ENSEMBLES):
        raise UsageError(
            f"RobustBench ensemble {name!r} stores nested member checkpoints the harness does not load offline",
            "build it with robustbench and pass the module to harness.api.evaluate",
        )
    folder = Path(model_dir) / dataset / tm
    base = folder / f"{name}.pt"
    files = tuple(Path(f"{base}_m{i}.pt") for i in range(len(gid))) if isinstance(gid, list) else (base,)
    return ZooEntry(name, dataset, tm, Path(model_dir), files, info["model"])


def expected_files(name: str, dataset: str, threat_model: str | None, model_dir: str | Path) -> tuple[Path, ...]:
    """The path(s) robustbench's layout puts this model's weights at."""
    return resolve(name, dataset, threat_model, model_dir).files


def build_architecture(entry: ZooEntry) -> nn.Module:
    """Call the registry's constructor with the network refused (a constructor must not download)."""

    try:
        with no_network():
            return entry.factory()
    except NetworkRefused as e:
        raise UsageError(
            f"building RobustBench model {entry.name!r} tries to download pretrained weights",
            "this model cannot be loaded offline; build it with robustbench and pass the module to the Python API",
        ) from e


def fit_state(model: nn.Module, state: dict[str, Tensor], where: str) -> list[str]:
    """Load ``state`` strictly, allowing only the mismatches robustbench's loader tolerates.

    Returns the names of tolerated extras that were dropped (for the model's description).
    """
    own = model.state_dict()
    state = fit_prefixes(state, list(own))
    dropped = sorted(
        k
        for k in set(state) - set(own)
        if k.startswith(TOLERATED_UNEXPECTED_PREFIX) or k.endswith(TOLERATED_UNEXPECTED_SUFFIX)
    )
    state = {k: v for k, v in state.items() if k not in dropped}
    for k in (set(own) - set(state)) & TOLERATED_MISSING:
        state[k] = own[k]  # the architecture's own constant
    load_weights_into(model, state, where)
    return dropped


def _checkpoint_state(obj: Any, name: str, where: str) -> dict[str, Tensor]:
    if name.startswith(LAST_CHECKPOINT) and isinstance(obj, dict) and isinstance(obj.get("last"), dict):
        obj = obj["last"]
    return unwrap_state(obj, where)


def load_zoo_model(
    name: str, *, dataset: str, threat_model: str | None = None, model_dir: str | Path = "models"
) -> tuple[nn.Module, dict[str, Any]]:
    """A RobustBench model in eval mode from local weights, plus its description."""
    entry = resolve(name, dataset, threat_model, model_dir)
    missing = [p for p in entry.files if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"no weights for RobustBench model {name!r} ({entry.dataset}, {entry.threat_model}) at {missing[0]}",
            f"download the checkpoint elsewhere and put it at exactly that path (model dir {entry.model_dir}); "
            "the harness never downloads",
        )
    model = build_architecture(entry)
    dropped: list[str] = []
    if len(entry.files) == 1:
        p = entry.files[0]
        dropped = fit_state(model, _checkpoint_state(read_torch_file(p), name, str(p)), str(p))
    else:
        members = getattr(model, "models", None)
        if not isinstance(members, nn.ModuleList) or len(members) != len(entry.files):
            raise UsageError(f"RobustBench ensemble {name!r} has an unexpected structure; cannot load it offline")
        for member, p in zip(members, entry.files):
            dropped += fit_state(member, _checkpoint_state(read_torch_file(p), name, str(p)), str(p))
    model.eval()
    shape, classes = DATASETS[entry.dataset]
    info = {
        "name": name,
        "source": f"robustbench:{entry.dataset}/{entry.threat_model}/{name}",
        "weights": [str(p) for p in entry.files],
        "dataset": entry.dataset,
        "threat_model": entry.threat_model,
        "num_classes": classes,
        "input_shape": list(shape),
    }
    if dropped:
        info["ignored_tensors"] = dropped
    return model, info
