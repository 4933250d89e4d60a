"""`harness evaluate MODEL`: a harness checkpoint, robustbench:<Name>, module:factory --weights, TorchScript."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.errors import UsageError
from harness.spec import default_run_name

from .app import app, console
from .common import print_findings, results_table


def parse_floats(text: str | None, option: str) -> list[float] | None:
    """``"0.49,0.48,0.45"`` -> [0.49, 0.48, 0.45]."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a comma-separated list of numbers", f"e.g. {option} 0.5,0.5,0.5"
        ) from None
    if not values:
        raise UsageError(f"{option} is empty", f"e.g. {option} 0.5,0.5,0.5")
    return values


@app.command()
def evaluate(
    checkpoint: str | None = typer.Argument(
        None,
        metavar="MODEL",
        help="x.safetensors from harness train, robustbench:<Name>, module.path:factory, or a TorchScript file",
    ),
    model: str | None = typer.Option(None, "--model", help="the model, as MODEL (e.g. module.path:factory)"),
    dataset: str = typer.Option("digits", help="dataset spec, e.g. digits or cifar10:root=DIR"),
    suite: str = typer.Option("quick", help="suite preset (harness list suites) or a TOML file"),
    threat_model: str | None = typer.Option(None, help="RobustBench threat model: Linf, L2 or corruptions"),
    model_dir: Path | None = typer.Option(None, help="RobustBench model dir (DIR/<dataset>/<threat>/<Name>.pt)"),
    weights: Path | None = typer.Option(None, help="weights for --model module:factory (.safetensors or .pt)"),
    mean: str | None = typer.Option(None, help="per-channel mean the model expects, e.g. 0.4914,0.4822,0.4465"),
    std: str | None = typer.Option(None, help="per-channel std the model expects (with --mean)"),
    trust_torchscript: bool = typer.Option(False, help="allow a TorchScript file (it runs the code it contains)"),
    surrogate: str | None = typer.Option(
        None,
        help="differentiable stand-in for gradient attacks (BPDA), module.path:factory; called as factory(model)",
    ),
    surrogate_mode: str = typer.Option("bpda", help="with --surrogate: bpda (real forward) or transfer"),
    out: Path = typer.Option(Path("runs"), help="output root"),
    name: str | None = typer.Option(None, help="run name (default: model name + suite)"),
    batch_size: str = typer.Option("256", help="images per batch, or auto: the largest that fits (probed once)"),
    chunk_size: int = typer.Option(512, help="samples per record chunk (the unit of resume and of sharding)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    max_samples: int | None = typer.Option(None, help="evaluate only the first N samples"),
    overwrite: bool = typer.Option(False, help="replace results of a different evaluation under the same name"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    checks: str = typer.Option("basic", help="basic, or full: adds the unbounded-eps check and the attack unit test"),
    eot_samples: int | None = typer.Option(None, help="EOT draws for randomised models (default: 10 if stochastic)"),
    precision: str = typer.Option("fp32", help="attack search precision: fp32, or bf16 (autocast; verdicts stay fp32)"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model for the attack search"),
    eps: list[str] = typer.Option([], "--eps", help="override the dataset's eps grid: NORM=V[,V...] (repeatable)"),
    gallery: bool = typer.Option(
        True, "--gallery/--no-gallery", help="keep a few samples' images for the report's galleries (records/gallery)"
    ),
    nproc: int | None = typer.Option(None, help="launch N local ranks through torchrun (data-parallel)"),
    max_restarts: int = typer.Option(0, help="with --nproc: torchrun restarts of the whole job after a failure"),
    plan_only: bool = typer.Option(
        False, "--plan-only", help="print the expected cost in model passes per suite entry and stop (no model loaded)"
    ),
) -> None:
    """Evaluate a model with a suite; writes OUT/NAME/{result.json,report.md,records/}; resumable.

    Under torchrun (or with --nproc) every rank evaluates its share of the record's chunks and rank 0
    merges them; the results do not depend on the number of ranks.
    """
    from harness import distributed
    from harness.api import evaluate as api_evaluate
    from harness.engine import EvalConfig
    from harness.suites import parse_eps_grid

    if plan_only:
        _print_plan(dataset, suite, max_samples, eps, batch_size, chunk_size, eot_samples)
        return
    if (checkpoint is None) == (model is None):
        raise UsageError(
            "give the model once: as the MODEL argument or as --model",
            "e.g. harness evaluate runs/models/model.safetensors, or --model mypkg.nets:build --weights w.pt",
        )
    spec = checkpoint if checkpoint is not None else model
    assert spec is not None
    run_name = name or default_run_name(spec, suite)
    # The numbers and the device are checked once, here, also before --nproc launches any rank.
    cfg = EvalConfig(
        batch_size=batch_size, chunk_size=chunk_size, seed=seed, device=device, max_samples=max_samples,
        eot_samples=eot_samples, checks=checks, precision=precision, compile=compile, eps=parse_eps_grid(eps),
        gallery=gallery,
    )  # fmt: skip
    bs = cfg.batch_size
    if nproc is not None:
        # Every rank runs this same command without --nproc; torchrun sets RANK/WORLD_SIZE.
        args = ["evaluate", "--model", spec, "--dataset", dataset, "--suite", suite, "--out", str(out)]
        args += ["--name", run_name, *cfg.to_argv()]
        optional = {"--threat-model": threat_model, "--model-dir": model_dir, "--weights": weights, "--mean": mean}
        optional |= {"--std": std, "--surrogate": surrogate, "--surrogate-mode": surrogate_mode if surrogate else None}
        for flag, value in optional.items():
            args += [flag, str(value)] if value is not None else []
        args += ["--overwrite"] if overwrite else []
        args += ["--trust-torchscript"] if trust_torchscript else []
        args += ["--progress" if progress else "--no-progress"]
        distributed.launch(nproc, args, out / run_name, max_restarts=max_restarts)
        return
    api_evaluate = distributed.reporting(api_evaluate)  # a rank of --nproc: its error goes to the launcher
    res = api_evaluate(
        spec,
        dataset,
        suite,
        out=out,
        name=run_name,
        threat_model=threat_model,
        model_dir=model_dir,
        weights=weights,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        trust_torchscript=trust_torchscript,
        surrogate=surrogate,
        surrogate_mode=surrogate_mode,
        batch_size=bs,
        chunk_size=chunk_size,
        seed=seed,
        device=device,
        max_samples=max_samples,
        overwrite=overwrite,
        progress=progress,
        checks=checks,
        eot_samples=eot_samples,
        precision=precision,
        compile=compile,
        eps=parse_eps_grid(eps),
        gallery=gallery,
    )
    if distributed.env_world()[0] != 0:
        return  # rank 0 prints
    console.print(results_table([res]))
    print_findings(console, [res])
    console.print(f"wrote [bold]{out / run_name}[/]/result.json and report.md")


def _print_plan(
    dataset: str,
    suite: str,
    max_samples: int | None,
    eps: list[str],
    batch_size: str,
    chunk_size: int,
    eot_samples: int | None,
) -> None:
    """`--plan-only`: the options checked as for a run, then the plan table (`harness.plan`)."""
    from harness.engine import EvalConfig
    from harness.plan import plan_evaluation
    from harness.suites import parse_eps_grid

    cfg = EvalConfig(batch_size=batch_size, chunk_size=chunk_size, max_samples=max_samples, eot_samples=eot_samples)
    plan = plan_evaluation(
        dataset,
        suite,
        max_samples=cfg.max_samples,
        eps=parse_eps_grid(eps),
        batch_size=cfg.batch_size,
        chunk_size=cfg.chunk_size,
        eot_samples=cfg.eot_samples,
    )
    console.print(plan.table())
