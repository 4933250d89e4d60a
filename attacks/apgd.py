"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR and targeted APGD-T, L-inf and L2.

Behaviour follows the reference implementation (the ``pyautoattack`` package) step for step:
initial step size 2 * eps, momentum 0.75 (none on the first step), step-size checkpoints after
22 %, then every 19 %, 16 %, ... of the iterations (window shrinking by 3 % down to 6 %), halving
the step where the loss rose in at most rho = 75 % of the window's steps (condition 1) or where it
was not halved last time and the best loss did not improve since (condition 2), restarting such
samples from their best point. A run costs one forward+backward at the start point plus one per
iteration, exactly as in the reference.

Hot path: input gradients only; every per-sample quantity (step size, best loss, checkpoint flags)
lives on the device and is updated with ``torch.where``, so the step loop never synchronises with
the host except for a compaction every ``compact_every`` steps that drops samples already
misclassified. Samples are independent (per-sample step sizes and checkpoints, eval-mode model), so
dropping broken ones cannot change the outcome for the rest. Random starts are keyed by the
sample's global id, so results do not depend on the batch size. A point where the model returns
NaN/Inf logits has margin -inf (`harness.logits.margin`) and is kept as the best point; NaN
gradients are zeroed so that the iterates stay finite.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost, steps
from harness.errors import UsageError
from harness.logits import finite_grad, margin
from harness.losses import LOSSES, MIN_CLASSES, TARGETED_LOSSES
from harness.params import Param, Reference
from harness.registry import ATTACKS
from harness.rng import keyed_normal, keyed_uniform, stream_seed
from harness.threat import ascent_direction, linf_box, per_sample, project_ball_box

from .base import COMPACT_EVERY, EOT_SAMPLES, RESTARTS, STEPS, Attack

# The loss names APGD takes: the untargeted losses of the one table, and APGD-T's targeted DLR.
LOSS_NAMES = (*LOSSES, *TARGETED_LOSSES)
TARGET_ORDERS = ("logits", "malt")


def malt_targets(model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, norm: str, candidates: int) -> Tensor:
    """Other classes per sample, nearest first by the linearised distance to their boundary (MALT).

    Melamed et al. 2024 (arXiv 2407.02240): rank targets t by |z_y - z_t| / ||grad (z_t - z_y)||_*
    (dual norm: L1 for L-inf, L2 for L2) at the clean point, not by the logit z_t alone. Only the
    ``candidates`` highest-logit classes are ranked: one forward and one backward pass per candidate.
    """
    n, k = logits.shape
    c = min(k - 1, max(1, candidates))
    cand = logits.scatter(1, y[:, None], float("-inf")).topk(c, dim=1).indices  # (n, c)
    ar = torch.arange(n, device=x.device)
    xg = x.detach().requires_grad_(True)
    dist = torch.empty(n, c, device=x.device)
    with torch.enable_grad():
        z = model(xg)
        for j in range(c):
            diff = z[ar, cand[:, j]] - z[ar, y]
            (g,) = torch.autograd.grad(diff.sum(), xg, retain_graph=j + 1 < c)
            dual = g.flatten(1).abs().sum(1) if norm == "linf" else g.flatten(1).norm(dim=1)
            dist[:, j] = diff.detach().float().abs() / (dual.float() + 1e-12)
    return cand.gather(1, dist.argsort(dim=1, stable=True))


def checkpoints(steps: int) -> list[tuple[int, int]]:
    """(iteration, window length) pairs at which APGD checks its step size (reference schedule)."""
    first, least, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, i, k = [], -1, first
    while i + k < steps:
        i += k
        out.append((i, k))
        k = max(k - shrink, least)
    return out


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(per_sample(mask, a), a, b)


