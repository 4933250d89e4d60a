"""Counter-based random numbers keyed by (seed, stream, global sample index, element).

Every random draw of an evaluation (random starts, restarts, Square proposals, corruption noise,
smoothing noise) comes from here, so a sample's draws depend only on its global index and the
stream, never on batch size, batch position, resume point or number of processes. The generator is
a stateless integer hash evaluated with plain tensor ops on the data's device (no host sync, no
per-sample ``torch.Generator``).

The mixer is Chris Wellons' ``lowbias32`` (hash-prospector). Products are split into 16-bit halves
so no intermediate exceeds 2**48: int64 overflow never happens on any backend.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF
_M16 = 0xFFFF


def stream_seed(*parts: object) -> int:
    """A stable 32-bit seed from any tuple of strings/ints (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=4)
    return int.from_bytes(h.digest(), "little")


def _mul32(x: Tensor, c: int) -> Tensor:
    # (x * c) mod 2**32 without int64 overflow: x = hi * 2**16 + lo.
    hi = ((x >> 16) * c) & _M16
    return ((hi << 16) + (x & _M16) * c) & _M32


def mix32(x: Tensor) -> Tensor:
    """lowbias32 on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keyed_bits(seed: int, index: Tensor, numel: int) -> Tensor:
    """Uniform 32-bit integers, shape (len(index), numel), on ``index``'s device."""
    index = index.to(torch.int64)
    s = torch.tensor(seed & _M32, dtype=torch.int64, device=index.device)
    lo = index & _M32
    hi = (index >> 32) & _M32
    base = mix32(mix32(mix32(s ^ 0x9E3779B9) ^ lo) ^ mix32(hi + 0x85EBCA6B))
    j = mix32(torch.arange(numel, dtype=torch.int64, device=index.device) ^ 0x68E31DA4)
    return mix32(mix32(base[:, None] ^ j[None, :]) + 0x1B873593 & _M32)


def keyed_uniform(seed: int, index: Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """U(0, 1) (open interval) of shape (len(index), *shape), one independent stream per sample."""
    numel = math.prod(shape)
    bits = keyed_bits(seed, index, numel) >> 8  # 24 bits: exact in float32
    u = (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    return u.view(len(index), *shape).to(dtype)


def keyed_normal(seed: int, index: Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """N(0, 1) via Box-Muller from two keyed uniform streams."""
    u1 = keyed_uniform(stream_seed(seed, "normal-a"), index, shape)
    u2 = keyed_uniform(stream_seed(seed, "normal-b"), index, shape)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.to(dtype)


def keyed_randint(seed: int, index: Tensor, shape: tuple[int, ...], high: int | Tensor) -> Tensor:
    """Integers in [0, high) per sample; ``high`` may be a per-sample tensor."""
    u = keyed_uniform(seed, index, shape, torch.float64)
    if isinstance(high, Tensor):
        high = high.to(u.device, torch.float64).view(-1, *([1] * len(shape)))
    return torch.floor(u * high).to(torch.int64)


def torch_generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from ``parts`` (for training-time draws keyed by epoch/step)."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(*parts))
    return g
