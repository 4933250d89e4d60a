"""LRAT vs GAIRAT vs PGD-AT under attacks none of them trained on (issue 24): APGD-DLR and AutoAttack.

Usage::

    python bench/lrat_unseen.py --out bench/results/lrat_unseen.json

Trains the three objectives with their defaults (LRAT: one training attack, CE-PGD) exactly as
``bench/claims.py --model mlp --epochs 20`` does (digits, seed 0), then evaluates at L-inf eps 0.1:
APGD-DLR (100 steps) on the 539 test images and AutoAttack (standard, native backend) on the first
``--aa-samples`` of them. Accuracies with 95 % Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # first: bench/attacks.py would otherwise shadow the `attacks` package

import harness.api as api  # noqa: E402
from harness.suites import Suite  # noqa: E402

EPS = 0.1
SUITES = {
    "apgd_dlr": Suite("apgd_dlr", attacks=[{"name": "apgd-dlr", "norm": "linf", "eps": EPS}]),
    "autoattack": Suite("autoattack", attacks=[{"name": "autoattack", "norm": "linf", "eps": EPS}]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/lrat_unseen.json")
    ap.add_argument("--aa-samples", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"eps": EPS, "model": "mlp", "epochs": 20, "seed": 0, "runs": {}}
    for obj in ("pgd-at", "gairat", "lrat"):
        t0 = time.perf_counter()
        res = api.train(obj, "mlp", "digits", epochs=20, seed=0, progress=False, eval_samples=0, device="cpu")
        row: dict = {"params": res.meta.objective_params, "train_seconds": time.perf_counter() - t0}
        for key, suite in SUITES.items():
            n = args.aa_samples if key == "autoattack" else None
            r = api.evaluate(res.model, "digits:split=test", suite, max_samples=n, progress=False, device="cpu")
            g = r.threat_models[0].accuracy
            row[key] = {"accuracy": g.accuracy, "n": g.n, "wilson95": list(g.ci95)}
        out["runs"][obj] = row
        print(obj, {k: v for k, v in row.items() if k in SUITES}, flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
