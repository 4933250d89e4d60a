"""An independent oracle for tiny ReLU MLPs: every activation pattern solved as a linear program.

Fixing which ReLUs are active makes the network affine on the polyhedron where that pattern holds,
so the minimum of a margin over the box (or the smallest L-inf radius that reaches the decision
boundary) is the minimum over patterns of one LP each (scipy.optimize.linprog). Patterns that
contradict a ReLU's sign over the whole box (plain interval arithmetic) are skipped. Exponential in
the number of ReLUs: for networks of at most ~12.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import linprog


def layers_of(model: torch.nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of each Linear of a Flatten/Linear/ReLU Sequential, in float64."""
    return [
        (m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
        for m in model
        if isinstance(m, torch.nn.Linear)
    ]


def pattern_pieces(layers, pattern):
    """The affine output (M, c) and the pattern's constraints A x <= b for one activation pattern."""
    d = layers[0][0].shape[1]
    m, c = np.eye(d), np.zeros(d)
    a_rows, b_rows = [], []
    pos = 0
    for w, b in layers[:-1]:
        pm, pc = w @ m, w @ c + b
        act = np.array(pattern[pos : pos + len(b)], dtype=bool)
        pos += len(b)
        # active: pre >= 0  ->  -pm x <= pc ; inactive: pre <= 0  ->  pm x <= -pc
        sign = np.where(act, -1.0, 1.0)
        a_rows.append(sign[:, None] * pm)
        b_rows.append(np.where(act, pc, -pc))
        m, c = pm * act[:, None], pc * act
    w, b = layers[-1]
    return w @ m, w @ c + b, np.vstack(a_rows), np.concatenate(b_rows)


def n_relus(layers) -> int:
    return sum(len(b) for _, b in layers[:-1])


def patterns(layers, lo: np.ndarray, hi: np.ndarray):
    """Activation patterns worth solving: a ReLU whose interval over the box (plain interval
    arithmetic, written here) is one-signed has that sign in every pattern."""
    fixed = []
    low, up = lo, hi
    for w, b in layers[:-1]:
        c, r = (low + up) / 2, (up - low) / 2
        pl, pu = w @ c + b - np.abs(w) @ r, w @ c + b + np.abs(w) @ r
        fixed += [1 if a >= 0 else 0 if z <= 0 else None for a, z in zip(pl, pu)]
        low, up = np.maximum(pl, 0), np.maximum(pu, 0)
    free = [i for i, f in enumerate(fixed) if f is None]
    for bits in itertools.product([0, 1], repeat=len(free)):
        p = list(fixed)
        for i, bit in zip(free, bits):
            p[i] = bit
        yield p


def min_margin(layers, x0: np.ndarray, y: int, eps: float) -> float:
    """min over the L-inf ball ∩ [0, 1] of min_{j != y} z_y - z_j."""
    lo, hi = np.maximum(x0 - eps, 0), np.minimum(x0 + eps, 1)
    best = np.inf
    for pattern in patterns(layers, lo, hi):
        m, c, a, b = pattern_pieces(layers, pattern)
        for j in range(m.shape[0]):
            if j == y:
                continue
            obj = m[y] - m[j]
            res = linprog(obj, A_ub=a, b_ub=b, bounds=list(zip(lo, hi)), method="highs")
            if res.status == 0:
                best = min(best, res.fun + c[y] - c[j])
    return best


def min_radius(layers, x0: np.ndarray, y: int, t_max: float = 1.0, norm: str = "linf") -> float:
    """The smallest L-inf (or L1) radius t <= t_max with an input in [0, 1] where some z_j >= z_y (inf if none)."""
    d = len(x0)
    best = np.inf
    for pattern in patterns(layers, np.maximum(x0 - t_max, 0), np.minimum(x0 + t_max, 1)):
        m, c, a, b = pattern_pieces(layers, pattern)
        for j in range(m.shape[0]):
            if j == y:
                continue
            # variables (x, s, t): minimise t; s_i >= |x_i - x0_i| (L1: sum s <= t; L-inf: s_i <= t)
            z = np.zeros
            rows = [np.hstack([a, z((len(a), d)), z((len(a), 1))])]
            rhs = [b]
            rows.append(np.hstack([(m[y] - m[j])[None, :], z((1, d)), z((1, 1))]))  # margin <= 0
            rhs.append(np.array([c[j] - c[y]]))
            rows.append(np.hstack([np.eye(d), -np.eye(d), z((d, 1))]))  # x - s <= x0
            rhs.append(x0)
            rows.append(np.hstack([-np.eye(d), -np.eye(d), z((d, 1))]))  # -x - s <= -x0
            rhs.append(-x0)
            if norm == "linf":
                rows.append(np.hstack([z((d, d)), np.eye(d), -np.ones((d, 1))]))  # s_i <= t
                rhs.append(z(d))
            else:
                rows.append(np.hstack([z((1, d)), np.ones((1, d)), -np.ones((1, 1))]))  # sum s <= t
                rhs.append(z(1))
            cost = np.zeros(2 * d + 1)
            cost[-1] = 1.0
            res = linprog(
                cost,
                A_ub=np.vstack(rows),
                b_ub=np.concatenate(rhs),
                bounds=[(0, 1)] * d + [(0, None)] * d + [(0, t_max)],
                method="highs",
            )
            if res.status == 0:
                best = min(best, res.fun)
    return best
