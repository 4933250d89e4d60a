"""Native vs pyautoattack vs torchattacks on the same model, data and seed, in one run.

Per attack and backend: wall time, robust accuracy, per-sample agreement with pyautoattack,
forward+backward and forward-only image counts (counted by a wrapper around the model), and the
wall-time ratio against pyautoattack. Writes JSON.

    python bench/attacks.py --device cpu --n 100 --out bench/attacks-cpu.json
    python bench/attacks.py --device cuda --n 500 --out bench/attacks-gpu.json  # PreActResNet-18

CPU mode trains the small digits CNN (8x8); GPU mode trains a PreActResNet-18 on digits upsampled
to 3x32x32. Components: apgd-ce and apgd-t (reference budgets: 100 steps, 1 restart, 9 targets),
plus AutoAttack standard where fab-t and square are registered natively.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

# This file is named like the `attacks` package: keep its folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from torch import nn  # noqa: E402

from harness import api  # noqa: E402
from harness.registry import ATTACKS  # noqa: E402


class Counter(nn.Module):
    """Counts images passed with input gradients (forward+backward) and without (forward only)."""

    def __init__(self, model: nn.Module) -> None:
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


def run_one(counter: Counter, attack, x, y, ids, device) -> tuple[float, torch.Tensor, int, int]:
    counter.fb = counter.fwd = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    xa = attack(counter, x, y, index=ids, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    fb, fwd = counter.fb, counter.fwd
    with torch.no_grad():
        robust = counter.model(xa).argmax(1) == y
    return wall, robust, fb, fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--eps", type=float, default=None, help="L-inf eps (default 0.1 CPU, 8/255 GPU)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--components", default="apgd-ce,apgd-t")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/attacks.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        data, arch, eps = "digits", "cnn", args.eps or 0.1
    else:
        data, arch, eps = "digits:size=32,channels=3", "preact-resnet18", args.eps or 8 / 255
    model = api.train("ce", arch, data, epochs=args.epochs, progress=False, device=args.device, seed=0).model
    model = model.to(device).eval()
    ds = api.load_dataset(data)
    x, y = ds.batch(slice(0, args.n))
    x, y, ids = x.to(device), y.to(device), ds.ids[: args.n].to(device)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    counter = Counter(model).eval()
    rows = []
    for comp in args.components.split(","):
        res = {}
        for backend in ("pyautoattack", "native", "torchattacks"):
            attack = ATTACKS.create(
                "autoattack", norm="linf", eps=eps, version="custom", components=[comp], backend=backend
            )
            wall, robust, fb, fwd = run_one(counter, attack, x, y, ids, device)
            res[backend] = (wall, robust, fb, fwd)
        ref_wall, ref_rob = res["pyautoattack"][0], res["pyautoattack"][1]
        for backend, (wall, robust, fb, fwd) in res.items():
            row = {
                "attack": comp,
                "backend": backend,
                "wall_s": round(wall, 3),
                "robust_acc": round(robust.float().mean().item(), 4),
                "agreement_vs_pyautoattack": round((robust == ref_rob).float().mean().item(), 4),
                "fwd_bwd_images": fb,
                "fwd_images": fwd,
                "speedup_vs_pyautoattack": round(ref_wall / wall, 2),
            }
            rows.append(row)
            print(json.dumps(row))
    out = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "data": data,
        "arch": arch,
        "n": args.n,
        "eps": eps,
        "clean_acc": clean,
        "note": "torchattacks run with 100 steps (its APGD/APGD-T/FAB default is 10)",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
