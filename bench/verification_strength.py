"""Strength check (issue 22): AutoAttack's robust set must contain the MILP-exact robust set.

On the digits MLP and CNN (trained with ce for 30 epochs, seed 0, the models of
bench/verification.py, cached in bench/.cache), the first ``--n`` test digits and each L-inf eps:

- AutoAttack ``standard`` (native backend, reference budgets): robust where the engine's verdict rule
  (`harness.ties.decide`) says the true class still wins at the returned point;
- the exact MILP (``--time-limit`` seconds per point, as in docs/verification.md): verified, falsified
  or open at the time limit. A falsified point's counterexample goes through the engine's contract
  check (`harness.threat.check_contract`, per sample) and the same verdict rule; one that fails either
  is reported and not counted as broken.

Then, per (arch, eps): ``milp_robust_aa_broken`` (points the MILP proves robust that AutoAttack
breaks: must be 0, anything else is a contract or verifier bug), ``milp_broken_aa_robust`` (points
with a confirmed MILP counterexample that AutoAttack misses: AutoAttack's shortfall), and the open
points split by AutoAttack's verdict. Points the model misclassifies at x are broken for both.

    python bench/verification_strength.py --out bench/results/verification-strength-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_here = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _here] + [str(_here)]

import torch  # noqa: E402
from verification import trained, write  # noqa: E402

from harness.errors import ThreatModelViolation  # noqa: E402
from harness.registry import ATTACKS, VERIFIERS  # noqa: E402
from harness.threat import ThreatModel, check_contract  # noqa: E402
from harness.ties import decide  # noqa: E402


def robust_at(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The engine's verdict at the given points: robust iff the true class wins beyond the tie tolerance."""
    with torch.no_grad():
        return decide(model(x_adv).float(), y)[0]


def confirmed(
    model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    """Per sample: ``x_adv`` passes the engine's contract check (L-inf ball, box, finite) and is not robust."""
    threat = ThreatModel("linf", eps)
    ok = torch.zeros(len(x), dtype=torch.bool)
    for i in range(len(x)):
        try:
            check_contract(x[i : i + 1], x_adv[i : i + 1], threat, who="milp")
        except ThreatModelViolation:
            continue
        ok[i] = True
    return ok & ~robust_at(model, x_adv, y).cpu()


def compare(model, x, y, eps: float, time_limit: float, chunk: int = 10) -> dict:
    """AutoAttack (native, standard) against the MILP on every point; the counts the module docstring lists."""
    ids = torch.arange(len(x))
    t0 = time.perf_counter()
    xa = ATTACKS.create("autoattack", norm="linf", eps=eps, version="standard")(model, x, y, index=ids, seed=0)
    check_contract(x, xa, ThreatModel("linf", eps), who="autoattack")
    aa_robust = robust_at(model, xa, y).cpu()
    aa_s = time.perf_counter() - t0
    milp = VERIFIERS.create("milp", eps=eps, time_limit=time_limit)
    status, seconds, x_cex = [], [], []
    for s in range(0, len(x), chunk):  # chunks only for progress lines; the MILP is per point anyway
        v = milp.verify(model, x[s : s + chunk], y[s : s + chunk])
        assert v.x_adv is not None and v.seconds is not None
        status.append(v.status)
        seconds.append(v.seconds)
        x_cex.append(v.x_adv)
        print(f"  milp {s + len(v.status)}/{len(x)}: {v.names().count('verified')} verified in chunk", flush=True)
    st, secs, x_cex_all = torch.cat(status), torch.cat(seconds), torch.cat(x_cex)
    verified, falsified, open_ = st == 1, st == -1, st == 0
    good_cex = confirmed(model, x, x_cex_all, y, eps) & falsified
    return {
        "eps": eps,
        "n": len(x),
        "time_limit": time_limit,
        "aa_robust": int(aa_robust.sum()),
        "aa_s_per_sample": aa_s / len(x),
        "milp_verified": int(verified.sum()),
        "milp_falsified": int(falsified.sum()),
        "milp_falsified_confirmed": int(good_cex.sum()),
        "milp_falsified_unconfirmed": int((falsified & ~good_cex).sum()),
        "milp_open": int(open_.sum()),
        "milp_s_per_sample": float(secs.mean()),
        "milp_s_max": float(secs.max()),
        # the oracle: verified by the MILP => not broken by AutoAttack (must be 0)
        "milp_robust_aa_broken": int((verified & ~aa_robust).sum()),
        # AutoAttack's shortfall against the exact answer (reported)
        "milp_broken_aa_robust": int((good_cex & aa_robust).sum()),
        "open_aa_robust": int((open_ & aa_robust).sum()),
        "open_aa_broken": int((open_ & ~aa_robust).sum()),
        "exact_robust_if_settled": int(verified.sum()) if int(open_.sum()) == 0 else None,
        "status": st.tolist(),
        "aa_robust_mask": aa_robust.tolist(),
        "milp_seconds": secs.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--n-cnn", type=int, default=20, help="points for the CNN (its MILP is much slower)")
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--eps", default="0.05,0.1")
    ap.add_argument("--archs", default="mlp,cnn")
    ap.add_argument("--objective", default="ce")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/verification-strength-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from harness.api import load_dataset

    data = load_dataset("digits")
    rows = []
    for arch in args.archs.split(","):
        n = args.n if arch == "mlp" else args.n_cnn
        x, y = data.batch(slice(0, n))
        model = trained(args.objective, arch, "cpu")
        for eps in (float(e) for e in args.eps.split(",")):
            print(f"{args.objective} {arch} eps {eps}, {n} points", flush=True)
            row = {"arch": arch, "objective": args.objective, **compare(model, x, y, eps, args.time_limit)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
            write(args, rows)  # after every row: a long run that is stopped keeps what it measured
    print(table(rows))


def table(rows) -> str:
    lines = [
        "| model | eps | n | AA robust | MILP verified / falsified (confirmed) / open | MILP-robust broken by AA "
        "| MILP-broken missed by AA | open: AA robust / broken | s/sample AA, MILP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['objective']} {r['arch']} | {r['eps']} | {r['n']} | {r['aa_robust']} | "
            f"{r['milp_verified']} / {r['milp_falsified']} ({r['milp_falsified_confirmed']}) / {r['milp_open']} | "
            f"{r['milp_robust_aa_broken']} | {r['milp_broken_aa_robust']} | "
            f"{r['open_aa_robust']} / {r['open_aa_broken']} | "
            f"{r['aa_s_per_sample']:.2f}, {r['milp_s_per_sample']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
