"""Training recipes: a paper's settings by name (``harness train --recipe NAME``), as TOML data.

A recipe is a TOML file beside this module, registered in `RECIPES` by file name (``harness list
recipes``); ``--recipe path/to/file.toml`` reads a user's file of the same form::

    summary = "one line"
    dataset = "cifar10"            # a dataset spec
    objective = "pgd-at"           # a registered objective
    model = "preact-resnet18"      # a registered architecture
    label_noise = "sym:0.5"        # optional training conditions (defenses.conditions)
    imbalance = "exp:100"
    [model_args]                   # architecture arguments
    [objective_params]             # objective parameters
    [train]                        # defenses.TrainConfig fields: epochs, batch_size, lr, schedule, ...

Precedence: the trainer's defaults < the recipe < the user's explicit flags (``--epochs 5``,
``-p beta=3``, ``--model-arg widen=2``); objective parameters and architecture arguments merge key
by key. The sidecar's ``train_config`` records the recipe name and the first 16 hex digits of the
SHA-256 of its content (canonical JSON of the parsed file), so a checkpoint names the recipe it was
trained from and whether that recipe's file changed since.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.registry import RECIPES

PRESET_DIR = Path(__file__).parent
TOP_KEYS = {
    "summary": str,
    "dataset": str,
    "objective": str,
    "model": str,
    "label_noise": str,
    "imbalance": str,
    "model_args": dict,
    "objective_params": dict,
    "train": dict,
}
REQUIRED = ("summary", "dataset", "objective", "model")
# TrainConfig fields a recipe may not set: where to run and what to show are the user's.
NOT_IN_RECIPE = {"device", "progress", "recipe", "recipe_hash"}


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe and the hash of its content."""

    name: str
    summary: str
    dataset: str
    objective: str
    model: str
    label_noise: str | None = None
    imbalance: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    objective_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    digest: str = ""

    def train_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of `harness.api.train`: this recipe, then ``overrides`` (None: not given).

        ``objective_params`` and ``model_args`` overrides merge key by key into the recipe's; with another
        objective (architecture) than the recipe's, the recipe's parameters (arguments) are dropped.
        """
        out: dict[str, Any] = {
            "objective": self.objective,
            "model": self.model,
            "dataset": self.dataset,
            "label_noise": self.label_noise,
            "imbalance": self.imbalance,
            "objective_params": dict(self.objective_params),
            "model_args": dict(self.model_args),
            **self.train,
        }
        for k, v in overrides.items():
            if v is None:
                continue
            if k in ("objective_params", "model_args"):
                out[k] = {**out[k], **v}
            else:
                out[k] = v
        # Another objective or architecture than the recipe's: the recipe's parameters for it do not apply.
        if (overrides.get("objective") or self.objective) != self.objective:
            out["objective_params"] = dict(overrides.get("objective_params") or {})
        if (overrides.get("model") or self.model) != self.model:
            out["model_args"] = dict(overrides.get("model_args") or {})
        out["recipe"], out["recipe_hash"] = self.name, self.digest
        return out


def parse_recipe(text: str, name: str, where: str | None = None) -> Recipe:
    """A recipe from TOML text; every key checked (unknown keys, types, TrainConfig fields)."""
    where = where or f"recipe {name}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where}: not valid TOML ({e})", "see harness/recipes/*.toml for the form") from None
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown}", f"a recipe has {', '.join(TOP_KEYS)}")
    for k in REQUIRED:
        if k not in data:
            raise UsageError(f"{where}: missing {k!r}", f"a recipe names {', '.join(REQUIRED)}")
    for k, v in data.items():
        if not isinstance(v, TOP_KEYS[k]):
            raise UsageError(f"{where}: {k} = {v!r} is not a {TOP_KEYS[k].__name__}", "see harness list recipes")
    from defenses.trainer import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - NOT_IN_RECIPE
    bad = sorted(set(data.get("train", {})) - fields)
    if bad:
        raise UsageError(f"{where}: [train] has unknown keys {bad}", f"allowed: {', '.join(sorted(fields))}")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return Recipe(name=name, digest=digest, **data)


def load_recipe(spec: str | os.PathLike[str] | Recipe) -> Recipe:
    """A preset name (`RECIPES`) or a path to a ``.toml`` file."""
    if isinstance(spec, Recipe):
        return spec
    spec = os.fspath(spec)
    p = Path(spec)
    if p.suffix == ".toml":
        if not p.is_file():
            raise UsageError(f"recipe file {p} not found", "check the path, or name a preset (harness list recipes)")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"recipe file {p} cannot be read as UTF-8 text: {e}", "check the file") from None
        return parse_recipe(text, p.stem, str(p))
    return RECIPES.create(spec)


def _register_presets() -> None:
    for path in sorted(PRESET_DIR.glob("*.toml")):
        text = path.read_text(encoding="utf-8")

        def factory(_text: str = text, _name: str = path.stem) -> Recipe:
            return parse_recipe(_text, _name, f"preset {_name}")

        factory.__doc__ = tomllib.loads(text)["summary"]
        RECIPES.add(path.stem, factory)


_register_presets()

__all__ = ["RECIPES", "Recipe", "load_recipe", "parse_recipe"]
