"""`harness train`."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.registry import MODELS, OBJECTIVES
from harness.spec import split_kv

from .app import app, console


@app.command()
def train(
    objective: str = typer.Option("ce", help="registered objective (harness list objectives)"),
    model: str = typer.Option("cnn", help="registered architecture (harness list models)"),
    dataset: str = typer.Option("digits", help="dataset spec, e.g. digits or cifar10:root=DIR"),
    out: Path = typer.Option(Path("runs/models/model"), help="checkpoint path stem (writes .safetensors/.json)"),
    epochs: int = typer.Option(30),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(0.05),
    optimizer: str = typer.Option("sgd"),
    weight_decay: float = typer.Option(5e-4),
    schedule: str = typer.Option("cosine"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    param: list[str] = typer.Option([], "--param", "-p", help="objective parameter key=value (repeatable)"),
    model_arg: list[str] = typer.Option([], "--model-arg", help="architecture argument key=value (repeatable)"),
    label_noise: str | None = typer.Option(None, help="training label noise: sym:RATE or asym:RATE (e.g. sym:0.4)"),
    imbalance: str | None = typer.Option(None, help="training class imbalance: exp:RHO or step:RHO (e.g. exp:10)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    overwrite: bool = typer.Option(False, help="replace a checkpoint of another training at --out"),
) -> None:
    """Train a model with an objective; resumes if interrupted (same arguments)."""
    from harness.api import train as api_train

    res = api_train(
        objective,
        model,
        dataset,
        out=out,
        # Text values converted by the declared kinds (-p label_smoothing=abc: "not a number").
        objective_params=OBJECTIVES.parse(objective, split_kv(param)) if param else None,
        model_args=MODELS.parse(model, split_kv(model_arg, "model argument")) if model_arg else None,
        label_noise=label_noise,
        imbalance=imbalance,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        schedule=schedule,
        seed=seed,
        device=device,
        progress=progress,
        overwrite=overwrite,
    )
    last = res.log[-1] if res.log else {}
    console.print(
        f"saved [bold]{res.checkpoint}[/]  clean {100 * last.get('test_clean', float('nan')):.1f}%  "
        f"pgd {100 * last.get('test_pgd', float('nan')):.1f}%"
    )
