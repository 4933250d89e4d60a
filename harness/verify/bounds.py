"""Sound bounds on a read network over a perturbation set: IBP, CROWN and alpha-CROWN.

The perturbation set is the L-inf or L2 ball of radius eps (one radius per sample) around x,
intersected with [0, 1]. All three methods return, for every node they bound, elementwise lower
and upper bounds valid for every input of the set (in exact arithmetic; computed in float64 by
default, so rounding is negligible beside the verdict tolerance).

- IBP (Gowal et al. 2018): intervals pushed forward layer by layer. An affine layer maps the
  centre by W and the radius by |W|; ReLU and max pooling are monotone. Under L2 the first
  weighted layer after the input (and any per-channel affine maps before it, e.g. the
  normalisation wrapper) is bounded by the dual norm: w.x0 +- eps ||w||_2, intersected with its
  interval over the box [x - eps, x + eps] ∩ [0, 1] (which contains the L2 ball).
- CROWN (Zhang et al. 2018): a bound's linear coefficients are propagated backwards through the
  DAG (sums send them to both branches); each ReLU is replaced by linear bounds: upper
  u/(u-l) (x - l), lower alpha x with CROWN's adaptive alpha = 1 if u > -l else 0. Max pooling
  uses max >= x_i* (i* the element with the largest lower bound) and max <= x_i* where that
  element's lower bound beats every other upper bound, else max <= max_i u_i (DeepPoly). The
  linear function of the input is minimised exactly over the L-inf box and, for L2, as the best
  of the ball's dual-norm bound and the box bound (both sets contain the ball ∩ [0, 1]).
  Intermediate (pre-ReLU) bounds are CROWN's own on the neurons that IBP leaves unstable,
  intersected with IBP, so CROWN's bounds are never looser than IBP's.
- alpha-CROWN (Xu et al. 2021): the lower slopes alpha of unstable ReLUs are optimised by
  projected Adam to raise the final lower bounds. Any alpha in [0, 1] is a valid relaxation, so
  every iterate is sound; the best bound per sample and specification is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.errors import UsageError

from .network import Network
from .ops import Affine, AvgPoolOp, ChannelAffine, ConvOp, LinearOp, MaxPoolOp, ReLUOp, Reshape

Interval = tuple[Tensor, Tensor]
NORMS = ("linf", "l2")
#: elements of one backward-pass coefficient tensor (B x S x node size) before the specification is chunked
CHUNK_ELEMENTS = 1 << 24


@dataclass
class Domain:
    """The ``norm`` ball of radius ``eps`` (N,) around ``x`` intersected with [0, 1]."""

    x: Tensor
    norm: str
    eps: Tensor
    lo: Tensor  # the box [x - eps, x + eps] ∩ [0, 1]: the domain itself for L-inf, a superset for L2
    hi: Tensor

    @classmethod
    def around(cls, x: Tensor, norm: str, eps: float | Tensor, dtype: torch.dtype = torch.float64) -> Domain:
        if norm not in NORMS:
            raise UsageError(f"verifiers bound L-inf and L2 balls, not {norm!r}", "use norm 'linf' or 'l2'")
        x = x.detach().to(dtype)
        e = torch.as_tensor(eps, dtype=dtype, device=x.device).detach()
        e = e.expand(len(x)).clone() if e.dim() == 0 else e.to(dtype)
        if bool((e < 0).any()) or not bool(torch.isfinite(e).all()):
            raise UsageError("eps must be finite and >= 0")
        ev = e.view(-1, *([1] * (x.dim() - 1)))
        return cls(x, norm, e, (x - ev).clamp(min=0.0), (x + ev).clamp(max=1.0))

    def concretize(self, a: Tensor, lower: bool) -> Tensor:
        """min (``lower``) or max of a.x over the domain, for coefficients a of shape (B, S, *in)."""
        af = a.flatten(2)
        c = ((self.lo + self.hi) / 2).flatten(1).unsqueeze(2)
        r = ((self.hi - self.lo) / 2).flatten(1).unsqueeze(2)
        centre = torch.bmm(af, c).squeeze(2)
        spread = torch.bmm(af.abs(), r).squeeze(2)
        box = centre - spread if lower else centre + spread
        if self.norm == "linf":
            return box
        at_x = torch.bmm(af, self.x.flatten(1).unsqueeze(2)).squeeze(2)
        dual = af.norm(dim=2) * self.eps[:, None]
        return torch.maximum(box, at_x - dual) if lower else torch.minimum(box, at_x + dual)


# ---- IBP ---------------------------------------------------------------------------------------


def _affine_interval(op: Affine, lo: Tensor, hi: Tensor) -> Interval:
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    c, r = op.forward(mid), op.linear_abs(rad)
    return c - r, c + r


def _elementwise_affine(op: object) -> bool:
    return isinstance(op, (ChannelAffine, Reshape))


def exact_nodes(net: Network) -> set[int]:
    """Nodes whose IBP interval is already the exact range (no nonlinearity, one weighted layer at most).

    Elementwise maps of the input keep exact coordinate ranges; so does one weighted layer on top
    (its interval over a box is exact, and under L2 the dual-norm bound intersected with the box is
    what CROWN would concretise too). CROWN refinement is skipped there.
    """
    prefix, exact = {0}, {0}
    for k, node in enumerate(net.nodes[1:], start=1):
        (i,) = node.inputs if len(node.inputs) == 1 else (None,)
        if i is None:
            continue
        if _elementwise_affine(node.op):
            if i in prefix:
                prefix.add(k)
            if i in exact:
                exact.add(k)
        elif isinstance(node.op, (LinearOp, ConvOp, AvgPoolOp)) and i in prefix:
            exact.add(k)
    return exact


def ibp(
    net: Network, dom: Domain, refine: Callable[[int, list[Interval]], Interval | None] | None = None
) -> list[Interval]:
    """Interval bounds of every node; ``refine(k, bounds)`` may tighten node k's (intersected) as they come."""
    out: list[Interval] = []
    # elementwise-affine images of the input (for the L2 first layer): node -> (a, v), the node's value
    # being a * x' + const for every input x', and v its value at the centre x
    prefix: dict[int, tuple[Tensor, Tensor]] = {0: (torch.ones_like(dom.x), dom.x)}
    for k, node in enumerate(net.nodes):
        op = node.op
        if k == 0:
            lo, hi = dom.lo, dom.hi
        elif isinstance(op, ReLUOp):
            lo, hi = out[node.inputs[0]]
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        elif isinstance(op, MaxPoolOp):
            lo, hi = out[node.inputs[0]]
            lo, hi = op.forward(lo), op.forward(hi)
        elif isinstance(op, Reshape):
            i = node.inputs[0]
            lo, hi = (op.forward(t) for t in out[i])
            if i in prefix:
                prefix[k] = (op.forward(prefix[i][0]), op.forward(prefix[i][1]))
        elif isinstance(op, Affine):
            i = node.inputs[0]
            lo, hi = _affine_interval(op, *out[i])
            if i in prefix:
                a, v = prefix[i]
                if isinstance(op, ChannelAffine):
                    prefix[k] = (op.linear(a), op.forward(v))
                elif dom.norm == "l2":
                    centre = op.forward(v)
                    shape = (-1, *([1] * (centre.dim() - 1)))
                    rad = dom.eps.view(shape) * op.linear_sq(a.square()).clamp(min=0).sqrt()
                    lo, hi = torch.maximum(lo, centre - rad), torch.minimum(hi, centre + rad)
        else:  # AddOp
            (l1, h1), (l2, h2) = (out[i] for i in node.inputs)
            lo, hi = l1 + l2, h1 + h2
        if refine is not None:
            better = refine(k, [*out, (lo, hi)])
            if better is not None:
                lo, hi = torch.maximum(lo, better[0]), torch.minimum(hi, better[1])
        out.append((lo, hi))
    return out


