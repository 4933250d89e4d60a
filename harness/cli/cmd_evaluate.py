"""`harness evaluate CHECKPOINT`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console
from .common import print_findings, results_table


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="a checkpoint written by harness train (x.safetensors)"),
    dataset: str = typer.Option("digits", help="dataset spec, e.g. digits or cifar10:root=DIR"),
    suite: str = typer.Option("quick", help="suite preset (harness list suites) or a TOML file"),
    out: Path = typer.Option(Path("runs"), help="output root"),
    name: str | None = typer.Option(None, help="run name (default: checkpoint name + suite)"),
    batch_size: int = typer.Option(256),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    max_samples: int | None = typer.Option(None, help="evaluate only the first N samples"),
    overwrite: bool = typer.Option(False, help="replace results of a different evaluation under the same name"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    checks: str = typer.Option("basic", help="basic, or full: adds the unbounded-eps check and the attack unit test"),
    eot_samples: int | None = typer.Option(None, help="EOT draws for randomised models (default: 10 if stochastic)"),
    chunk_size: int = typer.Option(512, help="samples per record chunk (the unit of resume and of sharding)"),
    nproc: int | None = typer.Option(None, help="launch N local ranks through torchrun (data-parallel)"),
    max_restarts: int = typer.Option(0, help="with --nproc: torchrun restarts of the whole job after a failure"),
) -> None:
    """Evaluate a model with a suite; writes OUT/NAME/{result.json,report.md,records/}; resumable.

    Under torchrun (or with --nproc) every rank evaluates its share of the record's chunks and rank 0
    merges them; the results do not depend on the number of ranks.
    """
    from harness import distributed
    from harness.api import evaluate as api_evaluate

    run_name = name or f"{Path(checkpoint).stem}-{Path(suite).stem}"
    if nproc is not None:
        args = ["evaluate", checkpoint, "--dataset", dataset, "--suite", suite, "--out", str(out)]
        args += ["--name", run_name, "--batch-size", str(batch_size), "--seed", str(seed), "--device", device]
        args += ["--checks", checks, "--chunk-size", str(chunk_size)]
        args += ["--max-samples", str(max_samples)] if max_samples is not None else []
        args += ["--eot-samples", str(eot_samples)] if eot_samples is not None else []
        args += ["--overwrite"] if overwrite else []
        args += ["--progress" if progress else "--no-progress"]
        distributed.launch(nproc, args, out / run_name, max_restarts=max_restarts)
        return
    res = api_evaluate(
        checkpoint,
        dataset,
        suite,
        out=out,
        name=run_name,
        batch_size=batch_size,
        seed=seed,
        device=device,
        max_samples=max_samples,
        overwrite=overwrite,
        progress=progress,
        checks=checks,
        eot_samples=eot_samples,
        chunk_size=chunk_size,
    )
    if distributed.env_world()[0] != 0:
        return  # rank 0 prints
    console.print(results_table([res]))
    print_findings(console, [res])
    console.print(f"wrote [bold]{out / run_name}[/]/result.json and report.md")
