"""CPU timing of native square / fab-t against pyautoattack on the same digits CNN, data and budgets.

Usage: python bench/fab_square_cpu.py MODEL.safetensors {square,fab-t} {linf,l2} EPS N [BUDGET]
(BUDGET: Square queries or FAB-T steps). Prints robust accuracy, wall time and per-sample agreement.
"""

from __future__ import annotations

import sys
import time

import torch

from harness.api import load_dataset, load_model
from harness.registry import ATTACKS


def main() -> None:
    path, attack, norm, eps, n = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    budget = int(sys.argv[6]) if len(sys.argv) > 6 else (5000 if attack == "square" else 100)
    torch.set_num_threads(1)
    model, _ = load_model(path)
    model.eval()
    ds = load_dataset("digits")
    x, y = ds.batch(slice(0, n))
    ref_norm = {"linf": "Linf", "l2": "L2"}[norm]
    if attack == "square":
        from pyautoattack.square import SquareAttack

        ours = ATTACKS.create("square", norm=norm, eps=eps, n_queries=budget)
        ref = SquareAttack(model, norm=ref_norm, eps=eps, n_queries=budget, p_init=0.8, seed=0, resc_schedule=False)
    else:
        from pyautoattack.fab_pt import FABAttack_PT

        ours = ATTACKS.create("fab-t", norm=norm, eps=eps, steps=budget)
        ref = FABAttack_PT(model, norm=ref_norm, eps=eps, n_restarts=1, n_iter=budget, seed=0, targeted=True)
    t0 = time.perf_counter()
    xa = ours(model, x, y, index=ds.ids[:n], seed=0)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    xr = ref.perturb(x, y)
    t_ref = time.perf_counter() - t0
    with torch.no_grad():
        r_ours, r_ref = model(xa).argmax(1) == y, model(xr).argmax(1) == y
    print(
        f"{attack} {norm} eps={eps} n={n} budget={budget}: native {r_ours.float().mean():.4f} in {t_ours:.1f} s | "
        f"pyautoattack {r_ref.float().mean():.4f} in {t_ref:.1f} s | ratio {t_ref / t_ours:.2f} | "
        f"agreement {(r_ours == r_ref).float().mean():.4f}"
    )


if __name__ == "__main__":
    main()