# ---- CROWN -------------------------------------------------------------------------------------


def _relu_relaxation(lo: Tensor, hi: Tensor, alpha: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of ReLU on [lo, hi], elementwise."""
    unstable = (lo < 0) & (hi > 0)
    active = (lo >= 0).to(lo.dtype)
    width = (hi - lo).clamp(min=1e-30)
    su = torch.where(unstable, hi / width, active)
    bu = torch.where(unstable, -su * lo, torch.zeros_like(lo))
    if alpha is None:
        a = (hi > -lo).to(lo.dtype)
    else:  # clipped to [0, 1] in value (soundness) with the gradient passed straight through
        a = alpha + (alpha.clamp(0, 1) - alpha).detach()
    sl = torch.where(unstable, a, active)
    return sl, su, bu


def _expand(t: Tensor) -> Tensor:
    """(B, *shape) -> (B, 1, *shape) to broadcast against coefficients (B, S, *shape)."""
    return t.unsqueeze(1)


def _sum(t: Tensor) -> Tensor:
    return t.flatten(2).sum(2)


def _dot(a: Tensor, v: Tensor) -> Tensor:
    """(B, S) = sum over the node of a (B, S, *shape) times v (B, *shape), without a temporary of a's size."""
    return torch.bmm(a.flatten(2), v.flatten(1).unsqueeze(2)).squeeze(2)


def _maxpool_backward(op: MaxPoolOp, a: Tensor, lo: Tensor, hi: Tensor, lower: bool) -> tuple[Tensor, Tensor]:
    """Coefficients on the pooling input and the constant term, for coefficients a on its output."""
    b, s = a.shape[:2]
    c = op.out_shape[0]
    lw, hw = op.windows(lo), op.windows(hi)  # (B, C, K, O)
    istar = lw.argmax(2)  # (B, C, O)
    hmax = hw.amax(2)
    others = hw.scatter(2, istar.unsqueeze(2), float("-inf")).amax(2)
    exact = (lw.gather(2, istar.unsqueeze(2)).squeeze(2) >= others).to(a.dtype)  # (B, C, O)
    av = a.reshape(b, s, c, -1)
    pos, neg = av.clamp(min=0), av.clamp(max=0)
    exact_, hmax_ = _expand(exact), _expand(hmax)
    if lower:  # positive coefficients take max's lower bound, negative ones its upper bound
        coef = pos + neg * exact_
        const = _sum(neg * (1 - exact_) * hmax_)
    else:
        coef = neg + pos * exact_
        const = _sum(pos * (1 - exact_) * hmax_)
    flat_idx = op.window.to(a.device)[istar, torch.arange(istar.shape[2], device=a.device)]  # (B, C, O)
    out = torch.zeros(b, s, c, math.prod(op.in_shape[1:]), dtype=a.dtype, device=a.device)
    out.scatter_add_(3, _expand(flat_idx).expand(b, s, c, -1), coef)
    return out.view(b, s, *op.in_shape), const


def backward_bounds(
    net: Network,
    bounds: list[Interval],
    start: int,
    spec: Tensor,
    dom: Domain,
    *,
    lower: bool = True,
    upper: bool = True,
    alphas: dict[int, Tensor] | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """CROWN bounds (B, S) of spec . node[start], spec of shape (B, S, *node shape) or (1, S, ...).

    A spec with batch dimension 1 (the same for every sample, e.g. the identity of intermediate
    bounds) stays unexpanded through the affine layers until the first ReLU or pooling layer.

    ``bounds`` must hold sound intervals for every node feeding a ReLU or max pooling upstream of
    ``start``; ``alphas`` (node -> lower slopes) replaces CROWN's adaptive slopes where given.
    """
    passes = [p for p, want in (("l", lower), ("u", upper)) if want]
    coef: dict[str, dict[int, Tensor]] = {p: {start: spec} for p in passes}
    const: dict[str, Tensor] = {p: torch.zeros(spec.shape[:2], dtype=spec.dtype, device=spec.device) for p in passes}
    result: dict[str, Tensor] = {}

    def push(p: str, i: int, a: Tensor) -> None:
        coef[p][i] = coef[p][i] + a if i in coef[p] else a

    batch = len(dom.x)
    for k in range(start, -1, -1):
        node = net.nodes[k]
        for p in passes:
            a = coef[p].pop(k, None)
            if a is None:
                continue
            is_lower = p == "l"
            op = node.op
            if a.shape[0] != batch and not isinstance(op, (Affine, Reshape)):
                a = a.expand(batch, *a.shape[1:])
            if k == 0:
                result[p] = dom.concretize(a, lower=is_lower) + const[p]
            elif isinstance(op, Affine):
                bt = op.bias_term(a)
                if bt is not None:
                    const[p] = const[p] + bt
                push(p, node.inputs[0], op.backward(a))
            elif isinstance(op, Reshape):
                push(p, node.inputs[0], op.backward(a))
            elif isinstance(op, ReLUOp):
                i = node.inputs[0]
                lo, hi = bounds[i]
                sl, su, bu = _relu_relaxation(lo, hi, None if alphas is None else alphas.get(k))
                pos = a.clamp(min=0)
                neg = a - pos
                if is_lower:
                    push(p, i, pos * _expand(sl) + neg * _expand(su))
                    const[p] = const[p] + _dot(neg, bu)
                else:
                    push(p, i, pos * _expand(su) + neg * _expand(sl))
                    const[p] = const[p] + _dot(pos, bu)
            elif isinstance(op, MaxPoolOp):
                i = node.inputs[0]
                a_in, c = _maxpool_backward(op, a, *bounds[i], lower=is_lower)
                const[p] = const[p] + c
                push(p, i, a_in)
            else:  # AddOp
                for i in node.inputs:
                    push(p, i, a)
    for p in passes:  # an output that does not depend on the input: a constant
        result.setdefault(p, const[p])
        result[p] = result[p].expand(batch, -1)
    return result.get("l"), result.get("u")


def _identity_spec(b: int, shape: tuple[int, ...], idx: Tensor, dtype: torch.dtype, device) -> Tensor:
    s = len(idx)
    spec = torch.zeros(b, s, math.prod(shape), dtype=dtype, device=device)
    spec[:, torch.arange(s, device=device), idx] = 1.0
    return spec.view(b, s, *shape)


def crown_intermediate(net: Network, dom: Domain, *, chunk_elements: int = CHUNK_ELEMENTS) -> list[Interval]:
    """Bounds of every node: IBP, with CROWN (intersected) on the pre-ReLU nodes IBP leaves unstable."""
    pre = net.pre_activation_nodes()
    exact = exact_nodes(net)
    widest = max(n.numel for n in net.nodes)

    def refine(k: int, bounds: list[Interval]) -> Interval | None:
        if k not in pre or k in exact:
            return None
        lo, hi = bounds[k]
        unstable = ((lo < 0) & (hi > 0)).flatten(1).any(0).nonzero().squeeze(1)
        if len(unstable) == 0:
            return None
        b = len(lo)
        shape = net.nodes[k].shape
        new_lo, new_hi = lo.flatten(1).clone(), hi.flatten(1).clone()
        step = max(1, chunk_elements // max(1, b * widest))
        for s in range(0, len(unstable), step):
            idx = unstable[s : s + step]
            spec = _identity_spec(1, shape, idx, lo.dtype, lo.device)
            lb, ub = backward_bounds(net, bounds, k, spec, dom)
            assert lb is not None and ub is not None
            new_lo[:, idx] = torch.maximum(new_lo[:, idx], lb)
            new_hi[:, idx] = torch.minimum(new_hi[:, idx], ub)
        return new_lo.view(b, *shape), new_hi.view(b, *shape)

    return ibp(net, dom, refine)


def margin_spec(y: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """(N, K, K): row j is e_y - e_j, so spec . z = z_y - z_j (row y is zero)."""
    eye = torch.eye(k, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def relu_nodes(net: Network) -> list[int]:
    return [k for k, n in enumerate(net.nodes) if isinstance(n.op, ReLUOp)]


def optimise_alpha(
    net: Network,
    bounds: list[Interval],
    spec: Tensor,
    dom: Domain,
    *,
    iterations: int,
    lr: float,
    initial: Tensor,
) -> Tensor:
    """alpha-CROWN lower bounds (B, S) on spec . output: the best over projected-Adam iterates of the slopes."""
    out = net.output
    alphas: dict[int, Tensor] = {}
    for k in relu_nodes(net):
        lo, hi = bounds[net.nodes[k].inputs[0]]
        alphas[k] = (hi > -lo).to(lo.dtype).detach().clone().requires_grad_(True)
    if not alphas or iterations < 1:
        return initial
    best = initial.detach().clone()
    opt = torch.optim.Adam(list(alphas.values()), lr=lr)
    for _ in range(iterations):
        with torch.enable_grad():
            lb, _ = backward_bounds(net, bounds, out, spec, dom, upper=False, alphas=alphas)
            assert lb is not None
            best = torch.maximum(best, lb.detach())
            opt.zero_grad(set_to_none=True)
            (-lb.sum()).backward()
        opt.step()
        with torch.no_grad():
            for t in alphas.values():
                t.clamp_(0, 1)
    with torch.no_grad():
        lb, _ = backward_bounds(net, bounds, out, spec, dom, upper=False, alphas=alphas)
        assert lb is not None
        best = torch.maximum(best, lb)
    return best


__all__ = [
    "Domain",
    "Interval",
    "backward_bounds",
    "crown_intermediate",
    "exact_nodes",
    "ibp",
    "margin_spec",
    "optimise_alpha",
]
