"""Exact verification of ReLU networks by mixed-integer linear programming (Tjeng et al. 2019).

Each sample's network is encoded over its input box: every affine layer as equalities, every
ReLU by the big-M encoding with the bounds l, u of its input (y >= 0, y >= x, y <= x - l (1 - a),
y <= u a, a binary), every max pooling by one binary per window element that can be the maximum.
The bounds come from CROWN (or IBP): the tighter they are, the smaller the big-M constants, and a
ReLU whose bounds prove it stable needs no binary at all (it is the identity or zero).

- Verification (L-inf): for each rival class j (in order of CROWN's bound, skipping those CROWN
  already proves), minimise z_y - z_j subject to z_y - z_j <= tol. Infeasible for every j: the
  point is verified; an optimum below 0: a counterexample (the input part of the solution),
  returned for the engine's contract check; a time-out: the point stays open.
- Minimal radius (L-inf, or L1 with one more variable per pixel): minimise t subject to
  |x' - x| <= t (or sum |x' - x| <= t) and z_y - z_j <= 0, for each j; the smallest optimum is the
  exact minimal adversarial radius within ``t_max`` (the bounds are computed over the L-inf ball
  of radius ``t_max``, which contains the L1 ball of that radius).

The L2 ball is not polyhedral, so L2 is refused. Solved with scipy's HiGHS (`scipy.optimize.milp`);
results are exact up to HiGHS's feasibility tolerances (1e-7 on constraints), far below ``tol``.
HiGHS checks its time limit between phases, so a point can take somewhat longer than ``time_limit``
(the time is measured and reported, not capped).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import Tensor, nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import VERIFIERS
from harness.threat import ThreatModel, norm_alias

from .bounds import Domain, Interval, backward_bounds, crown_intermediate, ibp, margin_spec
from .network import Network, read_network
from .ops import AddOp, Affine, MaxPoolOp, ReLUOp, Reshape
from .verdict import FALSIFIED, OPEN, VERIFIED, Verdict
from .verifiers import DTYPES, clean_threshold, frozen_parameters, ibp_margins

# A bound from float64 CROWN is sound up to rounding; widen it by this (relative) slack before it
# becomes a variable bound or a big-M constant, so rounding can never cut off a feasible point.
SLACK = 1e-7


def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lo - SLACK * (1 + np.abs(lo)), hi + SLACK * (1 + np.abs(hi))


class Encoding:
    """Variables (with bounds and integrality) and sparse linear constraints, built layer by layer."""

    def __init__(self) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.binaries = 0

    def new(self, lb: np.ndarray, ub: np.ndarray, integer: bool = False) -> np.ndarray:
        """Indices of len(lb) new variables with bounds [lb, ub]."""
        m = len(lb)
        idx = np.arange(self.n, self.n + m)
        self.lb.append(np.asarray(lb, dtype=np.float64))
        self.ub.append(np.asarray(ub, dtype=np.float64))
        self.integer.append(np.full(m, 1 if integer else 0, dtype=np.uint8))
        self.n += m
        if integer:
            self.binaries += m
        return idx

    def add(self, rows, cols, vals, lb, ub) -> None:
        """Constraints lb[r] <= sum over k with rows[k] == r of vals[k] * var[cols[k]] <= ub[r]."""
        self.blocks.append(
            (
                np.asarray(rows, dtype=np.int64),
                np.asarray(cols, dtype=np.int64),
                np.asarray(vals, dtype=np.float64),
                np.asarray(lb, dtype=np.float64),
                np.asarray(ub, dtype=np.float64),
            )
        )

    def problem(self) -> tuple[Bounds, LinearConstraint, np.ndarray]:
        """The variable bounds, the constraints and the integrality vector for `scipy.optimize.milp`."""
        rows, cols, vals, lbs, ubs = [], [], [], [], []
        offset = 0
        for r, c, v, lb, ub in self.blocks:
            rows.append(r + offset)
            cols.append(c)
            vals.append(v)
            lbs.append(lb)
            ubs.append(ub)
            offset += len(lb)
        a = sparse.csr_matrix(
            (
                np.concatenate(vals or [np.zeros(0)]),
                (np.concatenate(rows or [np.zeros(0, np.int64)]), np.concatenate(cols or [np.zeros(0, np.int64)])),
            ),
            shape=(offset, self.n),
        )
        cons = LinearConstraint(a, np.concatenate(lbs or [np.zeros(0)]), np.concatenate(ubs or [np.zeros(0)]))
        return Bounds(np.concatenate(self.lb), np.concatenate(self.ub)), cons, np.concatenate(self.integer)


def encode(
    net: Network, bounds: list[tuple[np.ndarray, np.ndarray]], in_lo: np.ndarray, in_hi: np.ndarray
) -> tuple[Encoding, np.ndarray, np.ndarray]:
    """One sample's network over the box [in_lo, in_hi]: (encoding, input variables, logit variables).

    ``bounds[k]`` are flat float64 (lo, hi) of node k, sound over the box.
    """
    enc = Encoding()
    zero = enc.new(np.zeros(1), np.zeros(1))[0]
    var: list[np.ndarray] = []
    for k, node in enumerate(net.nodes):
        op = node.op
        if k == 0:
            var.append(enc.new(in_lo, in_hi))
            continue
        lo, hi = _widen(*bounds[k])
        if isinstance(op, Reshape):
            var.append(var[node.inputs[0]])
        elif isinstance(op, Affine):
            w, b = op.matrix()
            x = var[node.inputs[0]]
            y = enc.new(lo, hi)
            # y - W x = b
            w = w.tocoo()
            m = len(y)
            rows = np.concatenate([np.arange(m), w.row])
            cols = np.concatenate([y, x[w.col]])
            vals = np.concatenate([np.ones(m), -w.data])
            enc.add(rows, cols, vals, b, b)
            var.append(y)
        elif isinstance(op, AddOp):
            a, c = (var[i] for i in node.inputs)
            y = enc.new(lo, hi)
            m = len(y)
            ar = np.arange(m)
            enc.add(
                np.concatenate([ar, ar, ar]),
                np.concatenate([y, a, c]),
                np.concatenate([np.ones(m), -np.ones(m), -np.ones(m)]),
                np.zeros(m),
                np.zeros(m),
            )
            var.append(y)
        elif isinstance(op, ReLUOp):
            x = var[node.inputs[0]]
            plo, phi = _widen(*bounds[node.inputs[0]])
            y = np.where(plo >= 0, x, zero)  # stable: identity or zero, no binary
            unst = np.nonzero((plo < 0) & (phi > 0))[0]
            if len(unst):
                lu, u = plo[unst], phi[unst]
                yu = enc.new(np.zeros(len(unst)), u)
                a = enc.new(np.zeros(len(unst)), np.ones(len(unst)), integer=True)
                xu = x[unst]
                m = len(unst)
                ar = np.arange(m)
                # y - x >= 0
                enc.add(np.r_[ar, ar], np.r_[yu, xu], np.r_[np.ones(m), -np.ones(m)], np.zeros(m), np.full(m, np.inf))
                # y - x - l a <= -l
                enc.add(
                    np.r_[ar, ar, ar],
                    np.r_[yu, xu, a],
                    np.r_[np.ones(m), -np.ones(m), -lu],
                    np.full(m, -np.inf),
                    -lu,
                )
                # y - u a <= 0
                enc.add(np.r_[ar, ar], np.r_[yu, a], np.r_[np.ones(m), -u], np.full(m, -np.inf), np.zeros(m))
                y = y.copy()
                y[unst] = yu
            var.append(y)
        elif isinstance(op, MaxPoolOp):
            var.append(_encode_maxpool(enc, op, var[node.inputs[0]], *_widen(*bounds[node.inputs[0]])))
        else:  # pragma: no cover - the reader only produces the kinds above
            raise AssertionError(f"no MILP encoding for {type(op).__name__}")
    return enc, var[0], var[-1]


def _encode_maxpool(enc: Encoding, op: MaxPoolOp, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    c = op.in_shape[0]
    hw = math.prod(op.in_shape[1:])
    win = op.window.numpy()  # (K, O)
    out = []
    for ch in range(c):
        base = ch * hw
        for o in range(win.shape[1]):
            idx = base + win[:, o]
            lw, uw = lo[idx], hi[idx]
            cand = idx[uw >= lw.max()]  # an element below another's lower bound is never the maximum
            if len(cand) == 1:
                out.append(x[cand[0]])
                continue
            lc, uc = lo[cand], hi[cand]
            y = enc.new(np.array([lw.max()]), np.array([uc.max()]))[0]
            a = enc.new(np.zeros(len(cand)), np.ones(len(cand)), integer=True)
            m = len(cand)
            ar = np.arange(m)
            # y >= x_i
            enc.add(
                np.r_[ar, ar],
                np.r_[np.full(m, y), x[cand]],
                np.r_[np.ones(m), -np.ones(m)],
                np.zeros(m),
                np.full(m, np.inf),
            )
            # y <= x_i + (max_{j != i} u_j - l_i)(1 - a_i)
            others = np.array([np.max(np.delete(uc, i)) for i in range(m)])
            big = np.maximum(others - lc, 0.0)
            enc.add(
                np.r_[ar, ar, ar],
                np.r_[np.full(m, y), x[cand], a],
                np.r_[np.ones(m), -np.ones(m), big],
                np.full(m, -np.inf),
                big,
            )
            # exactly one a_i
            enc.add(np.zeros(m, dtype=int), a, np.ones(m), np.ones(1), np.ones(1))
            out.append(y)
    return np.asarray(out)


@dataclass
class RadiusResult:
    """Per-sample minimal adversarial radius: exact where lower == upper (within the solver's gap).

    ``upper`` is +inf where no adversarial input exists within ``t_max`` (then ``lower`` = t_max);
    ``x_adv`` holds the minimal adversarial input where one was found (x elsewhere).
    """

    lower: Tensor
    upper: Tensor
    x_adv: Tensor
    seconds: Tensor


@VERIFIERS.register("milp")
class MILPVerifier:
    """Exact MILP for ReLU networks (Tjeng et al. 2019, big-M with CROWN bounds), L-inf; per-point time limit."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "norm": Param("norm of the ball: 'linf' only (the MILP encodes L-inf balls; an L2 ball is not polyhedral)",
                      choices=("linf",), convert=norm_alias),
        "eps": Param("radius of the L-inf ball in [0, 1] pixel units", gt=0, le=1),
        "time_limit": Param("seconds of solver time per point (open when reached)", gt=0),
        "bounds": Param("bounds that set the big-M constants: 'crown' (tighter) or 'ibp'", choices=("crown", "ibp")),
        "tol": Param("margin threshold: verified only when the minimum exceeds tol * (1 + max |z|)", ge=0),
        "presolve": Param("HiGHS presolve (off: it overran time limits on dense layers)"),
    }  # fmt: skip

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        time_limit: float = 60.0,
        bounds: str = "crown",
        tol: float = 1e-5,
        presolve: bool = False,
    ) -> None:
        self.threat = ThreatModel(norm, eps)
        if self.threat.norm != "linf":
            raise UsageError(
                "the MILP verifier encodes L-inf balls only (an L2 ball is not polyhedral)",
                "use the crown or alpha-crown verifier for L2",
            )
        if not (isinstance(time_limit, (int, float)) and math.isfinite(time_limit) and time_limit > 0):
            raise UsageError(f"time_limit must be a positive number of seconds, not {time_limit!r}")
        if bounds not in ("crown", "ibp"):
            raise UsageError(f"unknown bounds {bounds!r}", "use 'crown' or 'ibp'")
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise UsageError(f"tol must be a finite number >= 0, not {tol!r}")
        self.time_limit = float(time_limit)
        self.bounds = bounds
        self.tol = float(tol)
        self.presolve = bool(presolve)

    @property
    def norm(self) -> str:
        return self.threat.norm

    @property
    def eps(self) -> float:
        return self.threat.eps

    def config(self) -> dict:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "threat"}
        return {"verifier": "milp", **self.threat.__dict__, **out}

    def _options(self, left: float) -> dict:
        # HiGHS's presolve on these dense layers can run far past the time limit (measured: 19 s of
        # presolve under a 5 s limit on the digits MLP) and rarely shrinks the problem.
        return {"time_limit": left, "disp": False, "presolve": self.presolve}

    def _node_bounds(self, net: Network, dom: Domain) -> list[Interval]:
        return crown_intermediate(net, dom) if self.bounds == "crown" else ibp(net, dom)

    def verify(self, model: nn.Module, x: Tensor, y: Tensor) -> Verdict:
        """Per-sample verdicts at the threat model's eps; counterexamples in ``Verdict.x_adv``."""
        net = read_network(model, x)
        n = len(x)
        status = torch.full((n,), OPEN, dtype=torch.int8)
        bound = torch.full((n,), float("-inf"), dtype=torch.float64)
        secs = torch.zeros(n, dtype=torch.float64)
        timed_out = torch.zeros(n, dtype=torch.bool)
        x_adv = x.detach().clone()
        t0 = time.perf_counter()
        with frozen_parameters(model), torch.no_grad():
            z = model(x)
            ok, thr = clean_threshold(model, x, y, self.tol)
            ok, thr = ok.cpu(), thr.cpu().numpy()
            dom = Domain.around(x, "linf", self.eps, DTYPES["float64"])
            nb = self._node_bounds(net, dom)
            spec = margin_spec(y, net.nodes[-1].shape[0], torch.float64)
            lb, _ = backward_bounds(net, nb, net.output, spec, dom, upper=False)
            il, _ = ibp_margins(net, nb, spec)
            assert lb is not None
            margin_lb = torch.maximum(lb, il).cpu().numpy()
        flat = [(lo.flatten(1).cpu().numpy(), hi.flatten(1).cpu().numpy()) for lo, hi in nb]
        share = (time.perf_counter() - t0) / max(1, n)
        box_lo, box_hi = dom.lo.flatten(1).cpu().numpy(), dom.hi.flatten(1).cpu().numpy()
        for i in range(n):
            t1 = time.perf_counter()
            if not bool(ok[i]):  # misclassified (or non-finite) at x itself: x is the counterexample
                status[i], bound[i] = FALSIFIED, float(margin_of(z[i : i + 1], y[i : i + 1]))
                secs[i] = share
                continue
            res = self._verify_one(
                net, [(lo[i], hi[i]) for lo, hi in flat], box_lo[i], box_hi[i], int(y[i]), margin_lb[i], float(thr[i])
            )
            status[i], bound[i], timed_out[i] = res[0], res[1], res[3]
            if res[2] is not None:  # into ball ∩ [0, 1]: HiGHS's feasibility tolerance leaves it ~1e-7 outside
                xa = np.clip(res[2], box_lo[i], box_hi[i])
                x_adv[i] = torch.as_tensor(xa, dtype=x.dtype, device=x.device).view(x.shape[1:])
            secs[i] = share + time.perf_counter() - t1
        return Verdict(status, bound, x_adv, secs, timed_out)

    __call__ = verify

    def _verify_one(self, net, bounds, lo, hi, y: int, margin_lb: np.ndarray, tol: float):
        """(status, bound, counterexample or None, timed out) of one point."""
        start = time.perf_counter()
        k = len(margin_lb)
        if not _finite(bounds, margin_lb):  # non-finite weights or activations: nothing can be proven
            return OPEN, float("nan"), None, False
        rivals = [j for j in np.argsort(margin_lb) if j != y and margin_lb[j] <= tol]
        if not rivals:
            return VERIFIED, float(np.min(np.delete(margin_lb, y))), None, False
        enc, xin, zout = encode(net, bounds, lo, hi)
        bnds, cons, integrality = enc.problem()
        worst = float(np.min(np.delete(margin_lb, y)))
        proven = [float(margin_lb[j]) for j in range(k) if j != y and j not in rivals]
        open_ = timeout = False
        for j in rivals:
            left = self.time_limit - (time.perf_counter() - start)
            if left <= 0:
                return OPEN, worst, None, True
            c = np.zeros(enc.n)
            np.add.at(c, zout[y], 1.0)
            np.add.at(c, zout[j], -1.0)
            row = LinearConstraint(sparse.csr_matrix(c), -np.inf, tol)
            res = milp(
                c,
                integrality=integrality,
                bounds=bnds,
                constraints=[cons, row],
                options=self._options(left),
            )
            if res.status == 2:  # infeasible: z_y - z_j > tol everywhere
                proven.append(tol)
                continue
            if res.x is not None and res.fun is not None and res.fun < 0:
                return FALSIFIED, float(res.fun), res.x[xin], False
            if res.status == 0:  # optimum in [0, tol]: a tie, neither proven nor broken
                open_ = True
                worst = min(worst, float(res.fun))
                continue
            dual = getattr(res, "mip_dual_bound", None)
            if dual is not None and np.isfinite(dual) and dual > tol:
                proven.append(float(dual))
                continue
            open_ = True  # time limit without a proof either way
            timeout = timeout or res.status == 1  # scipy: iteration or time limit reached
        if open_:
            return OPEN, worst, None, timeout
        return VERIFIED, float(min(proven)) if proven else tol, None, False

    def radius(self, model: nn.Module, x: Tensor, y: Tensor, *, hi: float | Tensor = 0.5) -> Tensor:
        """Proven radius per sample (the lower end of `minimal_radius` within ``hi``), like the bound verifiers'."""
        return self.minimal_radius(model, x, y, t_max=hi).lower

    def minimal_radius(
        self, model: nn.Module, x: Tensor, y: Tensor, *, t_max: float | Tensor = 0.5, norm: str | None = None
    ) -> RadiusResult:
        """Exact minimal adversarial radius per sample within ``t_max`` (L-inf or L1), by MILP.

        A small ``t_max`` (e.g. the radius an attack found) keeps the big-M constants small; the
        answer is exact only below it. Misclassified points get radius 0.
        """
        norm = norm or self.norm
        if norm not in ("linf", "l1"):
            raise UsageError(f"the minimal-radius MILP supports linf and l1, not {norm!r}", "L2 is not linear")
        net = read_network(model, x)
        n = len(x)
        tm = torch.as_tensor(t_max, dtype=torch.float64).expand(n).clone().to(x.device)
        if bool((tm <= 0).any()) or not bool(torch.isfinite(tm).all()):
            raise UsageError("t_max must be positive and finite")
        lower = torch.zeros(n, dtype=torch.float64)
        upper = torch.zeros(n, dtype=torch.float64)
        secs = torch.zeros(n, dtype=torch.float64)
        x_adv = x.detach().clone()
        t0 = time.perf_counter()
        with frozen_parameters(model), torch.no_grad():
            z = model(x)
            ok = (torch.isfinite(z).all(1) & (z.argmax(1) == y)).cpu()
            dom = Domain.around(x, "linf", tm, DTYPES["float64"])
            nb = self._node_bounds(net, dom)
            spec = margin_spec(y, net.nodes[-1].shape[0], torch.float64)
            lb, _ = backward_bounds(net, nb, net.output, spec, dom, upper=False)
            il, _ = ibp_margins(net, nb, spec)
            assert lb is not None
            margin_lb = torch.maximum(lb, il).cpu().numpy()
        flat = [(lo.flatten(1).cpu().numpy(), hi.flatten(1).cpu().numpy()) for lo, hi in nb]
        share = (time.perf_counter() - t0) / max(1, n)
        x0s = x.detach().flatten(1).double().cpu().numpy()
        box_lo, box_hi = dom.lo.flatten(1).cpu().numpy(), dom.hi.flatten(1).cpu().numpy()
        for i in range(n):
            t1 = time.perf_counter()
            if not bool(ok[i]):
                secs[i] = share
                continue
            lo_i, hi_i, xa = self._radius_one(
                net,
                [(lo[i], hi[i]) for lo, hi in flat],
                x0s[i],
                box_lo[i],
                box_hi[i],
                int(y[i]),
                margin_lb[i],
                float(tm[i]),
                norm,
            )
            lower[i], upper[i] = lo_i, hi_i
            if xa is not None:  # into the t_max box ∩ [0, 1] (HiGHS's tolerance): no coordinate moves away from x
                xa = np.clip(xa, box_lo[i], box_hi[i])
                x_adv[i] = torch.as_tensor(xa, dtype=x.dtype, device=x.device).view(x.shape[1:])
            secs[i] = share + time.perf_counter() - t1
        return RadiusResult(lower, upper, x_adv, secs)

    def _radius_one(self, net, bounds, x0, lo, hi, y: int, margin_lb, t_max: float, norm: str):
        start = time.perf_counter()
        if not _finite(bounds, margin_lb):
            return 0.0, float("inf"), None
        rivals = [j for j in np.argsort(margin_lb) if j != y and margin_lb[j] <= 0]
        if not rivals:  # CROWN proves robustness over the whole t_max ball
            return t_max, float("inf"), None
        enc, xin, zout = encode(net, bounds, lo, hi)
        d = len(xin)
        t = enc.new(np.zeros(1), np.array([t_max]))[0]
        ar = np.arange(d)
        if norm == "linf":  # -t <= x'_i - x0_i <= t
            enc.add(np.r_[ar, ar], np.r_[xin, np.full(d, t)], np.r_[np.ones(d), -np.ones(d)], np.full(d, -np.inf), x0)
            enc.add(np.r_[ar, ar], np.r_[xin, np.full(d, t)], np.r_[np.ones(d), np.ones(d)], x0, np.full(d, np.inf))
        else:  # s_i >= |x'_i - x0_i|, sum s_i <= t
            s = enc.new(np.zeros(d), np.full(d, t_max))
            enc.add(np.r_[ar, ar], np.r_[xin, s], np.r_[np.ones(d), -np.ones(d)], np.full(d, -np.inf), x0)
            enc.add(np.r_[ar, ar], np.r_[xin, s], np.r_[np.ones(d), np.ones(d)], x0, np.full(d, np.inf))
            enc.add(np.zeros(d + 1, dtype=int), np.r_[s, t], np.r_[np.ones(d), -1.0], np.array([-np.inf]), np.zeros(1))
        bnds, cons, integrality = enc.problem()
        c = np.zeros(enc.n)
        c[t] = 1.0
        best, best_x, lower = float("inf"), None, float("inf")
        for j in rivals:
            left = self.time_limit - (time.perf_counter() - start)
            if left <= 0:
                lower = 0.0
                break
            row = np.zeros(enc.n)
            np.add.at(row, zout[y], 1.0)
            np.add.at(row, zout[j], -1.0)
            ub = bnds.ub.copy()
            ub[t] = min(t_max, best)  # only a smaller radius helps
            res = milp(
                c,
                integrality=integrality,
                bounds=Bounds(bnds.lb, ub),
                constraints=[cons, LinearConstraint(sparse.csr_matrix(row), -np.inf, 0.0)],
                options=self._options(left),
            )
            if res.status == 2:  # no adversarial input for j below the current best
                continue
            if res.x is not None and res.fun is not None and res.fun < best:
                best, best_x = float(res.fun), res.x[xin]
            if res.status != 0:  # time limit: what the solver proved for j
                dual = getattr(res, "mip_dual_bound", None)
                lower = min(lower, float(dual) if dual is not None and np.isfinite(dual) else 0.0)
        if best == float("inf"):  # nothing within t_max (or time ran out with nothing found)
            return (min(lower, t_max), float("inf"), None)
        return min(best, lower), best, best_x


def _finite(bounds: list[tuple[np.ndarray, np.ndarray]], margin_lb: np.ndarray) -> bool:
    return bool(np.isfinite(margin_lb).all()) and all(
        np.isfinite(lo).all() and np.isfinite(hi).all() for lo, hi in bounds
    )


def margin_of(z: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{j != y} z_j (non-finite logits: -inf, i.e. broken)."""
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    m = zy - other
    return torch.where(torch.isfinite(m), m, torch.full_like(m, float("-inf")))


__all__ = ["MILPVerifier", "RadiusResult", "encode"]
