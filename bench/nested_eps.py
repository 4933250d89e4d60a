"""Nested eps (issue 23 §1), measured: passes, wall time and robust accuracy per eps, nested vs independent.

Each (model, suite) runs twice through `harness.api.evaluate` on the digits test split over the
dataset's full grid (L-inf 0.05, 0.1, 0.2, 0.3; L2 0.5, 1, 2): as shipped (nested eps: a sample broken at
a smaller eps keeps its point) and with ``nested = false`` on every attack entry (every eps attacked
independently, as before). The model is wrapped in a counter of the images it passes forward with an
input gradient ("fwd+bwd") and without ("fwd"): prechecks, attacks and verdicts. Pass counts do not
depend on the machine's load; wall times do (the development machine is shared), so both are given.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice python bench/nested_eps.py --out bench/results/nested-eps-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# bench/attacks.py is named like the `attacks` package: keep this folder last on the path.
sys.path = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT)] + [str(BENCH)]

from models_cache import trained  # noqa: E402

import attacks  # noqa: E402,F401  (registers the attacks the trainers craft with)
from harness import api  # noqa: E402
from harness.suites import Suite, load_suite  # noqa: E402

MODELS = ("ce", "pgd-at", "trades")
SUITES = ("quick", "standard", "autoattack")


class Counter(torch.nn.Module):
    """Counts the images of every forward with an input gradient (forward+backward) and without."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fb = 0
        self.fwd = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.fb += len(x)
        else:
            self.fwd += len(x)
        return self.model(x)


def opted_out(suite: Suite) -> Suite:
    """The same suite with ``nested = false`` on every attack entry (independent attacks per eps)."""
    attacks_ = [{**spec, "nested": False} for spec in suite.attacks]
    return Suite(suite.name + "-independent", suite.summary, attacks_, suite.corruptions, suite.source)


def measure(model: torch.nn.Module, suite: Suite, n: int | None) -> dict[str, Any]:
    counter = Counter(model).eval()
    t = time.perf_counter()
    res = api.evaluate(counter, "digits", suite, max_samples=n, progress=False, device="cpu", batch_size=256)
    wall = time.perf_counter() - t
    return {
        "n": res.clean.n,
        "wall_s": round(wall, 2),
        "attack_s": res.timing.get("attack_s"),
        "fwd_bwd_images": counter.fb,
        "fwd_images": counter.fwd,
        "clean_acc": round(res.clean.accuracy, 4),
        "robust_acc": {g.key: round(g.accuracy.accuracy, 4) for g in res.groups},
        "inherited": sum(int(e.get("inherited", 0)) for g in res.groups for e in g.entries),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(BENCH / "results" / "nested-eps-cpu.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--aa-n", type=int, default=100, help="samples for the autoattack suite (time box)")
    ap.add_argument("--standard-n", type=int, default=None, help="samples for the standard suite (time box)")
    ap.add_argument("--skip-done", action="store_true", help="keep the rows already in --out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out_path = Path(a.out)
    out: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    out.update(
        {
            "command": " ".join(sys.argv),
            "models": "digits cnn, harness objectives ce / pgd-at / trades, 10 epochs, seed 0 (bench/models_cache.py)",
            "data": "digits test split (539 images); standard and autoattack: the first --standard-n / --aa-n",
            "n": {"standard": a.standard_n, "autoattack": a.aa_n},
            "machine": {"processor": platform.processor() or platform.machine(), "threads": a.threads},
            "torch": torch.__version__,
            "commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
        }
    )
    rows = out.setdefault("rows", {})
    for m in a.models.split(","):
        model = trained(m)
        for s in a.suites.split(","):
            if a.skip_done and f"{m}/{s}" in rows:
                continue
            suite = load_suite(s)
            n = {"autoattack": a.aa_n, "standard": a.standard_n}.get(s)
            nested, indep = measure(model, suite, n), measure(model, opted_out(suite), n)
            ratio = indep["fwd_bwd_images"] / max(nested["fwd_bwd_images"], 1)
            passes = (2 * indep["fwd_bwd_images"] + indep["fwd_images"]) / max(
                2 * nested["fwd_bwd_images"] + nested["fwd_images"], 1
            )
            diff = {g: round(float(nested["robust_acc"][g] - indep["robust_acc"][g]), 4) for g in nested["robust_acc"]}
            rows[f"{m}/{s}"] = {
                "nested": nested,
                "independent": indep,
                "fwd_bwd_ratio": round(ratio, 3),
                "passes_ratio": round(passes, 3),
                "wall_ratio": round(indep["wall_s"] / max(nested["wall_s"], 1e-9), 3),
                "robust_acc_diff": diff,
            }
            print(
                f"{m:7s} {s:10s} n={nested['n']:4d} fwd+bwd {indep['fwd_bwd_images']:>9d} -> "
                f"{nested['fwd_bwd_images']:>9d} ({ratio:.2f}x), passes {passes:.2f}x, wall {indep['wall_s']:.1f} -> "
                f"{nested['wall_s']:.1f} s, inherited {nested['inherited']}, robust diff {diff}",
                flush=True,
            )
            # After every row, merged into the file as it is now: a partial run keeps its rows, and runs
            # of other models in parallel processes add theirs.
            on_disk = json.loads(out_path.read_text()) if out_path.is_file() else {}
            out["rows"] = rows = {**on_disk.get("rows", {}), **rows}
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
