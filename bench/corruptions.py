"""Time generating the 19 corruptions x 5 severities for one batch: ours (batched torch) vs imagecorruptions.

Both run on the CPU on the same 32x32x3 images with the same parameter table (``preset="imagenet",
scale=1``, the table imagecorruptions uses); imagecorruptions is called image by image, as it must
be. Our CIFAR-10-C preset is timed too. Writes bench/corruptions.json and prints a table.

    PYTHONPATH=. python bench/corruptions.py --n 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="images in the batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import imagecorruptions

    from harness.registry import CORRUPTIONS
    from tests.attacks.corruption_oracle import coloured_digits, shimmed_imagecorruptions

    imgs, _ = coloured_digits(args.n, seed=0)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    ids = torch.arange(args.n)
    names = CORRUPTIONS.names()
    # warm-up: imports and first-call costs are not generation time
    CORRUPTIONS.create("jpeg_compression", severity=1)(x[:2], index=ids[:2], seed=0)

    rows = []
    for name in names:
        row = {"corruption": name}
        for preset, scale in (("imagenet", 1.0), ("cifar", None)):
            t0 = time.perf_counter()
            for s in range(1, 6):
                CORRUPTIONS.create(name, severity=s, preset=preset, scale=scale)(x, index=ids, seed=s)
            row[f"ours_{preset}_s"] = time.perf_counter() - t0
        np.random.seed(0)
        t0 = time.perf_counter()
        with shimmed_imagecorruptions():
            for s in range(1, 6):
                for im in imgs:
                    imagecorruptions.corrupt(im, corruption_name=name, severity=s)
        row["imagecorruptions_s"] = time.perf_counter() - t0
        rows.append(row)
        print(
            f"{name:18s} ours(imagenet) {row['ours_imagenet_s']:7.3f} s  ours(cifar) {row['ours_cifar_s']:7.3f} s  "
            f"imagecorruptions {row['imagecorruptions_s']:7.3f} s  "
            f"ratio {row['imagecorruptions_s'] / row['ours_imagenet_s']:6.1f}x",
            flush=True,
        )
    tot = {k: sum(r[k] for r in rows) for k in ("ours_imagenet_s", "ours_cifar_s", "imagecorruptions_s")}
    summary = {
        "images": args.n,
        "size": [32, 32, 3],
        "threads": args.threads,
        "device": "cpu",
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "totals_s": tot,
        "speedup_same_parameters": tot["imagecorruptions_s"] / tot["ours_imagenet_s"],
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(
        f"total: ours {tot['ours_imagenet_s']:.2f} s (cifar preset {tot['ours_cifar_s']:.2f} s), "
        f"imagecorruptions {tot['imagecorruptions_s']:.2f} s, speed-up {summary['speedup_same_parameters']:.1f}x"
    )


if __name__ == "__main__":
    main()
