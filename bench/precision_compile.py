"""bf16 autocast and torch.compile for the attack search: speed per PGD step, and robust accuracy vs fp32.

``steps``: seconds per PGD step of the trained digits CNN on a batch that stays robust (worst case:
no sample leaves the active set), for eager fp32, bf16, compiled fp32 and compiled bf16, each the
median of several alternating rounds; compile time (first call) reported apart.
``accuracy``: `harness.evaluate` with a suite at one L-inf eps, fp32 vs bf16 on the same points, per
benchmark model: robust accuracy, per-sample agreement, bf16 samples re-attacked in fp32, wall time.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/precision_compile.py steps \
        --out bench/results/precision-steps-cpu.json
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/precision_compile.py accuracy --n 200 --eps 0.15 \
        --out bench/results/precision-accuracy-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from models_cache import benchmark_model  # noqa: E402

from harness import api, environment  # noqa: E402
from harness.precision import SearchModel  # noqa: E402
from harness.records import open_record  # noqa: E402
from harness.records import schema as col  # noqa: E402
from harness.registry import ATTACKS  # noqa: E402

VARIANTS = {"eager fp32": ("fp32", False), "eager bf16": ("bf16", False)}
VARIANTS |= {"compiled fp32": ("fp32", True), "compiled bf16": ("bf16", True)}


def steps(a: argparse.Namespace) -> dict:
    model = benchmark_model("ce")
    for p in model.parameters():
        p.requires_grad_(False)
    ds = api.load_dataset("digits:split=all")
    x, _ = ds.batch(slice(0, a.batch))
    with torch.no_grad():
        y = model(x).argmax(1)  # robust at a tiny eps: every sample stays active for all steps
    ids = ds.ids[: a.batch]
    pgd = ATTACKS.create("pgd", norm="linf", eps=1e-4, steps=a.steps, restarts=1)
    search = {k: SearchModel(model, prec, comp) for k, (prec, comp) in VARIANTS.items()}
    first = {}
    for k, m in search.items():  # first call: compiles where asked (dynamic batch sizes)
        t0 = time.perf_counter()
        pgd(m, x, y, index=ids)
        first[k] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in search}
    for _ in range(a.rounds):
        for k, m in search.items():
            t0 = time.perf_counter()
            pgd(m, x, y, index=ids)
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["eager fp32"])
    rows = []
    print(f"digits CNN, PGD-{a.steps}, batch {a.batch}, {a.threads} thread(s), median of {a.rounds} rounds")
    print(f"{'variant':15s} {'s/step':>9s} {'vs eager fp32':>14s} {'first call s':>13s}  fallback")
    for k, m in search.items():
        med = statistics.median(times[k])
        rows.append(
            {
                "variant": k,
                "s_per_step": med / a.steps,
                "speedup_vs_eager_fp32": base / med,
                "first_call_s": first[k],
                "compile_fallback": m.fallback,
                "rounds_s": times[k],
            }
        )
        print(f"{k:15s} {med / a.steps:9.5f} {base / med:13.2f}x {first[k]:13.1f}  {m.fallback or '-'}")
    return {"batch": a.batch, "steps": a.steps, "rounds": a.rounds, "rows": rows}


def accuracy(a: argparse.Namespace) -> dict:
    ds = api.load_dataset("digits").subset(slice(0, a.n))
    rows = []
    print(f"digits test, first {a.n}, L-inf eps {a.eps}, suite {a.suite!r}, {a.threads} thread(s)")
    head = f"{'model':8s} {'fp32 rob':>9s} {'bf16 rob':>9s} {'diff pp':>8s} {'agree':>7s}"
    print(head + f" {'reruns':>6s} {'fp32 s':>7s} {'bf16 s':>7s}")
    for name in a.models.split(","):
        model = benchmark_model(name)
        out = {}
        for prec in ("fp32", "bf16"):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                res = api.evaluate(
                    model, ds, a.suite, eps={"linf": (a.eps,)}, precision=prec, progress=False, out=tmp, name="r"
                )
                wall = time.perf_counter() - t0
                rec = open_record(Path(tmp) / "r" / "records")
                rob = rec.column("clean_pred") == rec.column("label")
                for k in range(len(res.groups[0].entries)):
                    rob &= rec.column(col.status(k)) != 0
            out[prec] = (wall, rob, res.config.get("precision_reruns", 0))
        (wf, rf, _), (wb, rb, reruns) = out["fp32"], out["bf16"]
        row = {
            "model": name,
            "fp32_robust_acc": float(rf.mean()),
            "bf16_robust_acc": float(rb.mean()),
            "diff_pp": round(100 * float(rb.mean() - rf.mean()), 2),
            "agreement": float((rf == rb).mean()),
            "bf16_reruns_in_fp32": int(reruns),
            "fp32_wall_s": round(wf, 2),
            "bf16_wall_s": round(wb, 2),
        }
        rows.append(row)
        print(
            f"{name:8s} {100 * rf.mean():8.1f}% {100 * rb.mean():8.1f}% {row['diff_pp']:+8.1f} "
            f"{100 * row['agreement']:6.1f}% {reruns:6d} {wf:7.1f} {wb:7.1f}",
            flush=True,
        )
    return {"n": a.n, "eps": a.eps, "suite": a.suite, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("steps", "accuracy"))
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.15)
    ap.add_argument("--suite", default="fast")
    ap.add_argument("--models", default="ce,pgd-at,masked")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    body = steps(a) if a.part == "steps" else accuracy(a)
    out = {"part": a.part, "device": "cpu", "threads": a.threads, "versions": environment.versions(), **body}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
