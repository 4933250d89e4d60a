"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based black-box, L-inf and L2.

Random search over square-shaped updates accepted when the margin loss z_y - max_{j!=y} z_j drops
(or the point becomes misclassified). The schedule of the square's area fraction p (halved at
iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000) and the L2 "stripes of opposite-sign
pyramids" pattern follow the paper and AutoAttack's defaults (p_init 0.8, 5000 queries, one restart,
schedule not rescaled). As in the reference, an iteration's proposal (window position, signs,
transposition) is one draw shared by every sample; unlike the reference, the draws come from
`harness.rng` keyed by (seed, restart, iteration) alone and are made on the host before the loop, so a
sample's trajectory does not depend on which batch or rank it is in, and placing the L-inf window is a
slice, not a per-sample mask. The initial stripes are drawn per sample (keyed by sample id). A sample
stops when misclassified: its state is frozen by a device-side mask, and the still-robust set is
compacted every ``compact_every`` iterations (the only host synchronisation in the loop). A
proposal on which the model returns NaN/Inf logits has margin (and loss) -inf: it is accepted as a
success, since non-finite logits are no correct prediction.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.cost import Cost
from harness.errors import UsageError
from harness.logits import margin as logit_margin
from harness.logits import misclassified
from harness.params import Param, Reference
from harness.registry import ATTACKS
from harness.rng import keyed_uniform, stream_seed
from harness.threat import linf_box, per_sample

from .base import COMPACT_EVERY, RESTARTS, Attack

_P_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(it: int, p_init: float, n_queries: int, rescale: bool) -> float:
    """Fraction of pixels changed at iteration ``it``: p_init halved after each threshold in _P_STEPS."""
    if rescale:
        it = int(it / n_queries * 10000)
    halvings = sum(1 for t in _P_STEPS if it > t)
    return p_init / (2**halvings)


def _pyramid(rows: int, cols: int) -> Tensor:
    """rows x cols block whose entry is sum_{k >= chebyshev distance to the centre} 1/(k+1)^2, L2-normalised."""
    cr, cc = rows // 2, cols // 2
    n_rings = max(cr, cc) + 1
    dist = torch.maximum((torch.arange(rows)[:, None] - cr).abs(), (torch.arange(cols)[None, :] - cc).abs())
    weights = 1.0 / torch.arange(1, n_rings + 1, dtype=torch.float32) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} w_j
    block = tail[dist]
    return block / block.norm()


