"""The `fast` suite against pyautoattack `standard`: same models, data, eps and run (issue 11, goal 2).

Per model (digits CNN: CE, PGD-AT, and the CE model with logits x1000), on the first N digits test
images at one L-inf eps: wall time of `harness.evaluate(..., suite="fast")` (everything a user
waits for: checks, attacks, verdicts, record) and of pyautoattack's `run_standard_evaluation`, robust
accuracy of each, the difference in points, how many samples the fast suite leaves robust that
AutoAttack breaks, and the sanity findings of the fast run. Prints a table, writes JSON.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/fast_suite.py --n 200 --eps 0.15 \
        --out bench/results/fast-suite-cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

# The script's folder must not shadow the `attacks` package; it goes last, for models_cache.
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from models_cache import EPOCHS, MASK_SCALE, benchmark_model  # noqa: E402

from harness import api, environment  # noqa: E402
from harness.compat import import_autoattack  # noqa: E402
from harness.records.outcome import read_bits  # noqa: E402


def fast_run(model, ds, suite: str, eps: float, tmp: Path, name: str) -> tuple[float, np.ndarray, dict]:
    """Wall time, per-sample robust flags (worst case over the suite) and the result of one harness run."""
    t0 = time.perf_counter()
    res = api.evaluate(model, ds, suite, eps={"linf": (eps,)}, progress=False, out=tmp, name=name, device="cpu")
    wall = time.perf_counter() - t0
    bits = read_bits(tmp / name / "records")
    robust = bits.groups[res.groups[0].key]  # the worst case over the suite's entries (one threat model)
    return wall, robust[np.argsort(bits.ids)], res


def autoattack_run(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, np.ndarray]:
    """Wall time and per-sample robust flags of pyautoattack `standard` (its own fp32 check at the end)."""
    aa = import_autoattack()
    t0 = time.perf_counter()
    adv = aa.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    adv.logger.setLevel(logging.WARNING)
    x_adv, _ = adv.run_standard_evaluation(x, y, batch_size=len(x))
    wall = time.perf_counter() - t0
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).numpy()
    return wall, robust


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.15)
    ap.add_argument("--models", default="ce,pgd-at,masked")
    ap.add_argument("--suite", default="fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = api.load_dataset("digits").subset(slice(0, a.n))
    order = np.argsort(ds.ids.numpy())
    x, y = ds.batch(slice(None))
    rows = []
    print(f"digits test, first {a.n} images, L-inf eps {a.eps}, suite {a.suite!r}, {a.threads} thread(s)")
    head = f"{'model':8s} {'clean':>6s} {'fast s':>8s} {'AA s':>8s} {'speed-up':>8s} {'fast rob':>9s} {'AA rob':>7s}"
    print(head + f" {'diff pp':>8s} {'missed':>6s} {'agree':>6s}  findings")
    for name in a.models.split(","):
        model = benchmark_model(name)
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            clean = float((model(x).argmax(1) == y).float().mean())
        with tempfile.TemporaryDirectory() as tmp:
            f_wall, f_rob, res = fast_run(model, ds, a.suite, a.eps, Path(tmp), name)
        a_wall, a_rob = autoattack_run(model, x, y, a.eps)
        a_rob = a_rob[order]  # both in dataset-id order
        findings = sorted({f.check for f in res.findings if f.severity in ("warning", "error")})
        row = {
            "model": name,
            "clean_acc": clean,
            "fast_wall_s": round(f_wall, 2),
            "autoattack_wall_s": round(a_wall, 2),
            "speedup": round(a_wall / f_wall, 2),
            "fast_robust_acc": float(f_rob.mean()),
            "autoattack_robust_acc": float(a_rob.mean()),
            "diff_pp": round(100 * float(f_rob.mean() - a_rob.mean()), 2),
            "missed_by_fast": int((f_rob & ~a_rob).sum()),
            "missed_by_autoattack": int((a_rob & ~f_rob).sum()),
            "agreement": float((f_rob == a_rob).mean()),
            "fast_entry_seconds": {e["key"]: e["seconds"] for e in res.groups[0].entries},
            "fast_findings": findings,
        }
        rows.append(row)
        print(
            f"{name:8s} {100 * clean:5.1f}% {f_wall:8.1f} {a_wall:8.1f} {row['speedup']:7.1f}x "
            f"{100 * row['fast_robust_acc']:8.1f}% {100 * row['autoattack_robust_acc']:6.1f}% "
            f"{row['diff_pp']:+8.1f} {row['missed_by_fast']:6d} {100 * row['agreement']:5.1f}%  "
            f"{', '.join(findings) or '-'}",
            flush=True,
        )
    out = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": a.threads,
        "versions": environment.versions(),
        "data": "digits (test split)",
        "n": a.n,
        "norm": "linf",
        "eps": a.eps,
        "suite": a.suite,
        "models": {"ce": f"cnn, ce, {EPOCHS} epochs", "pgd-at": f"cnn, pgd-at, {EPOCHS} epochs"}
        | {"masked": f"the ce model with logits x{MASK_SCALE:g}"},
        "reference": "pyautoattack AutoAttack(version='standard').run_standard_evaluation, batch_size = n",
        "rows": rows,
    }
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
