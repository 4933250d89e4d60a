"""`harness sweep MODEL... --suite S...`: every model × suite as a run directory, then one report."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console


@app.command()
def sweep(
    models: list[str] = typer.Argument(
        ..., metavar="MODEL...", help="checkpoints (paths or quoted globs), robustbench:<Name>, TorchScript files"
    ),
    suite: list[str] = typer.Option(["quick"], "--suite", help="suite preset or TOML file (repeatable, or a,b)"),
    dataset: str = typer.Option("digits", help="dataset spec, e.g. digits or cifar10:root=DIR"),
    out: Path = typer.Option(Path("sweep"), help="output root: one run folder per cell, the report in OUT/report"),
    threat_model: str | None = typer.Option(None, help="RobustBench threat model (for robustbench: models)"),
    model_dir: Path | None = typer.Option(None, help="RobustBench model dir (for robustbench: models)"),
    trust_torchscript: bool = typer.Option(False, help="allow TorchScript files (they run the code they contain)"),
    batch_size: str = typer.Option("256", help="images per batch, or auto: the largest that fits (probed once)"),
    chunk_size: int = typer.Option(512, help="samples per record chunk (the unit of resume and of sharding)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    max_samples: int | None = typer.Option(None, help="evaluate only the first N samples"),
    checks: str = typer.Option("basic", help="basic, or full: adds the unbounded-eps check and the attack unit test"),
    eot_samples: int | None = typer.Option(None, help="EOT draws for randomised models (default: 10 if stochastic)"),
    eps: list[str] = typer.Option([], "--eps", help="override the dataset's eps grid: NORM=V[,V...] (repeatable)"),
    precision: str = typer.Option("fp32", help="attack search precision: fp32 or bf16 (verdicts are always fp32)"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model for the attack search"),
    gallery: bool = typer.Option(
        True, "--gallery/--no-gallery", help="keep a few samples' images for the report's galleries (records/gallery)"
    ),
    title: str = typer.Option("Robustness report", help="report title"),
    threat: str | None = typer.Option(None, help="threat model of the trade-off plot, e.g. linf-0.1"),
    plan: bool = typer.Option(False, "--plan", help="print one `harness evaluate` command per cell; run nothing"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate every MODEL with every suite; finished cells are skipped, changed ones recomputed.

    Each cell is an ordinary run folder OUT/<model>-<suite>-<key>, keyed by a hash of the weights,
    the data, the suite, the seed and the tool version. With --plan the cells are printed as
    commands for a cluster job array; run them anywhere, then `harness report OUT`.
    """
    import sys

    from harness.api import plan_sweep
    from harness.api import sweep as api_sweep
    from harness.suites import parse_eps_grid

    from .common import print_findings, results_table

    suites = [s.strip() for item in suite for s in item.split(",") if s.strip()]
    opts = dict(
        out=out,
        threat_model=threat_model,
        model_dir=model_dir,
        trust_torchscript=trust_torchscript,
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
        device=device,
        max_samples=max_samples,
        checks=checks,
        eot_samples=eot_samples,
        eps=parse_eps_grid(eps),
        precision=precision,
        compile=compile,
        gallery=gallery,
    )
    if plan:
        lines = plan_sweep(models, suites, dataset, **opts)
        sys.stdout.write("".join(line + "\n" for line in lines))
        typer.echo(
            f"# {len(lines)} cell(s); wrote {out / 'sweep.json'}; after running them: harness report {out}", err=True
        )
        return
    res = api_sweep(models, suites, dataset, title=title, threat=threat, progress=progress, **opts)
    labels = [d.name for d in res.run_dirs]
    console.print(results_table(res.results, title="sweep: clean vs robust accuracy (%)", labels=labels))
    print_findings(console, res.results)
    states = [res.status[c.name] for c in res.cells]
    console.print(
        f"{len(res.cells)} cell(s): {states.count('done')} computed, {states.count('skipped')} skipped; "
        f"wrote [bold]{res.report.html}[/] and [bold]{res.report.markdown}[/]",
        highlight=False,
    )
