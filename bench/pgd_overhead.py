"""Per-step overhead of the harness's PGD over a bare forward + input-gradient pass (issue 11, goal 4).

Same model, batch and device; the loops are measured back to back in rounds (the order rotating
from round to round), and the overhead is the median over rounds of the paired ratio PGD / bare,
which cancels slow drifts in the load of a shared machine (the ratio of the medians is printed too).
The bare loop is the floor any PGD implementation pays: forward, loss, ``torch.autograd.grad`` on
the input. PGD keep=best also pays one forward at the end to score its last iterate.

    python bench/pgd_overhead.py --model cnn --steps 10 --rounds 15 --threads 2 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# The script's folder must not shadow the `attacks` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness.api import load_dataset  # noqa: E402
from harness.models import create_model  # noqa: E402
from harness.registry import ATTACKS  # noqa: E402


def bare_steps(model, x, y, steps: int) -> None:
    for _ in range(steps):
        xa = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset("digits")
    x, y = ds.batch(slice(None))
    torch.manual_seed(0)
    model = create_model(a.model, ds).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # A model that stays robust is the worst case (no sample leaves the active set): an untrained
    # network with labels set to its own predictions is "robust" at a tiny eps.
    with torch.no_grad():
        y = model(x).argmax(1)
    variants = {
        "pgd keep=best (per-sample best, compaction)": ATTACKS.create(
            "pgd", norm="linf", eps=1e-4, steps=a.steps, restarts=1, keep="best"
        ),
        "pgd keep=last (training-time crafting)": ATTACKS.create(
            "pgd", norm="linf", eps=1e-4, steps=a.steps, restarts=1, keep="last", early_stop=False
        ),
    }
    bare_steps(model, x, y, 2)
    times: dict[str, list[float]] = {"bare": [], **{k: [] for k in variants}}
    loops = {"bare": lambda: bare_steps(model, x, y, a.steps)}
    loops |= {name: (lambda atk=atk: atk(model, x, y, index=ds.ids)) for name, atk in variants.items()}
    names = list(loops)
    for r in range(a.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            loops[name]()
            times[name].append(time.perf_counter() - t0)
    bare = statistics.median(times["bare"])
    rows = []
    print(f"digits {a.model}, batch {len(x)}, {a.steps} steps, {a.threads} threads, {a.rounds} rounds")
    print(f"{'loop':48s} {'s/step':>9s} {'overhead (paired)':>18s} {'(ratio of medians)':>19s}")
    print(f"{'bare forward + autograd.grad':48s} {bare / a.steps:9.5f}")
    for name in variants:
        med = statistics.median(times[name])
        paired = statistics.median(t / b for t, b in zip(times[name], times["bare"])) - 1
        over = med / bare - 1
        rows.append({"loop": name, "s_per_step": med / a.steps, "overhead": paired, "overhead_of_medians": over})
        print(f"{name:48s} {med / a.steps:9.5f} {100 * paired:17.1f}% {100 * over:18.1f}%")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        out = {"bare_s_per_step": bare / a.steps, "rows": rows, "times_s": times, "args": vars(a)}
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
