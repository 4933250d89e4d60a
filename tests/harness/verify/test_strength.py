"""Strength oracle (issue 22) on a tiny network where the MILP is exact: AutoAttack vs the MILP.

On a 4-8-4-3 MLP (12 ReLUs) and 2x2 inputs at two L-inf eps:
- every point the MILP proves robust is not broken by AutoAttack (native, standard components at
  reduced budgets): AutoAttack's robust set contains the exact robust set, anything else is a contract
  or verifier bug;
- every MILP counterexample passes the engine's contract check (`harness.threat.check_contract`) and
  the engine's verdict rule (`harness.ties.decide`) calls it broken.
The number of MILP-broken points AutoAttack misses is AutoAttack's shortfall: printed, not asserted
(bench/verification_strength.py measures it on the digits models).
"""

from __future__ import annotations

import pytest
import torch

from harness.registry import ATTACKS, VERIFIERS
from harness.threat import ThreatModel, check_contract
from harness.ties import decide
from harness.verify import FALSIFIED, OPEN, VERIFIED

from .test_milp import tiny_mlp

# Reduced budgets keep the test in seconds; the components and their order are AutoAttack standard's.
BUDGET = {
    "apgd-ce": {"steps": 50},
    "apgd-t": {"steps": 50},
    "fab-t": {"steps": 50},
    "square": {"n_queries": 500},
}


@pytest.mark.parametrize("eps", [0.05, 0.15])
def test_autoattack_never_breaks_what_the_milp_proves_and_milp_counterexamples_hold(eps):
    model = tiny_mlp(3, widths=(8, 4))
    x = torch.rand(24, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    v = VERIFIERS.create("milp", eps=eps, time_limit=30).verify(model, x, y)
    assert not (v.status == OPEN).any()  # 12 ReLUs: the MILP settles every point
    threat = ThreatModel("linf", eps)
    attack = ATTACKS.create("autoattack", norm="linf", eps=eps, component_params=BUDGET)
    xa = attack(model, x, y, index=torch.arange(len(x)), seed=0)
    check_contract(x, xa, threat)
    with torch.no_grad():
        aa_robust = decide(model(xa), y)[0]
        cex_robust = decide(model(v.x_adv), y)[0]
    verified, falsified = v.status == VERIFIED, v.status == FALSIFIED
    assert 0 < int(verified.sum()) < len(x)  # both kinds of point occur
    assert aa_robust[verified].all(), "AutoAttack broke a point the MILP proves robust"
    for i in falsified.nonzero().squeeze(1).tolist():
        check_contract(x[i : i + 1], v.x_adv[i : i + 1], threat, who="milp")
        assert not bool(cex_robust[i]), f"MILP counterexample {i} is robust under the engine's verdict"
    missed = int((falsified & aa_robust).sum())
    print(
        f"eps {eps}: MILP verified {int(verified.sum())}, falsified {int(falsified.sum())}, AutoAttack missed {missed}"
    )
