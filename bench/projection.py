"""Projected wall time of AutoAttack standard on 10 000 CIFAR-10 points, WRN-28-10, 1/8/64 GPUs.

A projection, not a measurement: per-image costs are issue 11's H100 figures for PreActResNet-18
(fp32, batch 500), scaled to WRN-28-10 by the ratio of multiply-accumulates counted here on the
harness's own definitions (harness/models/resnet.py, 3×32×32 input, on the meta device: no compute);
pass counts follow AutoAttack's budgets and an assumed fraction of points still robust per stage.
Sharding follows the engine: chunk ``cid`` goes to rank ``cid % world``.

    PYTHONPATH=. python bench/projection.py [--out bench/results/projection.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from statistics import NormalDist

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

# Issue 11, "measured on one H100": PreActResNet-18, 3×32×32, fp32, batch 500.
FB_US_PRN18 = 29.0  # forward + backward (input gradient only), µs per image
F_US_PRN18 = 14.0  # forward alone, µs per image
N_POINTS = 10_000
# Assumed: a typical adversarially trained WRN-28-10 (clean 90 %, AutoAttack robust 60 %); the fraction
# of all points each stage attacks (points already misclassified or broken are not attacked again).
ENTER = {"apgd-ce": 0.90, "apgd-t": 0.62, "fab-t": 0.60, "square": 0.60}
# AutoAttack standard budgets (Croce & Hein 2020; pyautoattack version="standard", L-inf):
# passes per attacked point, as (forward+backward, forward-only).
PASSES = {
    "apgd-ce": (100, 0),  # 100 iterations × 1 restart
    "apgd-t": (9 * 100, 0),  # 9 target classes × 100 iterations
    "fab-t": (9 * 100, 9 * 100),  # 9 targets × 100 steps: one gradient and one check forward per step
    "square": (0, 5000),  # 5000 queries, one forward each
}


def macs(model: nn.Module, shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass: convolutions and linear layers (the rest is < 1 %)."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(shape, device="meta"))
    for h in hs:
        h.remove()
    return total


def shard_points(n: int, chunk: int, world: int) -> int:
    """Points of the busiest rank when chunk ``cid`` goes to rank ``cid % world``."""
    sizes = [min(chunk, n - s) for s in range(0, n, chunk)]
    return max(sum(sizes[r::world]) for r in range(world))


def straggle(world: int, points: int, p: float) -> float:
    """Factor on the busiest rank's work from chunk-to-chunk variation of the robust fraction.

    A rank with ``points`` points holds a binomial robust fraction (std sqrt(p(1-p)/points)); the
    slowest of ``world`` ranks sits about z_W std above the mean, z_W the expected maximum of W
    standard normals (Blom's approximation). Almost all work is spent on robust points.
    """
    z = NormalDist().inv_cdf((world - 0.375) / (world + 0.25))
    return 1.0 + z * math.sqrt(p * (1 - p) / points) / p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "projection.json")
    a = ap.parse_args()
    from harness.models.resnet import PreActResNet18, WideResNet

    with torch.device("meta"):
        prn, wrn = PreActResNet18().eval(), WideResNet(depth=28, widen=10).eval()
    m_prn, m_wrn = macs(prn), macs(wrn)
    ratio = m_wrn / m_prn
    fb, f = FB_US_PRN18 * ratio, F_US_PRN18 * ratio
    stages = {}
    for name, (n_fb, n_f) in PASSES.items():
        pts = ENTER[name] * N_POINTS
        stages[name] = {"points": pts, "fb_images": pts * n_fb, "f_images": pts * n_f}
        stages[name]["seconds"] = (pts * n_fb * fb + pts * n_f * f) / 1e6
    clean_s = N_POINTS * f / 1e6
    total = clean_s + sum(s["seconds"] for s in stages.values())
    print(f"MACs per image (3x32x32): PreActResNet-18 {m_prn / 1e9:.3f} G, WRN-28-10 {m_wrn / 1e9:.3f} G")
    print(f"ratio {ratio:.2f}: WRN-28-10 forward+backward {fb:.0f} us/image, forward {f:.0f} us/image")
    print("| stage | points attacked | fwd+bwd images | fwd images | ideal GPU s |")
    print("|---|---|---|---|---|")
    print(f"| clean forward | {N_POINTS} | 0 | {N_POINTS} | {clean_s:.1f} |")
    for name, s in stages.items():
        print(f"| {name} | {s['points']:.0f} | {s['fb_images']:.3g} | {s['f_images']:.3g} | {s['seconds']:.0f} |")
    print(f"| total | | | | {total:.0f} ({total / 3600:.2f} h) |")
    rows = []
    for world in (1, 8, 64):
        rules = [("default 512", 512)] + ([("n/(4·world)", N_POINTS // (4 * world))] if world > 1 else [])
        for label, chunk in rules:
            busiest = shard_points(N_POINTS, chunk, world)
            n_chunks = math.ceil(N_POINTS / chunk)
            rows.append(
                {
                    "gpus": world,
                    "chunk_size": chunk,
                    "chunk_rule": label,
                    "chunks": n_chunks,
                    "busy_ranks": min(world, n_chunks),
                    "busiest_rank_points": busiest,
                    "projected_s": total * busiest / N_POINTS,
                    "with_variation_s": total
                    * busiest
                    / N_POINTS
                    * straggle(min(world, n_chunks), busiest, ENTER["square"]),
                    "ideal_s": total / world,
                }
            )
    print(
        "\n| GPUs | chunk size | chunks | busy ranks | busiest rank's points | projected wall "
        "| + robust-fraction variation | ideal (work/GPUs) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['gpus']} | {r['chunk_size']} ({r['chunk_rule']}) | {r['chunks']} | {r['busy_ranks']} | "
            f"{r['busiest_rank_points']} | {r['projected_s'] / 60:.1f} min | {r['with_variation_s'] / 60:.1f} min "
            f"| {r['ideal_s'] / 60:.1f} min |"
        )
    out = {
        "kind": "projection (not a measurement)",
        "inputs": {
            "per_image_us_preactresnet18_h100_fp32_batch500": {"fwd_bwd": FB_US_PRN18, "fwd": F_US_PRN18},
            "source": "issue 11 text (measured on one H100 by the issue's author, not by this project)",
            "fraction_of_points_attacked_per_stage": ENTER,
            "passes_per_attacked_point": {k: {"fwd_bwd": v[0], "fwd": v[1]} for k, v in PASSES.items()},
        },
        "macs": {"preact-resnet18": m_prn, "wrn-28-10": m_wrn, "ratio": ratio},
        "wrn_us_per_image": {"fwd_bwd": fb, "fwd": f},
        "stages": stages,
        "clean_s": clean_s,
        "total_gpu_s": total,
        "sharding": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