class APGD(Attack):
    """Auto-PGD with a chosen loss (ce, dlr, margin); 100 iterations, momentum 0.75, step halving."""

    targeted = False
    strong: ClassVar[bool] = True
    eot_param: ClassVar[str | None] = "eot_iter"  # the reference's name for EOT draws per step
    loss_param: ClassVar[str | None] = "loss"
    PARAMS: ClassVar[dict[str, Param]] = {
        "loss": Param("loss to ascend (dlr-targeted is apgd-t's)", choices=LOSS_NAMES),
        "steps": STEPS,
        "restarts": RESTARTS,
        "rho": Param("step-size checkpoint threshold: halve where the loss rose in at most rho of the window",
                     gt=0, le=1),
        "eot_iter": EOT_SAMPLES,
        "n_target_classes": Param("targeted: attack the n classes with the highest clean logits after the top one",
                                  ge=1),
        "compact_every": COMPACT_EVERY,
        "target_order": Param("targeted: rank targets by clean logit, or by MALT's linearised boundary distance",
                              choices=TARGET_ORDERS),
        "malt_candidates": Param("target_order='malt': highest-logit classes ranked (one backward pass each)", ge=1),
    }  # fmt: skip
    # AutoAttack standard (Croce & Hein 2020; pyautoattack autoattack.py, version 'standard'):
    # APGD with n_iter = 100 and n_restarts = 1.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 100, "restarts": 1}, "AutoAttack standard: APGD 100 iterations, 1 restart (Croce & Hein 2020)"
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        n_target_classes: int = 9,
        compact_every: int = 5,
        target_order: str = "logits",
        malt_candidates: int = 20,
    ) -> None:
        super().__init__(norm, eps)
        if (loss in TARGETED_LOSSES) != self.targeted:
            allowed = list(TARGETED_LOSSES) if self.targeted else list(LOSSES)
            raise UsageError(f"APGD loss {loss!r} is not available here", f"use one of {', '.join(allowed)}")
        self.loss = loss
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.eot_iter = int(eot_iter)
        self.n_target_classes = int(n_target_classes)
        self.compact_every = int(compact_every)
        self.target_order = target_order
        self.malt_candidates = int(malt_candidates)

    @property
    def min_classes(self) -> int:
        return MIN_CLASSES.get(self.loss, 2)

    def runs(self, num_classes: int) -> int:
        """Searches per sample: one per restart, and for each target class when targeted."""
        return self.restarts * (min(self.n_target_classes, num_classes - 1) if self.targeted else 1)

    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """One clean forward; per run ``steps + 1`` gradients (the start and every step) over ``eot_iter``
        draws; MALT target ranking adds one gradient per candidate class."""
        total = Cost(1) + steps(self.steps + 1) * (self.eot_iter * self.runs(num_classes))
        if self.targeted and self.target_order == "malt":
            total += Cost(1, min(max(self.malt_candidates, self.n_target_classes), num_classes - 1))
        return total * n

    # ---- public entry ---------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        """Per sample: a misclassified point if one was found, else the lowest-margin point visited."""
        assert index is not None
        x = x.detach()
        with torch.no_grad():
            clean = model(x).float()
        if clean.shape[1] < self.min_classes:
            raise UsageError(f"APGD with the {self.loss} loss needs at least 3 classes, the model has {clean.shape[1]}")
        best_m = margin(clean, y)  # clean-misclassified samples are never attacked, as in the reference
        best_x = x.clone()
        if self.targeted and self.target_order == "malt":
            ranked = malt_targets(model, x, y, clean, self.norm, max(self.malt_candidates, self.n_target_classes))
            runs = [(c, ranked[:, c - 2]) for c in range(2, min(self.n_target_classes, ranked.shape[1]) + 2)]
        elif self.targeted:
            n_t = min(self.n_target_classes, clean.shape[1] - 1)
            order = clean.sort(dim=1).indices  # ascending: column -c is the c-th highest class
            runs = [(c, order[:, -c]) for c in range(2, n_t + 2)]
        else:
            runs = [(0, None)]
        for c, target in runs:
            for r in range(self.restarts):
                todo = (best_m >= 0).nonzero().squeeze(1)  # one sync per restart
                if len(todo) == 0:
                    return best_x
                t = None if target is None else target[todo]
                key = stream_seed(seed, "apgd", c, r)
                self._run(model, x, y, t, index, todo, key, best_x, best_m)
        return best_x

    # ---- one APGD run on the samples at positions ``pos`` ---------------------------------------
    def _start(self, xs: Tensor, idx: Tensor, key: int) -> Tensor:
        shape = tuple(xs.shape[1:])
        if self.norm == "linf":
            t = (2 * keyed_uniform(key, idx, shape) - 1).to(xs.device, xs.dtype)
            d = t / per_sample(t.flatten(1).abs().amax(1) + 1e-12, t)
        else:
            t = keyed_normal(key, idx, shape).to(xs.device, xs.dtype)
            d = t / per_sample(t.flatten(1).norm(dim=1) + 1e-12, t)
        return (xs + self.eps * d).clamp(0.0, 1.0)

    def _grad(self, model: nn.Module, xa: Tensor, ys: Tensor, ts: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, per-sample loss and the (EOT-averaged) input gradient at xa."""
        loss_fn = TARGETED_LOSSES[self.loss] if self.targeted else LOSSES[self.loss]
        args = () if ts is None else (ts,)
        g = torch.zeros_like(xa)
        for _ in range(self.eot_iter):
            xg = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(xg)
                loss = loss_fn(z.float(), ys, *args)
                (gi,) = torch.autograd.grad(loss.sum(), xg)
            g = g + finite_grad(gi)
        if self.eot_iter > 1:
            g = g / self.eot_iter
        return z.detach().float(), loss.detach(), g

    def _run(self, model, x, y, t, index, pos, key, best_x, best_m) -> None:
        xs, ys, ts = x[pos], y[pos], t
        xa = self._start(xs, index[pos], key)
        box = linf_box(xs, self.eps) if self.norm == "linf" else None
        z, loss, g = self._grad(model, xa, ys, ts)
        bm, bx = margin(z, ys), xa.clone()  # lowest margin seen in this run
        n = len(pos)
        hist = torch.zeros(self.steps + 1, n, device=x.device)  # hist[i + 1] = loss after step i
        # hist[0] stays 0: the reference's first window compares step 0 with an unwritten (zero) row.
        loss_best, x_best, g_best = loss.clone(), xa.clone(), g.clone()
        loss_at_check = loss_best.clone()
        reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
        step = torch.full((n,), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        x_old = xa.clone()
        checks = dict(checkpoints(self.steps))
        for i in range(self.steps):
            a = 0.75 if i > 0 else 1.0
            with torch.no_grad():
                mom = xa - x_old
                x_old = xa
                z1 = project_ball_box(
                    xs, xa + per_sample(step, xa) * ascent_direction(g, self.norm), self.norm, self.eps, box
                )
                xa = project_ball_box(xs, xa + a * (z1 - xa) + (1 - a) * mom, self.norm, self.eps, box)
            z, loss, g = self._grad(model, xa, ys, ts)
            m = margin(z, ys)
            better = m < bm
            bm = torch.where(better, m, bm)
            bx = _where(better, xa, bx)
            hist[i + 1] = loss
            up = loss > loss_best
            loss_best = torch.where(up, loss, loss_best)
            x_best = _where(up, xa, x_best)
            g_best = _where(up, g, g_best)
            if i in checks:
                k = checks[i]
                rises = (hist[i - k + 2 : i + 2] > hist[i - k + 1 : i + 1]).sum(0)
                cond1 = rises <= k * self.rho
                cond2 = ~reduced_at_check & (loss_at_check >= loss_best)
                red = cond1 | cond2
                reduced_at_check, loss_at_check = red, loss_best.clone()
                step = torch.where(red, step / 2, step)
                xa = _where(red, x_best, xa)
                g = _where(red, g_best, g)
            if (i + 1) % self.compact_every == 0 and i + 1 < self.steps:
                self._write_back(pos, bx, bm, best_x, best_m)
                keep = (bm >= 0).nonzero().squeeze(1)  # the only sync inside the loop
                if len(keep) < len(pos):
                    if len(keep) == 0:
                        return
                    pos, xs, ys, xa, x_old, g, bx, bm = (v[keep] for v in (pos, xs, ys, xa, x_old, g, bx, bm))
                    ts = None if ts is None else ts[keep]
                    loss_best, x_best, g_best = loss_best[keep], x_best[keep], g_best[keep]
                    loss_at_check, reduced_at_check, step = loss_at_check[keep], reduced_at_check[keep], step[keep]
                    hist = hist[:, keep]
                    box = None if box is None else (box[0][keep], box[1][keep])
        self._write_back(pos, bx, bm, best_x, best_m)

    @staticmethod
    def _write_back(pos: Tensor, bx: Tensor, bm: Tensor, best_x: Tensor, best_m: Tensor) -> None:
        better = bm < best_m[pos]
        best_m[pos] = torch.where(better, bm, best_m[pos])
        best_x[pos] = _where(better, bx, best_x[pos])


ATTACKS.add("apgd", APGD, summary="Auto-PGD with a chosen loss (ce, dlr, margin); reference schedule and budgets")


@ATTACKS.register("apgd-ce")
class APGDCE(APGD):
    """APGD on cross-entropy (AutoAttack's first component): 100 iterations, 1 restart by default."""

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        compact_every: int = 5,
    ) -> None:
        super().__init__(norm, eps, "ce", steps, restarts, rho, eot_iter, 9, compact_every)

    def config(self) -> dict:
        out = super().config()
        for k in ("n_target_classes", "target_order", "malt_candidates"):
            out.pop(k, None)
        return out


@ATTACKS.register("apgd-dlr")
class APGDDLR(APGDCE):
    """APGD on the shift- and scale-invariant DLR loss (AutoAttack plus/rand)."""

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        compact_every: int = 5,
    ) -> None:
        APGD.__init__(self, norm, eps, "dlr", steps, restarts, rho, eot_iter, 9, compact_every)


@ATTACKS.register("apgd-t")
class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss, one run per target among the top-9 other classes.

    ``target_order="malt"`` picks the targets by MALT's linearised boundary distance instead of by
    logit (`malt_targets`): fewer targets find the same adversarial examples.
    """

    targeted = True
    # AutoAttack standard: APGD-T with n_iter = 100, n_restarts = 1 and n_target_classes = 9.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 100, "restarts": 1, "n_target_classes": 9},
        "AutoAttack standard: APGD-T 100 iterations, 1 restart, 9 target classes (Croce & Hein 2020)",
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        n_target_classes: int = 9,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        compact_every: int = 5,
        target_order: str = "logits",
        malt_candidates: int = 20,
    ) -> None:
        super().__init__(
            norm, eps, "dlr-targeted", steps, restarts, rho, eot_iter, n_target_classes, compact_every,
            target_order, malt_candidates,
        )  # fmt: skip


__all__ = ["APGD", "APGDCE", "APGDDLR", "APGDT", "checkpoints", "malt_targets"]
