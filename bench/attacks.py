"""AutoAttack stage by stage: harness native vs pyautoattack vs torchattacks, same model, data and seed, one run.

For every benchmark model and backend the `standard` stages (APGD-CE, APGD-T, FAB-T, Square; reference
budgets) run in AutoAttack's order, each on the samples still robust after the previous ones, and the
script prints per stage: wall time, images passed forward+backward (with an input gradient) and forward
only (counted by a wrapper around the model), efficiency, robust accuracy after the stage and per-sample
agreement with pyautoattack; then per backend the totals and the speed-up over pyautoattack. Writes JSON.

Efficiency = (what the counted passes cost when timed as bare PyTorch calls: one forward + input-gradient
backward, or one forward, at the batch size each call used) / wall time: the share of the wall time that
the passes the attack asked for would cost at PyTorch's own speed on this model and device.

    python bench/attacks.py --device cpu --n 100 --out bench/results/attacks-cpu.json
    python bench/attacks.py --device cuda --n 500 --out bench/results/attacks-gpu.json

CPU: the digits CNN (8x8). CUDA: PreActResNet-18 and WRN-28-10 on digits upsampled to 3x32x32. All
trained with PGD-AT by the harness (cached in bench/.cache), evaluated at the L-inf eps where PGD-20
leaves about 50 % robust (found by bisection, printed), plus "masked": the first model with logits
x1000. Backends: native (fp32; `native-bf16` adds the bf16 search with fp32 verdicts), pyautoattack,
torchattacks at the reference 100 steps and torchattacks at its own default 10 steps (flagged: weaker).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

# This file is named like the `attacks` package: keep its folder off the import path (it goes last,
# for models_cache).
_here = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _here] + [str(_here)]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from models_cache import ScaledLogits, trained  # noqa: E402
from torch import nn  # noqa: E402

from harness.precision import SearchModel  # noqa: E402
from harness.registry import ATTACKS  # noqa: E402

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
BACKENDS = {
    "native": {"backend": "native"},
    "native-bf16": {"backend": "native"},
    "pyautoattack": {"backend": "pyautoattack"},
    "torchattacks": {"backend": "torchattacks", "torchattacks_steps": 100},
    "torchattacks-defaults": {"backend": "torchattacks", "torchattacks_steps": 10},
}
FLAGS = {"torchattacks-defaults": "WEAKER: torchattacks' default 10 steps for APGD/APGD-T/FAB (reference: 100)"}


class Counter(nn.Module):
    """Records the batch size of every call with an input gradient (forward+backward) and without."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fb: list[int] = []
        self.fwd: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (self.fb if torch.is_grad_enabled() and x.requires_grad else self.fwd).append(len(x))
        return self.model(x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PassCosts:
    """Measured seconds of one forward + input-gradient backward, and of one forward, per batch size.

    Timed at powers of two up to n (median of ``reps``) and interpolated linearly in between, so that
    the passes an attack makes on a shrinking active set are priced at the batch size it used.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int = 5) -> None:
        self.sizes = sorted({min(2**k, len(x)) for k in range(len(x).bit_length() + 1)})
        for p in model.parameters():
            p.requires_grad_(False)
        self.fb = [self._time(lambda b=b: self._fb(model, x[:b], y[:b]), x.device, reps) for b in self.sizes]
        self.f = [self._time(lambda b=b: self._f(model, x[:b]), x.device, reps) for b in self.sizes]
        for p in model.parameters():
            p.requires_grad_(True)  # hand the peers the model as a user would: parameters trainable

    @staticmethod
    def _fb(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        xa = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)

    @staticmethod
    def _f(model: nn.Module, x: torch.Tensor) -> None:
        with torch.no_grad():
            model(x)

    @staticmethod
    def _time(fn, device: torch.device, reps: int) -> float:
        fn()
        times = []
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def _at(self, table: list[float], b: int) -> float:
        if b >= self.sizes[-1]:
            return table[-1] * b / self.sizes[-1]
        k = next(i for i, s in enumerate(self.sizes) if s >= b)
        if self.sizes[k] == b or k == 0:
            return table[k]
        s0, s1 = self.sizes[k - 1], self.sizes[k]
        return table[k - 1] + (table[k] - table[k - 1]) * (b - s0) / (s1 - s0)

    def ideal(self, counter: Counter) -> float:
        """Seconds the counted passes cost at the measured speed of plain forward/backward calls."""
        return sum(self._at(self.fb, b) for b in counter.fb) + sum(self._at(self.f, b) for b in counter.fwd)

    def per_image(self) -> tuple[float, float]:
        return self.fb[-1] / self.sizes[-1], self.f[-1] / self.sizes[-1]


def robust_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def pgd_robust(model: nn.Module, x, y, ids, eps: float) -> float:
    pgd = ATTACKS.create("pgd", norm="linf", eps=eps, steps=20)
    return robust_flags(model, pgd(model, x, y, index=ids, seed=0), y).float().mean().item()


def find_eps(model: nn.Module, x, y, ids, lo: float = 0.0, hi: float = 0.5, iters: int = 8) -> tuple[float, float]:
    """Bisection for the L-inf eps where PGD-20 leaves about 50 % robust; returns (eps, that accuracy)."""
    best = (hi, 0.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        acc = pgd_robust(model, x, y, ids, mid)
        if abs(acc - 0.5) < abs(best[1] - 0.5):
            best = (mid, acc)
        lo, hi = (mid, hi) if acc > 0.5 else (lo, mid)
    return round(best[0], 4), best[1]


def run_backend(name: str, model, x, y, ids, eps: float, stages, costs, component_params=None) -> dict:
    """AutoAttack's stages in order for one backend, each on the samples still robust; per-stage figures.

    ``component_params`` (stage -> budget table) overrides the reference budgets (bench/gpu.py --tiny).
    """
    device = x.device
    search = SearchModel(model, "bf16") if name == "native-bf16" else model
    counter = Counter(search).eval()
    robust = robust_flags(model, x, y)
    x_adv = x.clone()
    rows = []
    for stage in stages:
        idx = robust.nonzero().squeeze(1)
        counter.fb, counter.fwd = [], []
        budget = {stage: component_params[stage]} if component_params and stage in component_params else None
        attack = ATTACKS.create(
            "autoattack",
            norm="linf",
            eps=eps,
            version="custom",
            components=[stage],
            component_params=budget,
            **BACKENDS[name],
        )
        _sync(device)
        t0 = time.perf_counter()
        xa = attack(counter, x[idx], y[idx], index=ids[idx], seed=0) if len(idx) else x[idx]
        _sync(device)
        wall = time.perf_counter() - t0
        broken = ~robust_flags(model, xa, y[idx])  # verdict in fp32, on the plain model, for every backend
        x_adv[idx[broken]] = xa[broken]
        robust[idx[broken]] = False
        ideal = costs.ideal(counter)
        rows.append(
            {
                "stage": stage,
                "attacked": len(idx),
                "broken": int(broken.sum()),
                "wall_s": round(wall, 3),
                "fwd_bwd_images": sum(counter.fb),
                "fwd_images": sum(counter.fwd),
                "efficiency": round(ideal / wall, 3) if wall > 0 and len(idx) else None,
                "robust_acc_after": round(robust.float().mean().item(), 4),
            }
        )
    return {"stages": rows, "robust": robust, "wall_s": sum(r["wall_s"] for r in rows)}


def available(backends: list[str]) -> list[str]:
    mods = {"pyautoattack": ("pyautoattack", "autoattack"), "torchattacks": ("torchattacks",)}
    out = []
    for b in backends:
        need = mods.get(b.split("-")[0], ())
        if need and not any(importlib.util.find_spec(m) for m in need):
            print(f"skipping backend {b}: {need[0]} is not installed")
            continue
        out.append(b)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--archs", default=None, help="default: cnn on CPU, preact-resnet18,wrn on CUDA")
    ap.add_argument("--objective", default="pgd-at")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eps", type=float, default=None, help="L-inf eps (default: where PGD-20 leaves ~50 %%)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--backends", default=None, help=f"from {', '.join(BACKENDS)}")
    ap.add_argument("--no-masked", action="store_true", help="skip the logits x1000 model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/attacks.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    data = "digits:size=32,channels=3" if cuda else "digits"
    archs = (args.archs or ("preact-resnet18,wrn" if cuda else "cnn")).split(",")
    default_backends = "native,pyautoattack,torchattacks,torchattacks-defaults" + (",native-bf16" if cuda else "")
    backends = available((args.backends or default_backends).split(","))
    stages = args.stages.split(",")

    from harness import api

    ds = api.load_dataset(data)
    x, y = ds.batch(slice(0, args.n))
    x, y, ids = x.to(device), y.to(device), ds.ids[: args.n].to(device)
    models: list[tuple[str, nn.Module]] = []
    for arch in archs:
        base = trained(args.objective, args.epochs, arch, data, str(device)).to(device).eval()
        models.append((f"{args.objective} {arch}", base))
    if not args.no_masked:
        models.append((f"masked ({models[0][0]}, logits x1000)", ScaledLogits(models[0][1]).eval()))

    results = []
    eps_of_base: float | None = None
    for label, model in models:
        if args.eps is not None:
            eps, pgd_acc = args.eps, pgd_robust(model, x, y, ids, args.eps)
        elif label.startswith("masked") and eps_of_base is not None:
            eps, pgd_acc = eps_of_base, pgd_robust(model, x, y, ids, eps_of_base)
        else:
            eps, pgd_acc = find_eps(model, x, y, ids)
        eps_of_base = eps_of_base if eps_of_base is not None else eps
        costs = PassCosts(model, x, y)
        per_image = costs.per_image()
        clean = robust_flags(model, x, y).float().mean().item()
        print(f"\n== {label}: clean {clean:.3f}, L-inf eps {eps} (PGD-20 robust {pgd_acc:.3f}), n={len(x)}")
        print(f"   per image at batch {len(x)}: fwd+bwd {1e6 * per_image[0]:.1f} us, fwd {1e6 * per_image[1]:.1f} us")
        per_backend = {b: run_backend(b, model, x, y, ids, eps, stages, costs) for b in backends}
        ref = per_backend.get("pyautoattack")
        print(
            f"   {'backend':22s} {'stage':8s} {'in':>5s} {'wall s':>8s} {'fwd+bwd':>9s} {'fwd':>9s} "
            f"{'eff':>5s} {'robust':>7s}"
        )
        rows = []
        for b, r in per_backend.items():
            for s in r["stages"]:
                eff = f"{s['efficiency']:.2f}" if s["efficiency"] is not None else "-"
                print(
                    f"   {b:22s} {s['stage']:8s} {s['attacked']:5d} {s['wall_s']:8.2f} {s['fwd_bwd_images']:9d} "
                    f"{s['fwd_images']:9d} {eff:>5s} {s['robust_acc_after']:7.3f}"
                )
            total = {
                "backend": b,
                "wall_s": round(r["wall_s"], 3),
                "robust_acc": round(r["robust"].float().mean().item(), 4),
                "agreement_vs_pyautoattack": (
                    round((r["robust"] == ref["robust"]).float().mean().item(), 4) if ref else None
                ),
                "speedup_vs_pyautoattack": round(ref["wall_s"] / r["wall_s"], 2) if ref and r["wall_s"] else None,
                "flag": FLAGS.get(b),
                "stages": r["stages"],
            }
            rows.append(total)
        for t in rows:
            print(
                f"   TOTAL {t['backend']:22s} wall {t['wall_s']:8.2f} s  robust {t['robust_acc']:.4f}  "
                f"agree {t['agreement_vs_pyautoattack']}  speed-up {t['speedup_vs_pyautoattack']}"
                + (f"  [{t['flag']}]" if t["flag"] else "")
            )
        results.append(
            {
                "model": label,
                "clean_acc": round(clean, 4),
                "eps": eps,
                "pgd20_robust_acc": round(pgd_acc, 4),
                "pass_seconds_by_batch": {"sizes": costs.sizes, "fwd_bwd": costs.fb, "fwd": costs.f},
                "backends": rows,
            }
        )
    versions = {}
    for mod in ("pyautoattack", "torchattacks"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    out = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "threads": args.threads,
        "torch": torch.__version__,
        **versions,
        "data": data,
        "n": len(x),
        "stages": stages,
        "models": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
