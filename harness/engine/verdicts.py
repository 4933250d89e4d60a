"""The engine's own fp32 verdict on candidate points, with the float-level tie rule and EOT majority.

Attacks only propose points; every status in the record comes from `score_points` (harness/ties.py:
a point is robust only when the true class wins by more than the tie tolerance, so the verdict does
not depend on the kernel path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from harness.logits import finite_rows
from harness.ties import decide, ieee_fp32

# The record's prediction for a row of non-finite logits: no class (never equal to a label).
NO_PREDICTION = -2

Scored = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # status, margin, prediction, calibration, tie
# (logits, labels, draws or None) -> calibration statistics per sample
CalibrationStats = Callable[[Tensor, Tensor, "list[Tensor] | None"], Tensor]


def prediction(logits: Tensor) -> Tensor:
    """argmax, or `NO_PREDICTION` for a row of non-finite logits (never equal to a label)."""
    return torch.where(finite_rows(logits), logits.argmax(1), NO_PREDICTION)


def sane_logits(logits: Tensor) -> Tensor:
    """Non-finite rows replaced by zeros (the uniform distribution) for the calibration statistics."""
    return torch.where(finite_rows(logits)[:, None], logits, 0.0)


def score_points(
    verdict: nn.Module, x_adv: Tensor, y: Tensor, *, eot: int, stats: CalibrationStats, logits: Tensor | None = None
) -> Scored:
    """(status 1/0, margin, prediction, calibration stats, tie) of candidate points under ``verdict``.

    A row of non-finite logits is a wrong prediction: status 0, margin -inf, prediction
    `NO_PREDICTION`, calibration statistics of the uniform distribution (it says nothing). With EOT
    the verdict is the majority over ``eot`` draws (robust when at least half are; a non-finite draw
    is not), the prediction the most frequent class, the margin the mean over draws and ``tie`` set
    when any draw is a tie; the calibration statistics use the mean softmax over draws.
    """
    with torch.no_grad(), ieee_fp32():
        if eot == 1:
            logits = verdict(x_adv.float()) if logits is None else logits
            ok, m, tie = decide(logits, y)
            pred = prediction(logits).to(torch.int16)
            return ok.to(torch.int8), m.float(), pred, stats(sane_logits(logits), y, None), tie.to(torch.int8)
        draws = [verdict(x_adv.float()) for _ in range(eot)]
    decided = [decide(d, y) for d in draws]
    preds = torch.stack([prediction(d) for d in draws])
    ok = torch.stack([r for r, _, _ in decided]).float().mean(0) >= 0.5
    m = torch.stack([mm.float() for _, mm, _ in decided]).mean(0)
    tie = torch.stack([t for _, _, t in decided]).any(0)
    sane = [sane_logits(d) for d in draws]
    pred = preds.mode(0).values.to(torch.int16)
    return ok.to(torch.int8), m, pred, stats(sane[0], y, sane), tie.to(torch.int8)
