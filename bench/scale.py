"""1 vs 2 CPU ranks (torchrun, gloo) on the same evaluation: wall times, ratios, identical records.

Configurations (threads set by OMP_NUM_THREADS/MKL_NUM_THREADS): 1 rank × 1 thread, 1 rank × 2
threads (OpenMP's default spin-waiting, and OMP_WAIT_POLICY=PASSIVE), 2 ranks × 1 thread
(`harness evaluate --nproc 2`, gloo). Also the rank-0 merge alone: running a finished evaluation
again computes no chunk and only re-merges the record (539 records, and 10 000 synthetic ones).
Each configuration runs ``--repeats`` times, interleaved; the table gives the fastest run and all
runs are in the JSON.

    PYTHONPATH=. python bench/scale.py                      # trains the model once (~5 min), then ~5 min
    PYTHONPATH=. python bench/scale.py --model X.safetensors --repeats 2 --out bench/results/scale-cpu.json

Model: the harness `cnn` trained with `pgd-at` on digits (15 epochs, seed 0). Data: all 539 digits
test images. Suite: FGSM then PGD-100 (CE, 2 restarts) at L-inf 0.1, chunks of 64 samples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.records import chunk_files

ROOT = Path(__file__).resolve().parents[1]
SUITE = """summary = "bench/scale.py: FGSM then PGD-100 (CE, 2 restarts) at L-inf 0.1"
[[attack]]
name = "fgsm"
norm = "linf"
eps = 0.1
[[attack]]
name = "pgd"
norm = "linf"
eps = 0.1
params = { steps = 100, restarts = 2, loss = "ce" }
"""
FGSM_SUITE = 'summary = "bench/scale.py: FGSM at L-inf 0.1"\n[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.1\n'
# name -> (ranks, threads per rank, extra environment)
CONFIGS: dict[str, tuple[int, int, dict[str, str]]] = {
    "1rank-1thread": (1, 1, {}),
    "1rank-2threads": (1, 2, {}),
    "1rank-2threads-passive": (1, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),  # idle OpenMP threads sleep, not spin
    "2ranks-1thread": (2, 1, {}),
}
MERGE_N = 10_000  # records in the merge-only measurement (synthetic 1×8×8 images, FGSM only, chunks of 512)


def train_model(path: Path) -> Path:
    """The benchmark model, trained once and cached at ``path``."""
    if not path.with_suffix(".safetensors").is_file():
        env = _env(2)
        code = (
            "from harness import api; "
            f"api.train('pgd-at', 'cnn', 'digits', epochs=15, seed=0, out={str(path)!r}, device='cpu', progress=False)"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)
    return path.with_suffix(".safetensors")


def _env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for k in ("HARNESS_TEST_KILL_AT", "OMP_WAIT_POLICY"):
        env.pop(k, None)
    return {**env, **(extra or {})}


def evaluate(
    model: Path,
    suite: Path,
    out: Path,
    name: str,
    ranks: int,
    threads: int,
    chunk: int,
    extra_env: dict[str, str] | None = None,
    dataset: str = "digits",
) -> dict:
    """One `harness evaluate` command; returns its wall time, the engine's own wall time and the load."""
    args = [sys.executable, "-m", "harness", "evaluate", str(model), "--suite", str(suite), "--out", str(out)]
    args += ["--name", name, "--chunk-size", str(chunk), "--device", "cpu", "--no-progress", "--dataset", dataset]
    args += ["--nproc", str(ranks)] if ranks > 1 else []
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(args, env=_env(threads, extra_env), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
    res = json.loads((out / name / "result.json").read_text())
    return {
        "command_s": round(wall, 2),
        "evaluation_s": round(res["timing"]["wall_s"], 2),
        "attack_s": res["timing"]["attack_s"],
        "distributed": res.get("extra", {}).get("distributed"),
        "loadavg_1min_before": round(load0, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "robust": [g["accuracy"]["accuracy"] for g in res["groups"]],
        "clean": res["clean"]["accuracy"],
    }


def same_record(a: Path, b: Path) -> dict[str, bool]:
    """Bitwise equality of two per-sample records: all columns, and status/prediction columns only."""
    ra, rb = chunk_files(a / "records"), chunk_files(b / "records")
    if list(ra) != list(rb):
        return {"all_columns": False, "status_and_predictions": False}
    eq = lambda x, y: x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
    all_cols = all(sorted(ra[c]) == sorted(rb[c]) and all(eq(ra[c][k], rb[c][k]) for k in ra[c]) for c in ra)
    verdict = all(eq(ra[c][k], rb[c][k]) for c in ra for k in ra[c] if k[0] in "sp" or k in ("id", "label"))
    return {"all_columns": all_cols, "status_and_predictions": verdict}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a harness checkpoint (default: train the bench model)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/harness-bench-scale"), help="model cache and run dirs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale-cpu.json")
    a = ap.parse_args()

    a.work.mkdir(parents=True, exist_ok=True)
    model = a.model or train_model(a.work / "cnn_pgd_at")
    suite = a.work / "pgd100.toml"
    suite.write_text(SUITE)
    runs = a.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    rows: dict[str, list[dict]] = {k: [] for k in CONFIGS}
    for rep in range(a.repeats):
        for name, (ranks, threads, extra) in CONFIGS.items():
            r = evaluate(model, suite, runs, f"{name}-r{rep}", ranks, threads, a.chunk_size, extra)
            rows[name].append(r)
            print(f"{name} repeat {rep}: command {r['command_s']} s, evaluation {r['evaluation_s']} s", flush=True)
    merge = evaluate(model, suite, runs, "1rank-1thread-r0", 1, 1, a.chunk_size)  # finished: merge only
    fgsm = a.work / "fgsm.toml"
    fgsm.write_text(SUITE.split('[[attack]]\nname = "pgd"')[0])
    big = f"synthetic:n={MERGE_N},channels=1,size=8"
    evaluate(model, fgsm, runs, "merge-10k", 1, 1, 512, dataset=big)
    merge_big = evaluate(model, fgsm, runs, "merge-10k", 1, 1, 512, dataset=big)  # finished: merge only
    ref = runs / "1rank-1thread-r0"
    identical = {f"{n}-r{rep}": same_record(ref, runs / f"{n}-r{rep}") for n in CONFIGS for rep in range(a.repeats)}

    best = {n: min(r["evaluation_s"] for r in rs) for n, rs in rows.items()}
    best_cmd = {n: min(r["command_s"] for r in rs) for n, rs in rows.items()}
    base = best["1rank-1thread"]
    print()
    print("| configuration | evaluation wall s (best) | command wall s (best) | speed-up vs 1×1 | record = 1×1 |")
    print("|---|---|---|---|---|")
    for n in CONFIGS:
        ident = all(identical[f"{n}-r{rep}"]["all_columns"] for rep in range(a.repeats))
        print(f"| {n} | {best[n]:.1f} | {best_cmd[n]:.1f} | {base / best[n]:.2f}× | {'yes' if ident else 'NO'} |")
    print(f"\nrank-0 merge alone (finished run re-merged): 539 records {merge['evaluation_s']:.2f} s, ", end="")
    print(f"{MERGE_N} records (20 chunks) {merge_big['evaluation_s']:.2f} s")

    import torch

    meta = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "note": "shared 2-core development machine; other jobs ran at the same time (see loadavg per run)",
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "model": str(model),
        "data": "digits test split, all 539 images",
        "suite": SUITE,
        "chunk_size": a.chunk_size,
        "configs": {n: {"ranks": r, "threads_per_rank": t, "env": e} for n, (r, t, e) in CONFIGS.items()},
        "runs": rows,
        "best_evaluation_s": best,
        "best_command_s": best_cmd,
        "speedup_vs_1rank_1thread": {n: round(base / best[n], 3) for n in CONFIGS},
        "merge_only": merge,
        "merge_only_10k_records": {**merge_big, "data": big, "suite": "FGSM at L-inf 0.1", "chunk_size": 512},
        "record_identical_to_1rank_1thread": identical,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
