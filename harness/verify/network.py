"""The network reader: an ``nn.Module`` as a graph of operations the verifiers can bound.

The model is traced with ``torch.fx`` (the harness's normalisation wrapper kept as one leaf) and
every node is mapped to an operation of `harness.verify.ops`; residual additions make the graph a
DAG. A layer the verifiers cannot bound is an error that names the layer (qualified name and type)
and the model, never skipped. The read network is checked against the model: both forward passes
must agree on the batch it was read with, so a misread layer cannot go unnoticed.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from harness.errors import ModelError
from harness.models import Normalize

from .ops import (
    AddOp,
    Affine,
    AvgPoolOp,
    ChannelAffine,
    ConvOp,
    InputOp,
    LinearOp,
    MaxPoolOp,
    Op,
    ReLUOp,
    Reshape,
)

SUPPORTED = (
    "Linear, Conv2d (zero padding), ReLU, Flatten/view/reshape, AvgPool2d, AdaptiveAvgPool2d (evenly dividing), "
    "MaxPool2d and AdaptiveMaxPool2d (no padding), BatchNorm in eval mode, Dropout/Identity in eval mode, "
    "the harness normalisation wrapper, and sums of two branches (residual connections)"
)

_RELU_FUNCS = {F.relu, torch.relu, torch.relu_, F.relu_}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze"}


@dataclass
class Node:
    """One operation applied to earlier nodes (``inputs`` are indices into `Network.nodes`)."""

    op: Op
    inputs: tuple[int, ...]
    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        return self.op.out_shape

    @property
    def numel(self) -> int:
        return math.prod(self.op.out_shape)


class Network:
    """A read model: nodes in topological order, node 0 the input, the last node the logits."""

    def __init__(self, nodes: list[Node], model_name: str) -> None:
        self.nodes = nodes
        self.model_name = model_name
        self.consumers: list[list[int]] = [[] for _ in nodes]
        for k, node in enumerate(nodes):
            for i in node.inputs:
                self.consumers[i].append(k)

    @property
    def output(self) -> int:
        return len(self.nodes) - 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    def forward(self, x: Tensor) -> Tensor:
        """The model's function evaluated through the read operations (for checks and tests)."""
        vals: list[Tensor] = []
        for node in self.nodes:
            vals.append(node.op.forward(x) if not node.inputs else node.op.forward(*(vals[i] for i in node.inputs)))
        return vals[-1]

    def relu_count(self) -> int:
        return sum(n.numel for n in self.nodes if isinstance(n.op, ReLUOp))

    def pre_activation_nodes(self) -> set[int]:
        """Nodes whose bounds a ReLU's relaxation uses."""
        return {n.inputs[0] for n in self.nodes if isinstance(n.op, ReLUOp)}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)


def _unsupported(model_name: str, where: str, what: str, why: str = "") -> ModelError:
    reason = f": {why}" if why else ""
    return ModelError(
        f"the verifier cannot bound layer {where!r} ({what}) of model {model_name}{reason}",
        f"supported: {SUPPORTED}",
    )


def read_network(model: nn.Module, x: Tensor, *, check: bool = True) -> Network:
    """Read ``model`` as a `Network` for inputs shaped like ``x`` (N, C, H, W); checked on ``x``."""
    name = type(model).__name__
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # tracing runs the model's Python code: any failure is the model's
        raise ModelError(
            f"the verifier cannot read model {name} as a static graph ({type(e).__name__}: {e})",
            "verifiers need a forward pass without data-dependent control flow",
        ) from None
    gm = fx.GraphModule(model, graph)
    modules = dict(model.named_modules())
    shapes = _propagate_shapes(gm, x, name)
    nodes: list[Node] = []
    index: dict[str, int] = {}
    out_node = None
    for n in graph.nodes:
        if n.op == "placeholder":
            if nodes:
                raise ModelError(f"model {name} takes more than one input", "verifiers bound models of one image batch")
            nodes.append(Node(InputOp(shapes[n.name], shapes[n.name]), (), "input"))
            index[n.name] = 0
            continue
        if n.op == "output":
            out_node = n.args[0]
            continue
        if n.name not in shapes:  # a non-tensor value (a size, a shape): only reshapes may consume it
            continue
        op, inputs, where = _convert(n, modules, shapes, index, name)
        if op is None:  # identity: alias the input
            index[n.name] = inputs[0]
            continue
        nodes.append(Node(op, inputs, where))
        index[n.name] = len(nodes) - 1
    if not isinstance(out_node, fx.Node) or out_node.name not in index:
        raise ModelError(f"model {name} does not return one logits tensor", "verifiers bound (N, K) logits")
    out = index[out_node.name]
    if out != len(nodes) - 1:  # the output is not the last node: drop what does not feed it
        nodes = _prune(nodes, out)
    if len(nodes[-1].shape) != 1:
        raise ModelError(f"model {name} returns shape {nodes[-1].shape} per sample, not (K,) logits")
    net = Network(nodes, name)
    if check:
        _check_agreement(model, net, x)
    return net


