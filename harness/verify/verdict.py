"""What a verifier returns: per-sample margin bounds and verdicts (verified / open / falsified)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

VERIFIED = 1
OPEN = 0
FALSIFIED = -1  # the MILP found an input that breaks the point; the engine's contract check decides
STATUS_NAMES = {VERIFIED: "verified", OPEN: "open", FALSIFIED: "falsified"}


@dataclass
class MarginBounds:
    """Bounds on the logit margins z_y - z_j over the perturbation set, (N, K) each (0 at j = y)."""

    lower: Tensor
    upper: Tensor
    y: Tensor

    def worst(self) -> Tensor:
        """min over j != y of the lower bounds (N,): positive means the label provably stays on top."""
        masked = self.lower.scatter(1, self.y[:, None], float("inf"))
        return masked.amin(1)


@dataclass
class Verdict:
    """Per-sample verdicts of one verifier at one threat model.

    ``status``: VERIFIED, OPEN or FALSIFIED (int8, N). ``bound``: the certified lower bound on
    min_j (z_y - z_j) (positive where verified; for the MILP the solver's bound, or the margin at
    the counterexample where falsified). ``x_adv``: the counterexample where falsified, x
    elsewhere; it is a candidate for the engine's contract check, not a verdict by itself.
    ``seconds``: time spent per sample (a batch's time shared out for batched verifiers).
    ``timed_out``: where an open verdict is due to the time limit (verifiers with one; None otherwise).
    """

    status: Tensor
    bound: Tensor
    x_adv: Tensor | None = None
    seconds: Tensor | None = None
    timed_out: Tensor | None = None

    @property
    def verified(self) -> Tensor:
        return self.status == VERIFIED

    @property
    def falsified(self) -> Tensor:
        return self.status == FALSIFIED

    def names(self) -> list[str]:
        return [STATUS_NAMES[int(s)] for s in self.status.tolist()]

    @staticmethod
    def from_bound(bound: Tensor, ok: Tensor, threshold: Tensor, seconds: float) -> Verdict:
        """Verified where ``bound > threshold`` and the clean point is classified right (``ok``), else open."""
        status = torch.where((bound > threshold) & ok, VERIFIED, OPEN).to(torch.int8)
        per = torch.full((len(bound),), seconds / max(1, len(bound)), dtype=torch.float64)
        return Verdict(status, bound, None, per)


__all__ = ["FALSIFIED", "OPEN", "STATUS_NAMES", "VERIFIED", "MarginBounds", "Verdict"]
