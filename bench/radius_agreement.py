"""The robustness band against the fixed-eps `standard` suite on digits models (issue 22 §2).

For the digits MLP (and ``--archs cnn``) trained with ``ce`` and ``pgd-at`` (`bench/models_cache.py`,
10 epochs, seed 0), one evaluation of the first ``--n`` test digits with the `standard` preset's
attacks (FGSM, PGD-50 CE, PGD-50 margin x2 under L-inf; PGD-50 under L2, at the digits grids) AND
the `radius` preset's entries (upper ends from FMN-100 with 3 restarts and min-norm FAB, lower ends
from CROWN bisection; L-inf up to 0.3 and L2 up to 2), or with ``--attacks fmn`` FMN-100 alone. Per
eps of the grid: the fixed-eps robust accuracy, the band [verified, attacked] and the disagreements
(samples the fixed-eps attacks broke whose upper end is above eps), with the seconds each part took.
``--verifier ibp`` (or ``none``) swaps the preset's CROWN for a cheaper lower end: on the digits CNN
CROWN bisection costs about a minute per sample and threat model on one CPU thread, while the attacked
side and its agreement with the fixed-eps suite do not depend on the verifier. Writes JSON and prints
a Markdown table.

    python bench/radius_agreement.py --n 200 --out bench/results/radius-agreement-mlp-cpu.json
    python bench/radius_agreement.py --n 200 --attacks fmn --out bench/results/radius-agreement-mlp-fmn-cpu.json
    python bench/radius_agreement.py --n 200 --archs cnn --verifier ibp \
        --out bench/results/radius-agreement-cnn-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

_here = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _here] + [str(_here)]

import torch  # noqa: E402
from models_cache import trained  # noqa: E402

from harness.api import load_dataset  # noqa: E402
from harness.engine import EvalConfig, Evaluation  # noqa: E402
from harness.suites import load_suite  # noqa: E402


def run(objective: str, arch: str, n: int, batch: int, attacks: str, verifier: str | None = None) -> dict:
    model = trained(objective, arch=arch)
    std, rad = load_suite("standard"), load_suite("radius")
    std.radius = rad.radius  # the fixed-eps attacks and the radius entries in one run: per-sample agreement
    if attacks == "fmn":  # FMN at its default budget alone (the comparison the preset's choice rests on)
        std.radius = [{**r, "attack": "fmn", "attack_params": {}} for r in std.radius]
    if verifier is not None:  # the lower end's verifier instead of the preset's (suite validation checks it)
        std.radius = [{**r, "verifier": verifier} for r in std.radius]
    std.name = "standard+radius"
    ds = load_dataset("digits").subset(slice(0, n))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = EvalConfig(batch_size=batch, chunk_size=max(batch, n), progress=False)
        res = Evaluation(model, ds, std, out=tmp, name="r", config=cfg).run()
        wall = time.perf_counter() - t0
    seconds = {e["key"]: e["seconds"] for g in res.groups for e in g.entries}
    out = {
        "objective": objective,
        "arch": arch,
        "attacks": attacks,
        "verifier": std.radius[0]["verifier"],
        "n": n,
        "clean": res.clean.accuracy,
        "wall_s": round(wall, 1),
    }
    out["fixed_s"] = round(sum(s for k, s in seconds.items() if "@" in k), 1)
    out["radius"] = {}
    for g, d in res.extra["radius"].items():
        rows = []
        band = {round(t["eps"], 9): t for t in d["table"]}
        for a in d["agreement"]:
            t = band[round(a["eps"], 9)]
            rows.append(
                {
                    "eps": a["eps"],
                    "fixed": a["fixed"]["accuracy"],
                    "attacked": a["attacked"]["accuracy"],
                    "verified": t["verified"]["accuracy"],
                    "disagreements": a["disagreements"],
                    "stronger": a["stronger"],
                    "ids": a["ids"],
                }
            )
        out["radius"][g] = {"counts": d["counts"], "seconds": seconds.get(g), "rows": rows}
    out["findings"] = [f.check for f in res.findings if f.check.startswith("radius")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--objectives", default="ce,pgd-at")
    ap.add_argument("--archs", default="mlp")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--attacks", default="preset", choices=("preset", "fmn"))
    ap.add_argument("--verifier", default=None, help="lower end's verifier instead of the preset's crown (ibp, none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/radius-agreement-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        run(obj, arch, args.n, args.batch, args.attacks, args.verifier)
        for arch in args.archs.split(",")
        for obj in args.objectives.split(",")
    ]
    meta = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    print("| model | threat | eps | fixed-eps robust | band [verified, attacked] | disagreements | min-norm stronger |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for g, d in r["radius"].items():
            for x in d["rows"]:
                print(
                    f"| {r['objective']} {r['arch']} | {g} | {x['eps']:g} | {100 * x['fixed']:.1f} | "
                    f"[{100 * x['verified']:.1f}, {100 * x['attacked']:.1f}] | {x['disagreements']} | {x['stronger']} |"
                )
    for r in rows:
        secs = {g: d["seconds"] for g, d in r["radius"].items()}
        print(f"{r['objective']} {r['arch']}: wall {r['wall_s']} s, fixed-eps attacks {r['fixed_s']} s, radius {secs}")


if __name__ == "__main__":
    main()
