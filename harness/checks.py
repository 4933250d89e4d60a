"""Sanity checks run with every evaluation (the evaluation checklist, items 1-7).

`precheck` runs on the first batch before any attack: fatal contract breaks (wrong logit shape,
non-finite logits) raise `ModelError`; suspicious properties become findings. `postcheck` runs on
the aggregated result. Findings are reported next to the numbers they cast doubt on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import ModelError
from harness.results import Finding, Result

SATURATION_PROB = 1 - 1e-6


def check_logits(logits: Tensor, n: int, num_classes: int) -> None:
    """The model contract on one batch: (N, K) finite logits for the dataset's K classes."""
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ModelError(
            f"model returned shape {tuple(logits.shape)} for a batch of {n}",
            "the model must map (N, C, H, W) images to (N, K) logits",
        )
    if logits.shape[1] != num_classes:
        raise ModelError(
            f"model returns {logits.shape[1]} logits but the dataset has {num_classes} classes",
            "evaluate on the dataset the model was trained for, or fix num_classes",
        )
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise ModelError(
            f"model returned NaN or Inf logits for {bad} of {n} clean images",
            "check the weights (NaN after training?) and the input scaling ([0, 1])",
        )


def precheck(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, was_training: bool) -> list[Finding]:
    out: list[Finding] = []
    if was_training:
        out.append(
            Finding(
                "train-mode",
                "warning",
                "model was passed in train mode (BatchNorm/Dropout active); it was evaluated in eval mode",
            )
        )
    with torch.no_grad():
        z1 = model(x)
        check_logits(z1, len(x), num_classes)
        z2 = model(x)
    if not torch.equal(z1, z2):
        diff = float((z1 - z2).abs().max())
        flips = float((z1.argmax(1) != z2.argmax(1)).float().mean())
        out.append(
            Finding(
                "stochastic",
                "error",
                f"two forward passes on the same inputs differ (max |dlogit| {diff:.3g}, "
                f"{100 * flips:.1f}% predictions flip): "
                "the model is randomised, so gradient attacks need expectation over transformation (EOT)",
                data={"max_logit_diff": diff, "flip_rate": flips},
            )
        )
    rows = z1.sum(1)
    if (z1 >= 0).all() and (z1 <= 1).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        out.append(
            Finding(
                "probabilities",
                "error",
                "the model outputs probabilities (rows in [0, 1] summing to 1), not logits: CE-based "
                "attacks are weakened; remove the final softmax",
            )
        )
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    nonfinite = float((~torch.isfinite(g)).flatten(1).any(1).float().mean())
    zero = float((g.flatten(1).abs().amax(1) == 0).float().mean())
    if nonfinite > 0:
        out.append(
            Finding(
                "gradients",
                "error",
                f"{100 * nonfinite:.1f}% of samples have non-finite input gradients",
                data={"nonfinite_fraction": nonfinite},
            )
        )
    if zero > 0.05:
        out.append(
            Finding(
                "gradients",
                "warning",
                f"{100 * zero:.1f}% of samples have exactly zero input gradient (masked gradients or a "
                "non-differentiable layer): gradient attacks cannot move them; run black-box attacks",
                data={"zero_fraction": zero},
            )
        )
    p = F.softmax(z1.double(), 1).amax(1)
    sat = float((p > SATURATION_PROB).float().mean())
    if sat > 0.5:
        out.append(
            Finding(
                "saturation",
                "warning",
                f"softmax is saturated on {100 * sat:.0f}% of samples (max prob > 1-1e-6): CE gradients "
                "vanish; trust margin/DLR-loss attacks over CE ones",
                data={"saturated_fraction": sat},
            )
        )
    return out


def postcheck(result: Result) -> list[Finding]:
    out: list[Finding] = []
    clean = result.clean
    by_norm: dict[str, list] = {}
    for g in result.threat_models:
        if g.accuracy.correct > clean.correct:
            out.append(
                Finding(
                    "robust-above-clean",
                    "error",
                    f"robust accuracy {g.accuracy.pct()}% exceeds clean {clean.pct()}%",
                    related=g.key,
                )
            )
        by_norm.setdefault(g.norm or "", []).append(g)
    for norm, gs in by_norm.items():
        gs.sort(key=lambda g: g.eps)
        for a, b in zip(gs, gs[1:]):
            if b.accuracy.correct > a.accuracy.correct:
                out.append(
                    Finding(
                        "eps-monotonic",
                        "warning",
                        f"{norm} robust accuracy rises from {a.accuracy.pct()}% at eps={a.eps:g} "
                        f"to {b.accuracy.pct()}% "
                        f"at eps={b.eps:g}: the attack is failing at the larger eps",
                        related=b.key,
                    )
                )
    return out
