"""What the batch-size promise lets a test assert about two runs of one attack (docs/reliability.md).

Runs of an attack under different batch plans, thread counts or CPU capabilities round their sums
differently, and iterated attacks can amplify that (a sign step or a best-iterate choice decided by
a float-level tie). The promise is therefore about verdicts, not bits. For two runs ``a`` and ``b``
on the same inputs:

1. both lie in the eps-ball and in [0, 1] and are finite (the engine's contract);
2. every sample gets the same verdict under the engine's rule (robust only when the true class wins
   by more than the tie tolerance, harness/ties.py);
3. where a sample is robust in both runs, both returned the lowest-margin point of the same search,
   so their margins agree within the tie tolerance: kernel noise moves a logit by at most a few
   dozen float32 ulps of the logit scale (measured: 12, docs/reliability.md), two near-equal
   iterates can swap places only when their margins are within that noise, and the tolerance is
   1024 ulps.

Bitwise equality is for the same batch plan and kernel configuration only (promise (a)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.threat import ThreatModel, enforce_contract
from harness.ties import decide, tie_tolerance


def assert_same_outcome(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, b: Tensor, threat: ThreatModel) -> None:
    """Assert 1-3 above for two attack outputs ``a`` and ``b`` on inputs ``x`` with labels ``y``."""
    enforce_contract(x, a, threat, who="run a")
    enforce_contract(x, b, threat, who="run b")
    with torch.no_grad():
        z = model(torch.cat([a, b])).float()  # one forward pass: both runs' points on the same kernel path
    za, zb = z[: len(x)], z[len(x) :]
    ra, ma, _ = decide(za, y)
    rb, mb, _ = decide(zb, y)
    differ = (ra != rb).nonzero().squeeze(1).tolist()
    assert not differ, f"verdicts differ at samples {differ}: margins {ma[differ].tolist()} vs {mb[differ].tolist()}"
    both = ra & rb
    tol = torch.maximum(tie_tolerance(za), tie_tolerance(zb))
    far = (both & ((ma - mb).abs() > tol)).nonzero().squeeze(1).tolist()
    assert not far, f"robust in both, margins further apart than the tie tolerance at {far}: {(ma - mb)[far].tolist()}"
