"""Float-level ties: verdicts that rounding, not the model, would decide.

The same logits come out a few units in the last place (ulps) apart on different kernel paths:
CPU capabilities (default, AVX2, AVX-512), GPUs, batch sizes and thread counts sum in different
orders. A sample whose margin z_y - max_{j != y} z_j at a candidate point is within that noise of
zero would be robust on one machine and broken on another. The engine's verdict therefore calls a
candidate point robust only when the margin exceeds the tie tolerance, and counts the points whose
margin is within it ("ties") so that reports can say how many verdicts the rule decided.

The tolerance is ``TIE_ULPS`` float32 ulps of the sample's logit scale (max_j |z_j|): 2**10 ulps,
about 1.2e-4 relative. The kernel noise measured on the digits CNNs between CPU capabilities,
batch sizes and thread counts is at most 12 ulps of that scale (docs/reliability.md); the rest is
headroom for deeper models and GPU convolution algorithms. A margin of 1.2e-4 relative is far below
anything an attack or a report distinguishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from harness.logits import finite_rows, margin

TIE_ULPS = 2**10
EPS32 = float(torch.finfo(torch.float32).eps)
TIE_RTOL = TIE_ULPS * EPS32


def tie_tolerance(logits: Tensor) -> Tensor:
    """Per row: the margin below which the verdict is a float-level tie (TIE_ULPS ulps of max |z|)."""
    return TIE_RTOL * logits.detach().float().abs().amax(1)


def decide(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(robust, margin, tie) per row: robust iff the true class wins by more than the tie tolerance.

    A tie counts as not robust: the point is on the decision boundary up to rounding, so some
    kernel path misclassifies it. Non-finite logits give a NaN or infinite margin, never robust.
    """
    z = logits.detach().float()
    m = margin(z, y)
    tol = tie_tolerance(z)
    # A row with NaN/Inf has margin -inf (harness.logits.margin): wrong, and never a tie.
    return m > tol, m, (m.abs() <= tol) & finite_rows(z)


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Full-precision fp32 GPU kernels (TF32 off for cuDNN convolutions and matmuls) while verdicts are computed.

    PyTorch lets cuDNN convolutions use TF32 by default, a 10-bit mantissa: logits 1e-3 apart
    from the CPU's, ten times the tie tolerance. The attack search may keep TF32; the verdicts may
    not. No effect on CPU.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
