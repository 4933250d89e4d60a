"""Min-norm FAB, FAB-T and CW-L2 against FMN on a small digits MLP: the per-sample ratio of found norms.

The MLP of tests/attacks/test_min_norm.py (one hidden layer of 64, 150 full-batch Adam steps, seed 0),
the first ``--n`` test digits it classifies right; every attack at its default budget in
``mode = "min-norm"`` and FMN at its default (100 steps). A ratio above 1 means FMN found a smaller
perturbation. Counts where an attack found nothing (+inf) are reported beside the ratios.

    python bench/min_norm.py --out bench/results/min-norm-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

_here = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _here]  # bench/attacks.py is not `attacks`
sys.path.insert(0, str(_here.parent))  # the repository root: tests.attacks.digits_mlp

import torch  # noqa: E402

import attacks  # noqa: E402, F401  (registers the attacks)
from harness.registry import ATTACKS  # noqa: E402

CASES = [("fab", "linf"), ("fab", "l2"), ("fab-t", "linf"), ("fab-t", "l2"), ("cw-l2", "l2")]


from tests.attacks.digits_mlp import digits_mlp  # noqa: E402  (the oracle tests' model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/min-norm-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, x, y = digits_mlp(args.n)
    fmn = {}
    for norm in ("linf", "l2"):
        fmn[norm] = ATTACKS.create("fmn", norm=norm, eps=0.1).minimal(model, x, y)[1]
    rows = []
    for name, norm in CASES:
        t0 = time.perf_counter()
        xa, norms = ATTACKS.create(name, norm=norm, eps=0.1, mode="min-norm").minimal(model, x, y)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            wrong = model(xa).argmax(1) != y
        both = torch.isfinite(norms) & torch.isfinite(fmn[norm])
        ratio = (norms[both] / fmn[norm][both]).double()
        q = torch.quantile(ratio, torch.tensor([0.5, 0.9], dtype=torch.float64)).tolist() if len(ratio) else [None] * 2
        row = {
            "attack": name,
            "norm": norm,
            "n": len(x),
            "found": int(torch.isfinite(norms).sum()),
            "fmn_found": int(torch.isfinite(fmn[norm]).sum()),
            "ratio_median": q[0],
            "ratio_p90": q[1],
            "ratio_max": float(ratio.max()) if len(ratio) else None,
            "ratio_min": float(ratio.min()) if len(ratio) else None,
            "share_above_1.1": float((ratio > 1.1).float().mean()) if len(ratio) else None,
            "returned_misclassified": bool(wrong[torch.isfinite(norms)].all()),
            "seconds": secs,
            "norms": norms.tolist(),
            "fmn_norms": fmn[norm].tolist(),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    out = {"machine": platform.platform(), "torch": torch.__version__, "threads": args.threads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
