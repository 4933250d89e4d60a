"""The PGD search (Madry et al. 2018) that the registered PGD/FGSM attacks and training crafting share.

It sits below both ``attacks/`` and ``defenses/`` (which never import each other): the attack
``attacks.pgd.PGD`` wraps it in the attack contract, and ``defenses.crafting.craft`` calls it for
eval-mode training points (the last iterate, optionally counting steps still correct for GAIRAT).

Hot-path rules followed here: input gradients only (`torch.autograd.grad` on x, parameters frozen
by the caller); no host-device synchronisation inside the step loop except a compaction every
``compact_every`` steps, which drops samples already misclassified so they stop costing
forward/backward passes; the per-sample best point (lowest margin z_y - max_{j!=y} z_j) is kept
across steps and restarts. A candidate on which the model returns NaN/Inf logits has margin -inf
(`harness.logits.margin`), so it is kept as the best point (it is no correct prediction); its NaN
gradient moves nothing (sign(NaN) is 0; zeroed before the L2 step), so the next iterate stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.logits import finite_grad, margin
from harness.losses import LossFn, get_loss, scaled
from harness.rng import stream_seed
from harness.threat import ascent_direction, linf_box, per_sample, project_ball_box, random_start

INITS = ("uniform", "normal", "zero")
KEEP = ("best", "last")


@dataclass(frozen=True)
class PGDSettings:
    """One PGD search: a canonical ``norm`` ('linf'/'l2'), its radius and the step schedule.

    ``keep='best'`` returns per sample the lowest-margin point over all steps and restarts (with
    ``early_stop`` dropping samples already misclassified); ``keep='last'`` the last iterate (training).
    """

    norm: str
    eps: float
    steps: int
    step_size: float
    restarts: int = 1
    loss: str | LossFn = "ce"
    logit_scale: float = 1.0
    random_start: bool = True
    init: str = "uniform"
    keep: str = "best"
    early_stop: bool = True
    compact_every: int = 5
    eot_samples: int = 1


@dataclass
class SearchResult:
    """What a PGD search found: points, their margins and (for GAIRAT) steps spent still correct."""

    x_adv: Tensor
    margin: Tensor
    steps_correct: Tensor | None = None


def pgd_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    settings: PGDSettings,
    *,
    index: Tensor,
    seed: int = 0,
    count_correct: bool = False,
) -> SearchResult:
    """Run all restarts of ``settings`` on (x, y); random starts are keyed by the samples' global ``index``."""
    s = settings
    n = len(x)
    loss_fn = scaled(get_loss(s.loss), s.logit_scale)
    early_stop = s.early_stop and s.keep == "best"
    best_x = x.detach().clone()
    best_m = torch.full((n,), float("inf"), device=x.device)
    counts = torch.zeros(n, dtype=torch.int64, device=x.device) if count_correct else None
    for r in range(s.restarts):
        if r > 0 and early_stop:
            todo = (best_m >= 0).nonzero().squeeze(1)  # one sync per restart
            if len(todo) == 0:
                break
        else:
            todo = torch.arange(n, device=x.device)
        _restart(
            s, early_stop, model, x, y, index, todo, stream_seed(seed, "restart", r), loss_fn, best_x, best_m, counts
        )
    return SearchResult(best_x, best_m, counts)


def _restart(s: PGDSettings, early_stop, model, x, y, index, pos, seed, loss_fn, best_x, best_m, counts) -> None:
    xs, ys = x[pos].detach(), y[pos]
    if s.random_start:
        xa = xs + random_start(xs, s.norm, s.eps, seed, index[pos], s.init)
    else:
        xa = xs.clone()
    # L-inf: a step is sign, add and one clamp to the ball ∩ box (3 element-wise kernels instead of
    # 8): fewer thread barriers per step on a busy CPU.
    box = linf_box(xs, s.eps) if s.norm == "linf" else None
    bx, bm = xs.clone(), torch.full((len(pos),), float("inf"), device=x.device)
    last = s.keep == "last"
    for t in range(s.steps + (0 if last else 1)):
        xa = xa.detach().requires_grad_(t < s.steps)
        logits, g = _forward(model, xa, ys, loss_fn, t < s.steps, s.eot_samples)
        m = margin(logits.detach().float(), ys)
        if counts is not None and t < s.steps:
            counts.index_add_(0, pos, (m > 0).long())
        if not last:
            better = m < bm
            bm = torch.where(better, m, bm)
            bx = torch.where(per_sample(better, bx), xa.detach(), bx)
        if t == s.steps:
            break
        # NaN logits give NaN gradients; the iterate must stay finite. sign(NaN) = 0 already (no extra
        # kernel on the L-inf hot path); the L2 step normalises, so it zeroes them first.
        direction = g.sign_() if box is not None else ascent_direction(finite_grad(g), s.norm)  # g not reused
        moved = xa.detach().add(direction, alpha=s.step_size)
        xa = project_ball_box(xs, moved, s.norm, s.eps, box)
        if early_stop and (t + 1) % s.compact_every == 0:
            _write_back(pos, bx, bm, best_x, best_m)
            keep = (bm >= 0).nonzero().squeeze(1)  # the only sync inside the loop
            if len(keep) < len(pos):
                if len(keep) == 0:
                    return
                pos, xs, ys, xa, bx, bm = pos[keep], xs[keep], ys[keep], xa[keep], bx[keep], bm[keep]
                box = None if box is None else (box[0][keep], box[1][keep])
    if last:
        best_x[pos] = xa.detach()
        return
    _write_back(pos, bx, bm, best_x, best_m)


def _forward(model, xa, ys, loss_fn, need_grad: bool, draws: int) -> tuple[Tensor, Tensor | None]:
    """Logits and loss gradient at xa, each the mean over ``draws`` forward passes (EOT)."""
    logits_sum, g_sum = None, None
    for _ in range(draws):
        with torch.enable_grad():
            logits = model(xa)
            if need_grad:
                (g,) = torch.autograd.grad(loss_fn(logits, ys).sum(), xa)
                g_sum = g if g_sum is None else g_sum + g
        logits = logits.detach()
        logits_sum = logits if logits_sum is None else logits_sum + logits
    assert logits_sum is not None
    return logits_sum / draws, (g_sum / draws if g_sum is not None else None)


def _write_back(pos: Tensor, bx: Tensor, bm: Tensor, best_x: Tensor, best_m: Tensor) -> None:
    better = bm < best_m[pos]
    best_m[pos] = torch.where(better, bm, best_m[pos])
    best_x[pos] = torch.where(per_sample(better, bx), bx, best_x[pos])


__all__ = ["INITS", "KEEP", "PGDSettings", "SearchResult", "pgd_search"]
