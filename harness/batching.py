"""Batch sizes: run work in slices that halve on out-of-memory, and find the largest slice that fits.

`BatchRunner` is the engine's one out-of-memory back-off; `autotune_batch_size` reuses it as its
failure signal, so probing and the evaluation itself recover from OOM the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# CPU has no out-of-memory signal to stop the growth at, and past a few hundred images a batch
# buys nothing on CPU, so the search stops here.
CPU_CAP = 512
AUTOTUNE_START = 32


def is_oom(e: BaseException) -> bool:
    """True for CUDA out-of-memory errors (the typed one and the RuntimeError older torch raises)."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


class BatchRunner:
    """Runs a function over slices of a batch, halving the slice size on out-of-memory and retrying."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = max(1, int(batch_size))
        self.backoffs = 0

    def map(self, fn: Callable[[slice], None], n: int) -> None:
        s = 0
        while s < n:
            sl = slice(s, min(n, s + self.batch_size))
            try:
                fn(sl)
            except Exception as e:
                if not is_oom(e) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                self.backoffs += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            s = sl.stop


def autotune_batch_size(step: Callable[[int], None], cap: int, start: int = AUTOTUNE_START) -> int:
    """The largest n <= ``cap`` for which ``step(n)`` (one forward+backward of n inputs) does not run out of memory.

    Doubles from ``start`` until a size fails or ``cap`` is reached, then bisects between the last
    size that fitted and the first that failed. Each probe runs through a `BatchRunner`: a probe
    fails when the runner had to halve, and the size it finished with is known to fit.
    """
    cap = max(1, int(cap))

    def fits(n: int) -> tuple[bool, int]:
        runner = BatchRunner(n)
        # Only the first slice probes; after a back-off the rest of the n need not be run.
        runner.map(lambda sl: step(sl.stop - sl.start) if sl.start == 0 else None, n)
        return runner.backoffs == 0, runner.batch_size

    lo, hi = 0, None
    n = min(max(1, start), cap)
    while True:
        ok, done = fits(n)
        if not ok:
            lo, hi = max(lo, done), n
            break
        lo = n
        if n == cap:
            return cap
        n = min(2 * n, cap)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, done = fits(mid)
        if ok:
            lo = mid
        else:
            lo, hi = max(lo, done), mid
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return lo