def l2_square_pattern(s: int) -> Tensor:
    """The s x s L2 update of the paper: a positive pyramid on the top half, a negative one below, unit norm."""
    top = _pyramid(s // 2, s) if s // 2 > 0 else torch.zeros(0, s)
    bottom = -_pyramid(s - s // 2, s)
    eta = torch.cat([top, bottom], 0)
    return eta / eta.norm()


def _sign(u: Tensor) -> Tensor:
    return torch.where(u < 0.5, -1.0, 1.0).to(u.dtype)


def _window_mask(vh: Tensor, vw: Tensor, s: int, h: int, w: int) -> Tensor:
    """(n, 1, h, w) float mask of the s x s window with top-left corner (vh, vw) per sample."""
    r = torch.arange(h, device=vh.device)
    c = torch.arange(w, device=vh.device)
    mr = (r[None, :] >= vh[:, None]) & (r[None, :] < vh[:, None] + s)
    mc = (c[None, :] >= vw[:, None]) & (c[None, :] < vw[:, None] + s)
    return (mr[:, :, None] & mc[:, None, :]).unsqueeze(1).float()


def _place(pattern: Tensor, vh: Tensor, vw: Tensor, transpose: Tensor, h: int, w: int) -> Tensor:
    """(n, 1, h, w): the s x s ``pattern`` (or its transpose, per sample) placed at (vh, vw), zero elsewhere."""
    s = pattern.shape[0]
    ii = (torch.arange(h, device=vh.device)[None, :] - vh[:, None]).clamp(0, s - 1)  # (n, h)
    jj = (torch.arange(w, device=vh.device)[None, :] - vw[:, None]).clamp(0, s - 1)  # (n, w)
    a = pattern[ii[:, :, None], jj[:, None, :]]
    b = pattern.t()[ii[:, :, None], jj[:, None, :]]
    placed = torch.where(transpose.view(-1, 1, 1), b, a)
    return placed.unsqueeze(1) * _window_mask(vh, vw, s, h, w)


def _flat_l2(v: Tensor) -> Tensor:
    return per_sample(v.flatten(1).norm(dim=1), v)


@ATTACKS.register("square")
class Square(Attack):
    """Square Attack (score-based black-box random search), L-inf/L2, margin loss, 5000 queries."""

    black_box: ClassVar[bool] = True

    PARAMS: ClassVar[dict[str, Param]] = {
        "n_queries": Param("model queries (iterations) per restart", ge=1),
        "p_init": Param("initial fraction of pixels a square changes (halved on the schedule)", gt=0, le=1),
        "restarts": RESTARTS,
        "loss": Param("score to lower: the logit margin, or minus cross-entropy", choices=("margin", "ce")),
        "rescale_schedule": Param("rescale the p schedule to n_queries (the reference AutoAttack does not)"),
        "compact_every": COMPACT_EVERY,
    }
    # AutoAttack standard (pyautoattack autoattack.py): Square with n_queries = 5000, p_init = 0.8, 1 restart.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"n_queries": 5000, "restarts": 1},
        "AutoAttack standard: Square 5000 queries, 1 restart (Andriushchenko et al. 2020)",
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str = "margin",
        rescale_schedule: bool = False,
        compact_every: int = 20,
    ) -> None:
        super().__init__(norm, eps)
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.restarts = int(restarts)
        self.loss = loss
        self.rescale_schedule = bool(rescale_schedule)
        self.compact_every = int(compact_every)

    def _score(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x).float()
        m = logit_margin(logits, y)
        if self.loss == "margin":
            return m, m
        # -CE is NaN on a non-finite row; m is -inf there, the lowest (best) loss.
        return m, torch.where(torch.isfinite(m), -F.cross_entropy(logits, y, reduction="none"), m)

    @torch.no_grad()
    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """Forward passes only: the clean check, then per restart the start and ``n_queries`` proposals,
        and between restarts a check of the last result."""
        return Cost(1 + self.restarts * (1 + self.n_queries) + (self.restarts - 1)) * n

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        assert index is not None
        if x.dim() != 4:
            raise UsageError(f"square needs image batches (n, c, h, w), got shape {tuple(x.shape)}")
        out = x.detach().clone()
        todo = (~misclassified(model(x), y)).nonzero().squeeze(1)
        for r in range(self.restarts):
            if len(todo) == 0:
                break
            xr = self._run(model, x[todo], y[todo], index[todo], stream_seed(seed, "square", r))
            out[todo] = xr
            if r + 1 < self.restarts:
                todo = todo[(~misclassified(model(xr), y[todo])).nonzero().squeeze(1)]
        return out

    def _init(self, x: Tensor, index: Tensor, seed: int) -> Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":
            # Vertical stripes: one random sign per (channel, column).
            u = keyed_uniform(stream_seed(seed, "init"), index, (c, 1, w)).to(x.device)
            return (x + self.eps * _sign(u)).clamp(0, 1)
        s = max(h // 5, 1)
        start = (h - 5 * s) // 2
        delta = torch.zeros_like(x)
        blocks = [(start + i * s, start + j * s) for i in range(h // s) for j in range(w // s)]
        pattern = l2_square_pattern(s).to(x.device)
        for k, (bh, bw) in enumerate(blocks):
            if bh + s > h or bw + s > w:
                continue
            u = keyed_uniform(stream_seed(seed, "init", k), index, (c + 1,)).to(x.device)
            pat = torch.where((u[:, c] < 0.5).view(-1, 1, 1), pattern.t(), pattern)
            delta[:, :, bh : bh + s, bw : bw + s] += pat[:, None] * _sign(u[:, :c]).view(n, c, 1, 1)
        return (x + delta / (_flat_l2(delta) + 1e-12) * self.eps).clamp(0, 1)

    def _draws(self, seed: int, c: int) -> Tensor:
        """(n_queries, c + 5) uniforms on the host: row ``it`` is iteration it's proposal for every sample."""
        return keyed_uniform(stream_seed(seed, "it"), torch.arange(self.n_queries), (c + 5,))

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, seed: int) -> Tensor:
        n, c, h, w = x.shape
        x_best = self._init(x, index, seed)
        m_best, l_best = self._score(model, x_best, y)
        out = x_best.clone()
        pos = torch.arange(n, device=x.device)
        active = m_best > 0
        xs, ys = x, y
        eps = self.eps
        draws = self._draws(seed, c)
        where = draws[:, c : c + 2].tolist()  # window corners as Python floats: no device round trip
        u_dev = draws.to(x.device)  # one transfer before the loop
        linf = self.norm == "linf"
        if linf:
            step = (2 * eps) * _sign(u_dev[:, :c]).to(x.dtype).view(-1, 1, c, 1, 1)
            lo, hi = linf_box(xs, eps)
        for it in range(self.n_queries):
            if it % self.compact_every == 0:
                out[pos] = x_best
                keep = active.nonzero().squeeze(1)  # the only sync in the loop
                if len(keep) == 0:
                    return out
                if len(keep) < len(pos):
                    pos, xs, ys = pos[keep], xs[keep], ys[keep]
                    if linf:
                        lo, hi = lo[keep], hi[keep]
                    x_best, m_best, l_best, active = x_best[keep], m_best[keep], l_best[keep], active[keep]
            p = p_schedule(it, self.p_init, self.n_queries, self.rescale_schedule)
            if linf:
                s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
                vh = int(where[it][0] * max(h - s, 1))
                vw = int(where[it][1] * max(w - s, 1))
                win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
                x_new = x_best.clone()
                # Only the window changes; the ball ∩ box projection is one clamp there.
                x_new[win] = torch.clamp(x_best[win] + step[it], lo[win], hi[win])
            else:
                x_new = self._l2_proposal(xs, x_best, u_dev[it].expand(len(xs), -1), p, c, h, w)
            m_new, l_new = self._score(model, x_new, ys)
            improved = l_new < l_best
            l_best = torch.where(improved & active, l_new, l_best)
            accept = (improved | (m_new <= 0)) & active
            m_best = torch.where(accept, m_new, m_best)
            x_best = torch.where(per_sample(accept, x_new), x_new, x_best)
            active = active & (m_best > 0)
        out[pos] = x_best
        return out

    def _l2_proposal(self, xs: Tensor, x_best: Tensor, u: Tensor, p: float, c: int, h: int, w: int) -> Tensor:
        eps = self.eps
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + 1 if s % 2 == 0 else s, h, w)
        vh = (u[:, c] * max(h - s, 1)).long()
        vw = (u[:, c + 1] * max(w - s, 1)).long()
        vh2 = (u[:, c + 2] * max(h - s, 1)).long()
        vw2 = (u[:, c + 3] * max(w - s, 1)).long()
        m1 = _window_mask(vh, vw, s, h, w)
        m2 = _window_mask(vh2, vw2, s, h, w)
        delta = x_best - xs
        norm_w1 = (delta * m1).square().sum((2, 3), keepdim=True).sqrt()  # per channel
        norm_img = _flat_l2(delta)
        norm_union = (delta * torch.maximum(m1, m2)).square().sum((2, 3), keepdim=True).sqrt()
        pattern = l2_square_pattern(s).to(xs.device)
        new = _place(pattern, vh, vw, u[:, c + 4] < 0.5, h, w) * _sign(u[:, :c]).view(-1, c, 1, 1)
        new = new + delta * m1 / (1e-12 + norm_w1)
        # Rescale each channel's window so the image keeps (at most) norm eps: the budget freed by
        # both windows plus the unused part of the ball, split evenly over channels.
        budget = ((eps**2 - norm_img.square()).clamp_min(0) / c + norm_union.square()).sqrt()
        new = new / (1e-12 + new.square().sum((2, 3), keepdim=True).sqrt()) * budget
        delta = torch.where(m1 > 0, new, delta * (1 - m2))
        return (xs + delta / (_flat_l2(delta) + 1e-12) * eps).clamp(0, 1)
