"""Do the seed papers' qualitative claims hold on digits? Train, evaluate, print a table, check claims.

Usage::

    python bench/claims.py --out runs/claims.json            # full: cnn, 15 epochs
    python bench/claims.py --quick --out /tmp/claims.json    # smoke check: mlp, 4 epochs, 200 test images

Trains every run below on the digits training split (conditions applied to training only), evaluates
on the clean digits test split at L-inf eps 0.1 (the dataset's training eps): clean, FGSM, PGD-20
(CE), two stronger attacks (margin-loss PGD-40 with 5 restarts; PGD-20 on logits scaled x10) and,
when corruptions are registered, mean accuracy over all of them at severity 3. Objectives not
registered yet are skipped with a note. Writes ``--out`` (JSON) and the same stem with ``.md``.

Claims checked (issue 4):
1. AT objectives >> CE under PGD.
2. Larger TRADES beta trades clean accuracy for robust accuracy (beta 1 vs 6).
3. LogitClip and ODNL beat CE under 40 % symmetric label noise (clean test accuracy).
4. SRAT beats PGD-AT on tail-class PGD accuracy under exp:10 imbalance (tail = the 5 rarest classes).
5. GAIRAT's PGD-20 accuracy exceeds its accuracy under the stronger attacks by more than PGD-AT's does
   (its robustness is partly specific to the training attack).
6. MaxUp (Gaussian copies) certifies more than Gaussian augmentation under randomized smoothing: this
   one needs CERTIFY and lives in ``bench/certify_claims.py`` (results in docs/certification.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # first: bench/attacks.py would otherwise shadow the `attacks` package

import harness.api as api  # noqa: E402
from harness.registry import CORRUPTIONS, OBJECTIVES  # noqa: E402
from harness.suites import Suite  # noqa: E402

EPS = 0.1
AT = ("pgd-at", "trades", "mart", "gairat", "lrat", "srat")

# (label, objective, objective params, label noise, imbalance)
RUNS: list[tuple[str, str, dict[str, Any], str | None, str | None]] = [
    ("ce", "ce", {}, None, None),
    ("pgd-at", "pgd-at", {}, None, None),
    ("trades-b1", "trades", {"beta": 1.0}, None, None),
    ("trades-b6", "trades", {"beta": 6.0}, None, None),
    ("mart", "mart", {}, None, None),
    ("gairat", "gairat", {}, None, None),
    ("lrat", "lrat", {}, None, None),
    ("srat", "srat", {}, None, None),
    ("ce@sym0.4", "ce", {}, "sym:0.4", None),
    ("logitclip@sym0.4", "logitclip", {}, "sym:0.4", None),
    ("odnl@sym0.4", "odnl", {}, "sym:0.4", None),
    ("pgd-at@exp10", "pgd-at", {}, None, "exp:10"),
    ("srat@exp10", "srat", {}, None, "exp:10"),
    ("srat-nosep@exp10", "srat", {"lam": 0.0}, None, "exp:10"),
]

SUITES = {
    "fgsm": Suite("fgsm", attacks=[{"name": "fgsm", "norm": "linf", "eps": EPS}]),
    "pgd": Suite("pgd", attacks=[{"name": "pgd", "norm": "linf", "eps": EPS, "params": {"steps": 20, "loss": "ce"}}]),
    "pgd_margin": Suite(
        "pgd_margin",
        attacks=[{"name": "pgd", "norm": "linf", "eps": EPS, "params": {"steps": 40, "restarts": 5, "loss": "margin"}}],
    ),
    "pgd_scaled": Suite(
        "pgd_scaled",
        attacks=[{"name": "pgd", "norm": "linf", "eps": EPS, "params": {"steps": 20, "logit_scale": 10.0}}],
    ),
}


def evaluate(model: torch.nn.Module, max_samples: int | None, seed: int) -> dict[str, Any]:
    """Clean, per-attack and corruption accuracy with per-class PGD accuracy."""
    cfg = {"max_samples": max_samples, "seed": seed, "progress": False, "device": "cpu"}
    row: dict[str, Any] = {}
    for key, suite in SUITES.items():
        res = api.evaluate(model, "digits:split=test", suite, **cfg)
        row["clean"] = res.clean.accuracy
        row["per_class_clean"] = res.per_class_clean
        g = res.threat_models[0]
        row[key] = g.accuracy.accuracy
        if key == "pgd":
            row["per_class_pgd"] = g.per_class
    if CORRUPTIONS.names():
        res = api.evaluate(model, "digits:split=test", Suite("c", corruptions=[{"name": "all", "severity": 3}]), **cfg)
        row["corruption"] = sum(g.accuracy.accuracy for g in res.corruptions) / len(res.corruptions)
    row["strong"] = min(row["pgd_margin"], row["pgd_scaled"])
    return row


def tail_mean(per_class: list[float], counts: list[int], k: int = 5) -> float:
    """Mean of ``per_class`` over the ``k`` classes with the fewest training samples."""
    order = sorted(range(len(counts)), key=lambda c: (counts[c], -c))[:k]
    vals = [per_class[c] for c in order if not math.isnan(per_class[c])]
    return sum(vals) / max(1, len(vals))


def check_claims(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []

    def claim(text: str, need: list[str], test) -> None:
        missing = [n for n in need if n not in rows]
        if missing:
            out.append({"claim": text, "status": "skipped", "detail": f"not run: {', '.join(missing)}"})
            return
        ok, detail = test()
        out.append({"claim": text, "status": "holds" if ok else "does not hold", "detail": detail})

    def at_vs_ce():
        ats = [n for n in ("pgd-at", "trades-b6", "mart", "gairat", "lrat", "srat") if n in rows]
        ce = rows["ce"]["pgd"]
        detail = f"CE PGD {100 * ce:.1f}%; " + ", ".join(f"{n} {100 * rows[n]['pgd']:.1f}%" for n in ats)
        return all(rows[n]["pgd"] > ce + 0.2 for n in ats), detail

    claim("AT objectives >> CE under PGD-20 (by > 20 points)", ["ce", "pgd-at"], at_vs_ce)

    def trades_beta():
        a, b = rows["trades-b1"], rows["trades-b6"]
        detail = (
            f"beta 1: clean {100 * a['clean']:.1f}% PGD {100 * a['pgd']:.1f}%; "
            f"beta 6: clean {100 * b['clean']:.1f}% PGD {100 * b['pgd']:.1f}%"
        )
        return b["clean"] <= a["clean"] and b["pgd"] >= a["pgd"], detail

    claim("Larger TRADES beta: lower clean, higher PGD accuracy", ["trades-b1", "trades-b6"], trades_beta)

    for method in ("logitclip", "odnl"):
        name = f"{method}@sym0.4"

        def beats(name=name):
            a, b = rows[name]["clean"], rows["ce@sym0.4"]["clean"]
            return a > b, f"{name} clean {100 * a:.1f}% vs CE {100 * b:.1f}% (40% symmetric noise)"

        claim(f"{method} beats CE under 40% symmetric label noise", [name, "ce@sym0.4"], beats)

    def srat_tail():
        s, p = rows["srat@exp10"], rows["pgd-at@exp10"]
        ts, tp = s["tail_pgd"], p["tail_pgd"]
        return ts > tp, (
            f"tail-class PGD: SRAT {100 * ts:.1f}% vs PGD-AT {100 * tp:.1f}% "
            f"(overall PGD {100 * s['pgd']:.1f}% vs {100 * p['pgd']:.1f}%)"
        )

    claim("SRAT beats PGD-AT on tail-class PGD accuracy under exp:10", ["srat@exp10", "pgd-at@exp10"], srat_tail)

    def gairat_gap():
        g, p = rows["gairat"], rows["pgd-at"]
        gg, gp = g["pgd"] - g["strong"], p["pgd"] - p["strong"]
        return gg > 0 and gg > gp, (
            f"GAIRAT PGD {100 * g['pgd']:.1f}% vs strongest other {100 * g['strong']:.1f}% (gap {100 * gg:.1f}); "
            f"PGD-AT gap {100 * gp:.1f}"
        )

    claim("GAIRAT's PGD robustness exceeds its robustness under stronger attacks", ["gairat", "pgd-at"], gairat_gap)
    return out


def markdown(rows: dict[str, dict[str, Any]], claims: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    has_c = any("corruption" in r for r in rows.values())
    cols = ["clean", "fgsm", "pgd", "pgd_margin", "pgd_scaled"] + (["corruption"] if has_c else [])
    head = ["run", "objective", "condition", *cols, "tail pgd", "train s"]
    lines = [
        f"Digits, {meta['model']}, {meta['epochs']} epochs, seed {meta['seed']}, L-inf eps {EPS}, "
        f"{meta['test_samples']} test images. pgd = PGD-20 CE; pgd_margin = margin PGD-40 x5 restarts; "
        "pgd_scaled = PGD-20 on logits x10; tail pgd = PGD accuracy over the 5 rarest training classes.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, r in rows.items():
        vals = [f"{100 * r[c]:.1f}" if c in r else "–" for c in cols]
        tail = f"{100 * r['tail_pgd']:.1f}" if "tail_pgd" in r else "–"
        lines.append(
            f"| {name} | {r['objective']} | {r['condition'] or '–'} | " + " | ".join(vals) + f" | {tail} | "
            f"{r['train_seconds']:.0f} |"
        )
    lines += ["", "| claim | status | measured |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['status']} | {c['detail']} |" for c in claims]
    if meta["skipped"]:
        lines += ["", "Skipped (objective not registered): " + ", ".join(meta["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/claims.json"), help="JSON path (.md written beside it)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 15, quick 4)")
    ap.add_argument("--model", default=None, help="architecture (default cnn, quick mlp)")
    ap.add_argument("--quick", action="store_true", help="mlp, 4 epochs, 200 test images: a smoke check")
    ap.add_argument("--only", default="", help="comma-separated run labels to run (default all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    epochs = args.epochs or (4 if args.quick else 15)
    model = args.model or ("mlp" if args.quick else "cnn")
    max_samples = 200 if args.quick else None
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    rows: dict[str, dict[str, Any]] = {}
    skipped = []
    for label, objective, params, noise, imb in RUNS:
        if only and label not in only:
            continue
        if objective not in OBJECTIVES:
            print(f"note: skipping {label}: objective {objective!r} is not registered")
            skipped.append(label)
            continue
        t0 = time.perf_counter()
        res = api.train(
            objective, model, "digits", objective_params=params, label_noise=noise, imbalance=imb,
            epochs=epochs, seed=args.seed, progress=False, eval_samples=0, device="cpu",
        )  # fmt: skip
        t_train = time.perf_counter() - t0
        row = evaluate(res.model, max_samples, args.seed)
        counts = res.meta.condition.get("imbalance", {}).get("class_counts")
        if counts:
            row["tail_pgd"] = tail_mean(row["per_class_pgd"], counts)
            row["tail_clean"] = tail_mean(row["per_class_clean"], counts)
        row.update(objective=objective, params=params, condition=noise or imb, train_seconds=t_train)
        rows[label] = row
        print(
            f"{label:18s} clean {100 * row['clean']:5.1f}  fgsm {100 * row['fgsm']:5.1f}  pgd {100 * row['pgd']:5.1f}"
            f"  strong {100 * row['strong']:5.1f}  ({t_train:.0f}s train)",
            flush=True,
        )
    claims = check_claims(rows)
    meta = {
        "model": model,
        "epochs": epochs,
        "seed": args.seed,
        "eps": EPS,
        "test_samples": max_samples or 540,
        "skipped": skipped,
    }
    md = markdown(rows, claims, meta)
    print()
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": rows, "claims": claims}, indent=2))
    args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
