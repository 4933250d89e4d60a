"""Measurements for issue 24 on digits: does `crop` augmentation help, and is the square loss better calibrated?

Usage::

    python bench/train_digits.py --out bench/results/train_digits.json

(1) CNN on the digits training split, ``augment`` none vs crop (pad 1) vs crop (pad 2), clean test
accuracy. (2) CNN trained with CE vs the square loss (simplex coding), ECE (15 equal-width bins) of
the clean test split, each with its own probabilities (softmax; simplex coding for the square loss,
as the sidecar records). Seed 0 only (the time this issue had on 2 shared CPU cores); one value per setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.api import load_dataset, train  # noqa: E402
from harness.calibration import ece, prob_stats  # noqa: E402

SEEDS = (0,)


def _test_stats(model, kind: str) -> tuple[float, float]:
    x, y = load_dataset("digits:split=test").batch(slice(None))
    with torch.no_grad():
        z = model.eval()(x)
    st = prob_stats(z, y, score_to_prob=kind)
    correct = (z.argmax(1) == y).numpy()
    return float(correct.mean()), ece(st[:, 0].numpy(), correct)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/train_digits.json")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"epochs": args.epochs, "model": "cnn", "seeds": list(SEEDS), "augment": {}, "calibration": {}}
    t0 = time.time()
    for label, aug, pad in (("none", "none", None), ("crop pad 1", "crop", 1), ("crop pad 2", "crop", 2)):
        accs = []
        for s in SEEDS:
            r = train("ce", "cnn", "digits", epochs=args.epochs, seed=s, augment=aug, augment_pad=pad,
                      eval_samples=0, progress=False, device="cpu")  # fmt: skip
            accs.append(_test_stats(r.model, "softmax")[0])
        out["augment"][label] = {"clean": accs, "mean": sum(accs) / len(accs)}
        print(label, accs, flush=True)
    for obj in ("ce", "square"):
        eces, accs = [], []
        for s in SEEDS:
            r = train(obj, "cnn", "digits", epochs=args.epochs, seed=s, eval_samples=0, progress=False, device="cpu")
            acc, e = _test_stats(r.model, r.meta.train_config["score_to_prob"])
            eces.append(e)
            accs.append(acc)
        out["calibration"][obj] = {"ece": eces, "ece_mean": sum(eces) / len(eces), "clean": accs}
        print(obj, eces, accs, flush=True)
    out["seconds"] = time.time() - t0
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
