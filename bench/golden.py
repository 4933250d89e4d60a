"""Golden runs for refactors: record evaluations with a fixed batch plan, then compare a later tree's runs.

``record`` runs every (suite, model) pair of the plan with fixed ``--batch-size``/``--chunk-size`` and
seed 0 into OUT/<suite>/<model>/; ``compare`` re-runs the same plan into a fresh folder and checks that
every record column of every chunk is bit-identical and result.json is equal except for timing and
environment fields. Both must run on the same machine (float sums differ across CPU capabilities,
docs/reliability.md), so the CPU capability is stored with the goldens and checked.

    python bench/golden.py record  --models DIR --out /work/golden-21/base
    python bench/golden.py compare --models DIR --golden /work/golden-21/base --out /work/golden-21/new
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Small user suites: `natural` restricted to two severities, `certified` with a small n/n0.
USER_SUITES = {
    "natural2": 'summary = "natural, 2 severities"\n\n[[corruption]]\nname = "all"\nseverity = [1, 3]\n',
    "certified-small": (
        'summary = "certified, small n"\n\n[[smoothing]]\nname = "smoothing-l2"\n'
        "params = { sigma = 0.25, n0 = 16, n = 64, alpha = 0.05, radii = [0.0, 0.25, 0.5] }\n"
    ),
}
SUITES = ("quick", "standard", "full", "natural2", "calibration", "certified-small")
# Per suite: samples, chunk size and models (None: all), so that each run takes seconds to a minute on
# 2 busy CPU cores; `full` (APGD-T x 9 targets, Square 5000 queries) only on the MLP with 4 samples.
PLAN: dict[str, tuple[int, int, tuple[str, ...] | None]] = {
    "quick": (48, 16, None),
    "standard": (24, 16, None),
    "full": (4, 2, ("mlp_ce",)),
    "natural2": (48, 16, None),
    "calibration": (32, 16, None),
    "certified-small": (16, 8, None),
}
BATCH = 8
# result.json keys whose values are wall-clock or host facts, not results.
TIMING_KEYS = {"seconds", "elapsed", "wall", "time", "timing", "started", "finished", "created", "duration"}


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def run_plan(models: Path, out: Path, suites: list[str], skip_done: bool = False) -> None:
    """Evaluate the models under ``models`` (``*.safetensors``) with every suite into ``out`` (see PLAN)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.txt").write_text(cpu_capability() + "\n")
    suite_dir = out / "_suites"
    suite_dir.mkdir(exist_ok=True)
    for name, text in USER_SUITES.items():
        (suite_dir / f"{name}.toml").write_text(text)
    for suite in suites:
        spec = str(suite_dir / f"{suite}.toml") if suite in USER_SUITES else suite
        n, chunk, only = PLAN[suite]
        for model in sorted(models.glob("*.safetensors")):
            if (only is not None and model.stem not in only) or (
                skip_done and (out / suite / model.stem / "result.json").exists()
            ):
                continue
            cmd = [
                sys.executable, "-m", "harness", "evaluate", str(model), "--suite", spec,
                "--batch-size", str(BATCH), "--chunk-size", str(chunk), "--seed", "0",
                "--max-samples", str(n), "--device", "cpu", "--no-progress",
                "--out", str(out / suite), "--name", model.stem, "--overwrite",
            ]  # fmt: skip
            print("+", " ".join(cmd[3:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS and not k.endswith("_seconds")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'golden' if k in a else 'new'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
        out.append(f"{where}: {a!r} != {b!r}")


def compare_runs(golden: Path, new: Path, suites: list[str]) -> list[str]:
    """Differences between two plan folders: record columns bit by bit, result.json without timing."""
    problems: list[str] = []
    for gres in sorted(golden.glob("*/*/result.json")):
        run = gres.parent.relative_to(golden)
        if run.parts[0] not in suites:
            continue
        nres = new / run / "result.json"
        if not nres.exists():
            problems.append(f"{run}: no result.json in the new run")
            continue
        # The plan folder itself (user suite files live in it) is named in result.json: compare relative.
        gtext, ntext = gres.read_text().replace(str(golden), "<plan>"), nres.read_text().replace(str(new), "<plan>")
        _diff(_strip(json.loads(gtext)), _strip(json.loads(ntext)), str(run), problems)
        for gz in sorted((gres.parent / "records").glob("chunk-*.npz")):
            nz = new / run / "records" / gz.name
            if not nz.exists():
                problems.append(f"{run}/{gz.name}: missing")
                continue
            with np.load(gz) as ga, np.load(nz) as na:
                if set(ga.files) != set(na.files):
                    problems.append(f"{run}/{gz.name}: columns {sorted(ga.files)} != {sorted(na.files)}")
                for col in sorted(set(ga.files) & set(na.files)):
                    x, y = ga[col], na[col]
                    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                        problems.append(f"{run}/{gz.name}:{col} differs ({x.dtype}{x.shape} vs {y.dtype}{y.shape})")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["record", "compare"])
    p.add_argument("--models", type=Path, required=True, help="folder of *.safetensors checkpoints")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--golden", type=Path, help="with compare: the recorded plan folder")
    p.add_argument("--suites", default=",".join(SUITES))
    p.add_argument("--skip-done", action="store_true", help="record: keep runs that already have a result.json")
    p.add_argument("--no-run", action="store_true", help="compare: only compare the folders already there")
    a = p.parse_args()
    suites = a.suites.split(",")
    if a.mode == "compare":
        if a.golden is None:
            p.error("compare needs --golden")
        want = (a.golden / "cpu.txt").read_text().strip()
        if want != cpu_capability():
            print(f"goldens were recorded on {want}, this machine is {cpu_capability()}: not comparable")
            return 2
    if not a.no_run:
        run_plan(a.models, a.out, suites, skip_done=a.skip_done and a.mode == "record")
    if a.mode == "record":
        return 0
    problems = compare_runs(a.golden, a.out, suites)
    for line in problems[:50]:
        print(line)
    print(f"{len(problems)} difference(s)" if problems else "golden comparison: identical")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
