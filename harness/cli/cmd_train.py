"""`harness train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from harness.errors import UsageError
from harness.recipes import load_recipe
from harness.registry import MODELS, OBJECTIVES
from harness.spec import split_kv

from .app import app, console


@app.command()
def train(
    recipe: str | None = typer.Option(
        None, help="a paper's settings by name or a .toml file (harness list recipes); flags given override it"
    ),
    objective: str | None = typer.Option(None, help="registered objective (harness list objectives) [default: ce]"),
    model: str | None = typer.Option(None, help="registered architecture (harness list models) [default: cnn]"),
    dataset: str | None = typer.Option(None, help="dataset spec, e.g. digits or cifar10:root=DIR [default: digits]"),
    out: Path = typer.Option(Path("runs/models/model"), help="checkpoint path stem (writes .safetensors/.json)"),
    epochs: int | None = typer.Option(None, help="[default: 30]"),
    batch_size: int | None = typer.Option(None, help="[default: 64]"),
    lr: float | None = typer.Option(None, help="[default: 0.05]"),
    optimizer: str | None = typer.Option(None, help="sgd or adam [default: sgd]"),
    momentum: float | None = typer.Option(None, help="[default: 0.9]"),
    nesterov: bool | None = typer.Option(None, "--nesterov/--no-nesterov", help="[default: plain momentum]"),
    weight_decay: float | None = typer.Option(None, help="[default: 5e-4]"),
    schedule: str | None = typer.Option(None, help="cosine, step, piecewise or constant [default: cosine]"),
    milestones: str | None = typer.Option(None, help="schedule=piecewise: epochs, e.g. 100,150"),
    augment: str | None = typer.Option(
        None, help="none, crop, flip, crop-flip, crop-flip-cutout [default: crop-flip on cifar10/100, imagefolder]"
    ),
    augment_pad: int | None = typer.Option(None, help="crop padding in pixels [default: round(H/8)]"),
    seed: int | None = typer.Option(None, help="[default: 0]"),
    device: str = typer.Option("auto"),
    param: list[str] = typer.Option([], "--param", "-p", help="objective parameter key=value (repeatable)"),
    model_arg: list[str] = typer.Option([], "--model-arg", help="architecture argument key=value (repeatable)"),
    label_noise: str | None = typer.Option(None, help="training label noise, e.g. sym:0.4 (harness docs: objectives)"),
    imbalance: str | None = typer.Option(None, help="training class imbalance: exp:RHO or step:RHO (e.g. exp:10)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    overwrite: bool = typer.Option(False, help="replace a checkpoint of another training at --out"),
) -> None:
    """Train a model with an objective; resumes if interrupted (same arguments).

    With --recipe, the recipe sets the paper's architecture, data, schedule and objective
    parameters; any flag given here wins over the recipe's value (parameters merge key by key).
    """
    from harness.api import train as api_train

    given: dict[str, Any] = {
        "objective": objective,
        "model": model,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "momentum": momentum,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "augment": augment,
        "augment_pad": augment_pad,
        "seed": seed,
        "label_noise": label_noise,
        "imbalance": imbalance,
    }
    if milestones is not None:
        try:
            given["milestones"] = [int(m) for m in milestones.split(",") if m.strip()]
        except ValueError:
            raise UsageError(
                f"--milestones {milestones!r} is not a list of epochs", "e.g. --milestones 100,150"
            ) from None
    rec = load_recipe(recipe) if recipe else None
    obj_name = objective or (rec.objective if rec else "ce")
    model_name = model or (rec.model if rec else "cnn")
    # Text values converted by the declared kinds (-p label_smoothing=abc: "not a number").
    given["objective_params"] = OBJECTIVES.parse(obj_name, split_kv(param)) if param else None
    given["model_args"] = MODELS.parse(model_name, split_kv(model_arg, "model argument")) if model_arg else None
    if rec is not None:
        kwargs = rec.train_kwargs(**given)
    else:
        kwargs = {k: v for k, v in given.items() if v is not None}
        kwargs.setdefault("objective", "ce")
        kwargs.setdefault("model", "cnn")
        kwargs.setdefault("dataset", "digits")
    res = api_train(out=out, device=device, progress=progress, overwrite=overwrite, **kwargs)
    last = res.log[-1] if res.log else {}
    console.print(
        f"saved [bold]{res.checkpoint}[/]  clean {100 * last.get('test_clean', float('nan')):.1f}%  "
        f"pgd {100 * last.get('test_pgd', float('nan')):.1f}%"
    )
