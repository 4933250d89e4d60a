"""The operations a verifier can bound: affine maps, ReLU, max pooling, reshapes and residual sums.

Every affine operation offers what the three verifiers need from it: the forward map (concrete and
interval), the transposed map for CROWN's backward pass (``A -> A W`` and ``A . b``) and its
matrix for the MILP. Parameters are read from the module on every call, in the dtype of the
argument, so a read network stays valid while the model trains and gradients reach the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import Tensor, nn

Shape = tuple[int, ...]


class Op:
    """One node's operation; ``in_shape``/``out_shape`` are per-sample shapes (no batch dimension)."""

    kind = "op"

    def __init__(self, in_shape: Shape, out_shape: Shape) -> None:
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)

    def forward(self, *xs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Affine(Op):
    """An affine map ``x -> W x + b`` of one input; subclasses define the linear part and the bias."""

    kind = "affine"

    def linear(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """W x (no bias), batched."""
        raise NotImplementedError

    def linear_abs(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """|W| x: the radius of an interval's image."""
        raise NotImplementedError

    def linear_sq(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """(W * W) x: squared L2 norms of W's rows when applied to a vector of ones."""
        raise NotImplementedError

    def bias(self, like: Tensor) -> Tensor | None:  # pragma: no cover - abstract
        """b broadcastable to (N, *out_shape), or None."""
        raise NotImplementedError

    def backward(self, a: Tensor) -> Tensor:  # pragma: no cover - abstract
        """A W for A of shape (B, S, *out_shape): the coefficients on the input, (B, S, *in_shape)."""
        raise NotImplementedError

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        out = self.linear(x)
        b = self.bias(x)
        return out if b is None else out + b

    def bias_term(self, a: Tensor) -> Tensor | None:
        """A . b summed over the output dimensions: (B, S), or None without a bias."""
        b = self.bias(a)
        if b is None:
            return None
        return a.flatten(2) @ b.expand(1, *self.out_shape).reshape(-1)

    def matrix(self, chunk: int = 1024) -> tuple[sparse.csr_matrix, np.ndarray]:
        """(W, b) in float64 for the MILP: W sparse (n_out, n_in), b dense (n_out,).

        Built by applying the linear part to the unit vectors (in chunks): exact for linear and
        convolution layers, whose entries are single products with 1.0.
        """
        n_in = math.prod(self.in_shape)
        dev = _device_of(self)
        cols = []
        with torch.no_grad():
            for s in range(0, n_in, chunk):
                m = min(chunk, n_in - s)
                eye = torch.zeros(m, n_in, dtype=torch.float64, device=dev)
                eye[torch.arange(m), torch.arange(s, s + m)] = 1.0
                out = self.linear(eye.view(m, *self.in_shape)).reshape(m, -1).cpu().numpy()
                cols.append(sparse.csr_matrix(out.T))
            zero = torch.zeros(1, *self.in_shape, dtype=torch.float64, device=dev)
            b = self.bias(zero)
            bias = np.zeros(math.prod(self.out_shape)) if b is None else b.expand(1, *self.out_shape).reshape(-1)
            if isinstance(bias, Tensor):
                bias = bias.detach().cpu().numpy().astype(np.float64)
        return sparse.hstack(cols).tocsr(), np.asarray(bias, dtype=np.float64)


def _device_of(op: Op) -> torch.device:
    mod = getattr(op, "module", None)
    if mod is not None:
        for t in list(mod.parameters()) + list(mod.buffers()):
            return t.device
    return torch.device("cpu")


def _cast(t: Tensor | None, like: Tensor) -> Tensor | None:
    return None if t is None else t.to(dtype=like.dtype, device=like.device)


class LinearOp(Affine):
    """``nn.Linear`` (acting on the last dimension)."""

    def __init__(self, module: nn.Linear, in_shape: Shape, out_shape: Shape) -> None:
        super().__init__(in_shape, out_shape)
        self.module = module

    def _w(self, like: Tensor) -> Tensor:
        return self.module.weight.to(dtype=like.dtype, device=like.device)

    def linear(self, x: Tensor) -> Tensor:
        return x @ self._w(x).T

    def linear_abs(self, x: Tensor) -> Tensor:
        return x @ self._w(x).abs().T

    def linear_sq(self, x: Tensor) -> Tensor:
        return x @ self._w(x).square().T

    def bias(self, like: Tensor) -> Tensor | None:
        return _cast(self.module.bias, like)

    def backward(self, a: Tensor) -> Tensor:
        return a @ self._w(a)


class ConvOp(Affine):
    """``nn.Conv2d`` with zero padding; the backward map is the transposed convolution."""

    def __init__(self, module: nn.Conv2d, padding: tuple[int, int], in_shape: Shape, out_shape: Shape) -> None:
        super().__init__(in_shape, out_shape)
        self.module = module
        self.padding = padding
        self.stride = tuple(module.stride)
        self.dilation = tuple(module.dilation)
        self.groups = module.groups
        k = module.kernel_size
        # conv_transpose2d needs the rows/columns that the forward stride dropped at the far edge.
        self.output_padding = tuple(
            in_shape[1 + i]
            - ((out_shape[1 + i] - 1) * self.stride[i] - 2 * padding[i] + self.dilation[i] * (k[i] - 1) + 1)
            for i in range(2)
        )

    def _w(self, like: Tensor) -> Tensor:
        return self.module.weight.to(dtype=like.dtype, device=like.device)

    def _conv(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def linear(self, x: Tensor) -> Tensor:
        return self._conv(x, self._w(x))

    def linear_abs(self, x: Tensor) -> Tensor:
        return self._conv(x, self._w(x).abs())

    def linear_sq(self, x: Tensor) -> Tensor:
        return self._conv(x, self._w(x).square())

    def bias(self, like: Tensor) -> Tensor | None:
        b = _cast(self.module.bias, like)
        return None if b is None else b.view(1, -1, 1, 1)

    def backward(self, a: Tensor) -> Tensor:
        b, s = a.shape[:2]
        out = F.conv_transpose2d(
            a.reshape(b * s, *self.out_shape),
            self._w(a),
            None,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )
        return out.view(b, s, *self.in_shape)


class ChannelAffine(Affine):
    """``x * scale + shift`` per channel (dimension 1): eval-mode batch norm and the normalisation wrapper."""

    def __init__(
        self, params: Callable[[Tensor], tuple[Tensor, Tensor]], shape: Shape, module: nn.Module | None = None
    ) -> None:
        super().__init__(shape, shape)
        self.params = params  # like -> (scale (C,), shift (C,)) in like's dtype
        self.module = module

    def _view(self, t: Tensor) -> Tensor:
        return t.view(-1, *([1] * (len(self.out_shape) - 1)))

    def linear(self, x: Tensor) -> Tensor:
        return x * self._view(self.params(x)[0])

    def linear_abs(self, x: Tensor) -> Tensor:
        return x * self._view(self.params(x)[0]).abs()

    def linear_sq(self, x: Tensor) -> Tensor:
        return x * self._view(self.params(x)[0]).square()

    def bias(self, like: Tensor) -> Tensor | None:
        return self._view(self.params(like)[1]).unsqueeze(0)

    def backward(self, a: Tensor) -> Tensor:
        return a * self._view(self.params(a)[0])


class AvgPoolOp(Affine):
    """Average pooling (zero padding counted in the divisor): a depthwise convolution with weight 1/k."""

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        in_shape: Shape,
        out_shape: Shape,
    ) -> None:
        super().__init__(in_shape, out_shape)
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.output_padding = tuple(
            in_shape[1 + i] - ((out_shape[1 + i] - 1) * stride[i] - 2 * padding[i] + kernel[i]) for i in range(2)
        )

    def linear(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, count_include_pad=True)

    def linear_abs(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def linear_sq(self, x: Tensor) -> Tensor:
        return self.linear(x) / (self.kernel[0] * self.kernel[1])

    def bias(self, like: Tensor) -> Tensor | None:
        return None

    def backward(self, a: Tensor) -> Tensor:
        b, s = a.shape[:2]
        c = self.out_shape[0]
        w = torch.full((c, 1, *self.kernel), 1.0 / (self.kernel[0] * self.kernel[1]), dtype=a.dtype, device=a.device)
        out = F.conv_transpose2d(
            a.reshape(b * s, *self.out_shape), w, None, self.stride, self.padding, self.output_padding, c
        )
        return out.view(b, s, *self.in_shape)


class Reshape(Op):
    """Flatten, view, reshape, identity and eval-mode dropout: the values are unchanged."""

    kind = "reshape"

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x.reshape(len(x), *self.out_shape)

    def backward(self, a: Tensor) -> Tensor:
        return a.reshape(*a.shape[:2], *self.in_shape)


class ReLUOp(Op):
    """max(x, 0), elementwise."""

    kind = "relu"

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x.clamp_min(0)


class MaxPoolOp(Op):
    """Max pooling without padding (any kernel and stride); windows are read with ``unfold``."""

    kind = "maxpool"

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], in_shape: Shape, out_shape: Shape) -> None:
        super().__init__(in_shape, out_shape)
        self.kernel, self.stride = kernel, stride
        _c, h, w = in_shape
        # window[k, o] = flat index (within one channel) of the k-th element of output position o
        idx = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
        self.window = F.unfold(idx, kernel, stride=stride).round().long()[0]  # (kh*kw, Ho*Wo)

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return F.max_pool2d(x, self.kernel, self.stride)

    def windows(self, t: Tensor) -> Tensor:
        """(N, C, kh*kw, Ho*Wo): the elements of every pooling window."""
        n, c = t.shape[:2]
        flat = t.reshape(n, c, -1)
        win = self.window.to(t.device)
        return flat[:, :, win]


class AddOp(Op):
    """The sum of two nodes of the same shape (a residual connection)."""

    kind = "add"

    def forward(self, *xs: Tensor) -> Tensor:
        a, b = xs
        return a + b


class InputOp(Op):
    """The network's input (images in [0, 1])."""

    kind = "input"

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x