def _prune(nodes: list[Node], out: int) -> list[Node]:
    keep = {out}
    for k in range(out, -1, -1):
        if k in keep:
            keep.update(nodes[k].inputs)
    order = sorted(keep)
    remap = {old: new for new, old in enumerate(order)}
    return [Node(nodes[k].op, tuple(remap[i] for i in nodes[k].inputs), nodes[k].name) for k in order]


def _propagate_shapes(gm: fx.GraphModule, x: Tensor, name: str) -> dict[str, tuple[int, ...]]:
    """Per-sample output shapes of the tensor-valued nodes (one concrete run on ``x``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    env: dict[str, object] = {}
    n_batch = len(x)

    def load(a):
        return fx.node.map_arg(a, lambda nd: env[nd.name])

    modules = dict(gm.named_modules())
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                val: object = x
            elif node.op == "get_attr":
                val = _fetch_attr(gm, node.target)
            elif node.op == "call_function":
                val = node.target(*load(node.args), **load(node.kwargs))
            elif node.op == "call_method":
                self_obj, *rest = load(node.args)
                val = getattr(self_obj, node.target)(*rest, **load(node.kwargs))
            elif node.op == "call_module":
                val = modules[node.target](*load(node.args), **load(node.kwargs))
            else:
                continue
            env[node.name] = val
            if isinstance(val, Tensor) and node.op != "get_attr":
                if val.dim() == 0 or val.shape[0] != n_batch:
                    raise _unsupported(
                        name, str(node.target), node.op, f"it mixes samples (output shape {tuple(val.shape)})"
                    )
                shapes[node.name] = tuple(val.shape[1:])
    return shapes


def _fetch_attr(gm: nn.Module, target: str) -> object:
    obj: object = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)  # type: ignore[call-overload]


def _convert(n: fx.Node, modules: dict[str, nn.Module], shapes, index, name: str):
    """(op or None for identity, input node indices, qualified name) for one fx node."""
    out_shape = shapes[n.name]
    tensor_args = [a for a in n.args if isinstance(a, fx.Node) and a.name in shapes]
    where = str(n.target) if n.op == "call_module" else n.name

    def source(a: fx.Node) -> int:
        if a.name not in index:
            raise _unsupported(
                name, where, "an input computed from constants", "only layers of the input are supported"
            )
        return index[a.name]

    if n.op == "call_module":
        mod = modules[n.target]
        what = type(mod).__name__
        if not tensor_args:
            raise _unsupported(name, where, what, "no tensor input")
        inp = tensor_args[0]
        in_shape = shapes[inp.name]
        op = _module_op(mod, in_shape, out_shape, name, where)
        if op is None:
            return None, (source(inp),), where
        return op, (source(inp),), where
    if n.op == "call_function":
        fn = n.target
        fname = getattr(fn, "__name__", str(fn))
        if fn in _RELU_FUNCS:
            return ReLUOp(shapes[tensor_args[0].name], out_shape), (source(tensor_args[0]),), where
        if fn in _ADD_FUNCS:
            if len(tensor_args) != 2 or len(n.args) != 2 or n.kwargs:
                raise _unsupported(name, where, fname, "only the sum of two tensors of the network is supported")
            a, b = tensor_args
            if shapes[a.name] != out_shape or shapes[b.name] != out_shape:
                raise _unsupported(name, where, fname, "broadcasting sums are not supported")
            return AddOp(out_shape, out_shape), (source(a), source(b)), where
        if fn in _FLATTEN_FUNCS:
            return _reshape(tensor_args[0], shapes, out_shape, source)
        if fn is F.dropout:
            training = n.kwargs.get("training", n.args[2] if len(n.args) > 2 else True)
            if training:
                raise _unsupported(name, where, "dropout", "it is active (training mode)")
            return None, (source(tensor_args[0]),), where
        if fn in (F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d, F.adaptive_max_pool2d):
            mod = _functional_pool(n, fn)
            if mod is None:
                raise _unsupported(name, where, fname, "its arguments are not constants")
            in_shape = shapes[tensor_args[0].name]
            return _module_op(mod, in_shape, out_shape, name, where), (source(tensor_args[0]),), where
        raise _unsupported(name, where, f"function {fname}")
    if n.op == "call_method":
        if n.target == "relu":
            return ReLUOp(shapes[tensor_args[0].name], out_shape), (source(tensor_args[0]),), where
        if n.target in _RESHAPE_METHODS:
            return _reshape(tensor_args[0], shapes, out_shape, source)
        if n.target in ("add", "__add__") and len(tensor_args) == 2 and len(n.args) == 2 and not n.kwargs:
            a, b = tensor_args
            if shapes[a.name] == shapes[b.name] == out_shape:
                return AddOp(out_shape, out_shape), (source(a), source(b)), where
        raise _unsupported(name, where, f"method .{n.target}()")
    raise _unsupported(name, where, f"{n.op} {n.target}")


def _reshape(inp: fx.Node, shapes, out_shape, source):
    in_shape = shapes[inp.name]
    if math.prod(in_shape) != math.prod(out_shape):  # pragma: no cover - torch would have failed
        raise ModelError(f"reshape from {in_shape} to {out_shape} changes the number of elements")
    if in_shape == out_shape:
        return None, (source(inp),), inp.name
    return Reshape(in_shape, out_shape), (source(inp),), inp.name


def _functional_pool(n: fx.Node, fn) -> nn.Module | None:
    args = list(n.args[1:])
    if any(isinstance(a, fx.Node) for a in args) or any(isinstance(v, fx.Node) for v in n.kwargs.values()):
        return None
    kw = dict(n.kwargs)
    if fn is F.adaptive_avg_pool2d:
        return nn.AdaptiveAvgPool2d(*args, **kw)
    if fn is F.adaptive_max_pool2d:
        kw.pop("return_indices", None)
        return nn.AdaptiveMaxPool2d(*args, **kw)
    if fn is F.avg_pool2d:
        return nn.AvgPool2d(*args, **kw)
    kw.pop("return_indices", None)
    return nn.MaxPool2d(*args, **kw)


def _module_op(mod: nn.Module, in_shape, out_shape, name: str, where: str) -> Op | None:
    """The operation of a leaf module; None for an identity."""
    what = repr(mod) if len(repr(mod)) < 120 else type(mod).__name__
    if isinstance(mod, nn.Linear):
        return LinearOp(mod, in_shape, out_shape)
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            raise _unsupported(name, where, what, f"padding mode {mod.padding_mode!r}")
        pad = mod.padding
        if isinstance(pad, str):
            if pad == "valid":
                pad = (0, 0)
            else:  # 'same' with stride 1: symmetric when the dilated kernel is odd
                total = [mod.dilation[i] * (mod.kernel_size[i] - 1) for i in range(2)]
                if any(t % 2 for t in total):
                    raise _unsupported(name, where, what, "padding='same' with an even kernel is asymmetric")
                pad = (total[0] // 2, total[1] // 2)
        return ConvOp(mod, _pair(pad), in_shape, out_shape)
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if mod.training or mod.running_mean is None or mod.running_var is None:
            raise _unsupported(
                name,
                where,
                what,
                "batch norm uses batch statistics (training mode or no running statistics); call model.eval()",
            )
        return ChannelAffine(_bn_params(mod), out_shape, mod)
    if isinstance(mod, Normalize):
        return ChannelAffine(_normalize_params(mod), out_shape, mod)
    if isinstance(mod, nn.ReLU):
        return ReLUOp(in_shape, out_shape)
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return Reshape(in_shape, out_shape) if in_shape != out_shape else None
    if isinstance(mod, nn.Identity):
        return None
    if isinstance(mod, (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)):
        if mod.training and mod.p > 0:
            raise _unsupported(name, where, what, "dropout is active (training mode); call model.eval()")
        return None
    if isinstance(mod, nn.AvgPool2d):
        if mod.ceil_mode or mod.divisor_override is not None:
            raise _unsupported(name, where, what, "ceil_mode and divisor_override are not supported")
        pad = _pair(mod.padding)
        if any(pad) and not mod.count_include_pad:
            raise _unsupported(name, where, what, "padding not counted in the divisor is not supported")
        k = _pair(mod.kernel_size)
        s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        return AvgPoolOp(k, s, pad, in_shape, out_shape)
    if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        h, w = in_shape[1], in_shape[2]
        ho, wo = out_shape[1], out_shape[2]
        if h % ho or w % wo:
            raise _unsupported(name, where, what, f"{h}x{w} -> {ho}x{wo} pools windows of unequal size")
        k = (h // ho, w // wo)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return AvgPoolOp(k, k, (0, 0), in_shape, out_shape)
        return MaxPoolOp(k, k, in_shape, out_shape)
    if isinstance(mod, nn.MaxPool2d):
        if any(_pair(mod.padding)) or _pair(mod.dilation) != (1, 1) or mod.ceil_mode:
            raise _unsupported(name, where, what, "max pooling with padding, dilation or ceil_mode")
        k = _pair(mod.kernel_size)
        s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        return MaxPoolOp(k, s, in_shape, out_shape)
    raise _unsupported(name, where, what)


def _bn_params(mod: nn.modules.batchnorm._BatchNorm):
    def params(like: Tensor) -> tuple[Tensor, Tensor]:
        var = mod.running_var.to(dtype=like.dtype, device=like.device)  # type: ignore[union-attr]
        mean = mod.running_mean.to(dtype=like.dtype, device=like.device)  # type: ignore[union-attr]
        scale = 1.0 / torch.sqrt(var + mod.eps)
        shift = -mean * scale
        if mod.weight is not None:
            w = mod.weight.to(dtype=like.dtype, device=like.device)
            scale, shift = scale * w, shift * w
        if mod.bias is not None:
            shift = shift + mod.bias.to(dtype=like.dtype, device=like.device)
        return scale, shift

    return params


def _normalize_params(mod: Normalize):
    def params(like: Tensor) -> tuple[Tensor, Tensor]:
        mean = mod.mean.to(dtype=like.dtype, device=like.device).flatten()
        std = mod.std.to(dtype=like.dtype, device=like.device).flatten()
        return 1.0 / std, -mean / std

    return params


def _check_agreement(model: nn.Module, net: Network, x: Tensor) -> None:
    """The read network must compute the model's logits (fp32 tolerance) on the batch it was read with."""
    with torch.no_grad():
        ref = model(x)
        got = net.forward(x.to(ref.dtype))
    if ref.shape != got.shape:
        raise ModelError(
            f"the read network of model {net.model_name} returns {tuple(got.shape)}, not {tuple(ref.shape)}"
        )
    # Points with non-finite logits are judged by the verdict (never verified), not here.
    finite = torch.isfinite(ref)
    ref, got = ref[finite], got[finite]
    if ref.numel() == 0:
        return
    scale = 1.0 + ref.abs().amax()
    err = (ref - got).abs().amax()
    if not bool(err <= 1e-4 * scale):  # NaN disagrees too
        raise ModelError(
            f"the read network of model {net.model_name} disagrees with its forward pass (max difference "
            f"{float(err):.3g})",
            "the model does something the reader does not see (e.g. a hook or an unusual layer); it cannot be verified",
        )


__all__ = ["SUPPORTED", "Affine", "Network", "Node", "read_network"]
