"""How evaluation cost grows (issue 23 §2), measured on CPU: with n, the eps-grid size, the attacks per
group and the robust accuracy; and AutoAttack's per-stage cost against the model's robust accuracy.

Every evaluation is `harness.api.evaluate` (prechecks, attacks, fp32 verdicts, the record) on the digits
CE `cnn` of bench/models_cache.py, wrapped in a counter of the images it passes forward with an input
gradient ("fwd+bwd") and without ("fwd"). Pass counts do not depend on the machine's load; wall times
do (the development machine is shared), so the tables give both.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/cost_model.py --out bench/results/cost-model-cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT)] + [str(BENCH)]

spec = importlib.util.spec_from_file_location("bench_attacks", BENCH / "attacks.py")
assert spec is not None and spec.loader is not None
aa_bench = importlib.util.module_from_spec(spec)
sys.modules["bench_attacks"] = aa_bench
spec.loader.exec_module(aa_bench)

from models_cache import benchmark_model  # noqa: E402

from harness import api  # noqa: E402
from harness.suites import parse_suite  # noqa: E402

PGD20 = '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = "dataset"\nparams = { steps = 20, restarts = 1, loss = "ce" }\n'
FGSM = '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = "dataset"\n'
APGD = '[[attack]]\nname = "apgd-ce"\nnorm = "linf"\neps = "dataset"\nparams = { steps = 20 }\n'
APGDT = '[[attack]]\nname = "apgd-t"\nnorm = "linf"\neps = "dataset"\nparams = { steps = 20, n_target_classes = 3 }\n'
GROUPS = {1: [PGD20], 2: [FGSM, PGD20], 3: [FGSM, PGD20, APGD], 4: [FGSM, PGD20, APGD, APGDT]}
GROUP_NAMES = {1: "pgd-20", 2: "+fgsm", 3: "+fgsm +apgd-ce-20", 4: "+fgsm +apgd-ce-20 +apgd-t-20x3"}


def suite(entries: list[str], name: str):
    return parse_suite(f'summary = "bench/cost_model.py: {name}"\n' + "".join(entries), name)


def lazy_npy(folder: Path, n: int) -> str:
    """An ``npy:`` spec for ``n`` rows: the 1797 digits tiled, uint8, with a seeded +-8 jitter, read lazily."""
    ds = api.load_dataset("digits:split=all")
    x, y = ds.batch(slice(0, len(ds)))
    reps = -(-n // len(ds))
    xs = np.tile((x.numpy() * 255).round(), (reps, 1, 1, 1))[:n]
    xs = np.clip(xs + np.random.default_rng(0).integers(-8, 9, xs.shape), 0, 255).astype(np.uint8)
    np.save(folder / "x.npy", xs)
    np.save(folder / "y.npy", np.tile(y.numpy(), reps)[:n].astype(np.int64))
    return f"npy:x={folder / 'x.npy'},y={folder / 'y.npy'},num_classes=10,name=digits-tiled"


def measure(model, data: str, entries: list[str], grid: tuple[float, ...], label: str) -> dict[str, Any]:
    """One evaluation: wall time, images passed (fwd+bwd, fwd), clean and robust accuracies per eps."""
    counter = aa_bench.Counter(model).eval()
    t = time.perf_counter()
    res = api.evaluate(counter, data, suite(entries, label), eps={"linf": grid}, progress=False, device="cpu")
    wall = time.perf_counter() - t
    row = {
        "label": label,
        "data": data.split(",")[0],
        "n": res.clean.n,
        "eps": list(grid),
        "attacks_per_group": len(entries),
        "wall_s": round(wall, 3),
        "attack_s": res.timing.get("attack_s"),
        "fwd_bwd_images": sum(counter.fb),
        "fwd_images": sum(counter.fwd),
        "clean_acc": round(res.clean.accuracy, 4),
        "robust_acc": [round(g.accuracy.accuracy, 4) for g in res.groups],
    }
    print(
        f"{label:34s} wall {row['wall_s']:7.2f} s  fwd+bwd {row['fwd_bwd_images']:9d}  fwd {row['fwd_images']:8d}  "
        f"robust {row['robust_acc']}",
        flush=True,
    )
    return row


def autoattack_stages(model, n: int, eps_list: list[float], square_queries: int) -> list[dict[str, Any]]:
    """AutoAttack standard stage by stage (native; reference budgets but Square's queries) at several eps."""
    ds = api.load_dataset("digits")
    x, y = ds.batch(slice(0, n))
    ids = ds.ids[:n]
    costs = aa_bench.PassCosts(model, x, y, reps=3)
    rows = []
    for eps in eps_list:
        r = aa_bench.run_backend(
            "native", model, x, y, ids, eps, list(aa_bench.STAGES), costs, {"square": {"n_queries": square_queries}}
        )
        row = {"eps": eps, "robust_acc": round(r["robust"].float().mean().item(), 4), "wall_s": round(r["wall_s"], 3)}
        row["stages"] = [
            {k: s[k] for k in ("stage", "attacked", "broken", "wall_s", "fwd_bwd_images", "fwd_images")}
            for s in r["stages"]
        ]
        rows.append(row)
        share = ", ".join(f"{s['stage']} {s['wall_s'] / max(row['wall_s'], 1e-9):.0%}" for s in row["stages"])
        print(f"autoattack eps {eps}: robust {row['robust_acc']:.3f}, {row['wall_s']:.1f} s ({share})", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cost-model-cpu.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lazy-n", type=int, default=20_000)
    ap.add_argument("--aa-n", type=int, default=100)
    ap.add_argument("--aa-square-queries", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = benchmark_model("ce")
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "model": "digits cnn, harness `ce`, 10 epochs, seed 0 (bench/models_cache.py)",
        "machine": {"processor": platform.processor() or platform.machine(), "threads": a.threads},
        "torch": torch.__version__,
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        lazy = lazy_npy(Path(tmp), a.lazy_n)
        out["by_n"] = [
            measure(model, d, [FGSM, PGD20], (0.1,), f"n: {d.split(',')[0]}")
            for d in ("digits", "digits:split=all", lazy)
        ]
    grids = {1: (0.1,), 2: (0.05, 0.1), 4: (0.05, 0.1, 0.15, 0.2), 8: tuple(round(0.025 * k, 3) for k in range(1, 9))}
    out["by_grid_size"] = [measure(model, "digits", [FGSM, PGD20], g, f"grid of {k}") for k, g in grids.items()]
    out["by_attacks_per_group"] = [
        measure(model, "digits", GROUPS[k], (0.1,), f"group: {GROUP_NAMES[k]}") for k in GROUPS
    ]
    out["by_robust_accuracy"] = [
        measure(model, "digits", [PGD20], (eps,), f"pgd-20 at eps {eps}") for eps in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
    ]
    out["autoattack_by_robust_accuracy"] = {
        "n": a.aa_n,
        "budgets": f"reference (100 steps, 9 targets), Square {a.aa_square_queries} queries",
        "rows": autoattack_stages(model, a.aa_n, [0.05, 0.1, 0.15, 0.2], a.aa_square_queries),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
