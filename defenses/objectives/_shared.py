"""Pieces shared by the loss, augmentation and auxiliary-data objectives.

- `complement_entropy_terms`: the per-sample normalised complement entropy of COT/GCE;
- `soft_cross_entropy`: CE against soft (mixed) targets;
- `augment`: the seeded augmentations of MaxUp/MMEL (gaussian, mixup, cutmix, crop-flip);
- `AuxData`: auxiliary out-of-distribution images (seeded noise or a registered dataset) for ODNL
  and open-sampling.

Every random draw comes from the step's ``state.generator`` (batch-level draws: mixing weights,
pairings, boxes) or from `harness.rng` keyed by ``state.seed`` and the sample ids (per-sample draws),
so training is resume-exact. The module name starts with ``_`` so the plugin loader skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from scipy.special import betaincinv
from torch import Tensor

from harness.errors import UsageError
from harness.loading import load_dataset
from harness.params import Param
from harness.registry import DATASETS
from harness.rng import keyed_normal, keyed_randint, keyed_uniform, stream_seed
from harness.spec import parse_spec

from ..objective import StepState, TrainContext

AUGMENTATIONS = ("gaussian", "mixup", "cutmix", "crop-flip")


def complement_entropy_terms(logits: Tensor, y: Tensor, log_eps: float = 1e-10) -> Tensor:
    """Per sample sum_{j != y} q_j log q_j with q_j = p_j / (1 - p_y + 1e-7) (COT/GCE's epsilons)."""
    p = logits.softmax(1)
    py = p.gather(1, y[:, None])
    q = p / (1 - py + 1e-7)
    not_y = torch.ones_like(p).scatter_(1, y[:, None], 0.0)
    return (q * torch.log(q + log_eps) * not_y).sum(1)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample CE against a probability vector: -sum_k t_k log softmax(z)_k."""
    return -(target * logits.log_softmax(1)).sum(1)


def beta_sample(alpha: float, generator: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha) by inverse CDF of one uniform from ``generator`` (1.0 when alpha <= 0)."""
    u = float(torch.rand((), generator=generator, device=generator.device))
    if alpha <= 0:
        return 1.0
    return float(betaincinv(alpha, alpha, u))


def check_augmentation(name: str) -> None:
    if name not in AUGMENTATIONS:
        raise UsageError(f"unknown augmentation {name!r}", f"choose one of {', '.join(AUGMENTATIONS)}")


def augment(
    name: str, x: Tensor, y: Tensor, num_classes: int, state: StepState, copy: int, *, sigma: float, alpha: float
) -> tuple[Tensor, Tensor]:
    """One augmented copy of the batch and its soft targets (B, K).

    gaussian: x + sigma * N(0, 1), noise keyed by (state.seed, copy, sample id), not clipped (as in
    randomized-smoothing training). mixup: one lambda ~ Beta(alpha, alpha) and one permutation per
    copy (Zhang et al.). cutmix: one lambda ~ Beta(alpha, alpha), one box of area (1 - lambda) HW at a
    uniform centre, clipped to the image, lambda recomputed from the clipped box (Yun et al.).
    crop-flip: zero-padded random crop (pad = H // 8, i.e. 4 on 32x32) and horizontal flip with
    probability 1/2, keyed per sample.
    """
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    b, c, h, w = x.shape
    if name == "gaussian":
        noise = keyed_normal(stream_seed(state.seed, "gaussian", copy), state.index, (c, h, w)).to(x.device, x.dtype)
        return x + sigma * noise, onehot
    if name in ("mixup", "cutmix"):
        lam = beta_sample(alpha, state.generator)
        perm = torch.randperm(b, generator=state.generator, device=state.generator.device).to(x.device)
        if name == "mixup":
            return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]
        cut = (1 - lam) ** 0.5
        cw, ch = int(w * cut), int(h * cut)
        g = state.generator
        cx = int(torch.randint(w, (), generator=g, device=g.device))
        cy = int(torch.randint(h, (), generator=g, device=g.device))
        x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        out = x.clone()
        out[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
        lam = 1 - (x2 - x1) * (y2 - y1) / (w * h)
        return out, lam * onehot + (1 - lam) * onehot[perm]
    if name == "crop-flip":
        pad = max(h // 8, 1)
        key = stream_seed(state.seed, "crop-flip", copy)
        shift = keyed_randint(key, state.index, (2,), 2 * pad + 1).to(x.device)
        flip = keyed_uniform(stream_seed(key, "flip"), state.index, (1,)).to(x.device)[:, 0] < 0.5
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = shift[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = shift[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b, device=x.device)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return out.contiguous(), onehot
    check_augmentation(name)
    raise AssertionError("unreachable")


@dataclass
class AuxData:
    """Auxiliary OOD images: ``aux="noise"`` (seeded uniform noise) or a registered dataset spec.

    A dataset (e.g. ``"synthetic:channels=1,size=8"``; split ``train`` unless the spec names one) is
    loaded once in `setup`; each step draws ``aux_batch`` rows with replacement, keyed by
    ``state.seed``. Images of another shape are adapted: channels repeated (1 -> C) or averaged
    (C -> 1), then resized bilinearly (antialiased) to the training size.
    """

    aux: str = "noise"
    aux_batch: int = 128
    PARAMS: ClassVar[dict[str, Param]] = {
        "aux": Param("auxiliary images: 'noise' (seeded uniform) or a dataset spec, e.g. 'synthetic:channels=1'"),
        "aux_batch": Param("auxiliary images per step", ge=1, le=65536),
    }

    def setup_aux(self, ctx: TrainContext) -> None:
        self._shape = tuple(ctx.train_data.shape)
        self._aux_data: Any = None
        if self.aux == "noise":
            return

        name, args = parse_spec(self.aux)
        if "split" not in args and "split" in DATASETS.get(name).parameters():
            args["split"] = "train"
        data = load_dataset(name, **args)
        if len(data) == 0:
            raise UsageError(f"auxiliary dataset {self.aux!r} is empty")
        c_aux, c = data.shape[0], self._shape[0]
        if c_aux != c and 1 not in (c_aux, c):
            raise UsageError(
                f"auxiliary dataset {self.aux!r} has {c_aux} channels, the training data {c}",
                "use an auxiliary dataset with 1 or the same number of channels",
            )
        self._aux_data = data

    def aux_images(self, state: StepState, device: torch.device) -> Tensor:
        """``aux_batch`` OOD images of the training shape for this step (deterministic in state.seed)."""
        ids = torch.arange(self.aux_batch, dtype=torch.int64)
        if self._aux_data is None:
            return keyed_uniform(stream_seed(state.seed, "aux-noise"), ids, self._shape).to(device)
        rows = keyed_randint(stream_seed(state.seed, "aux-rows"), ids, (), len(self._aux_data))
        x, _ = self._aux_data.batch(rows)
        c, h, w = self._shape
        if x.shape[1] != c:
            x = x.expand(-1, c, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
        if x.shape[2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return x.contiguous().to(device)
