"""Long runs stay bounded: a 20 000-sample evaluation streams its record instead of holding it.

Memory is read from /proc/self/status (peak RSS, reset through /proc/self/clear_refs where the
kernel allows it, else sampled current RSS), so no psutil is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.base import ImageDataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class NearestMean(torch.nn.Module):
    """Linear classifier from class means: logits_k = <x, mu_k> - |mu_k|^2 / 2."""

    def __init__(self, means: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(means.flatten(1).clone())
        self.b = torch.nn.Parameter(-0.5 * (self.w.detach() ** 2).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


@pytest.mark.slow
def test_twenty_thousand_samples_keep_memory_flat(tmp_path):
    from harness.api import load_dataset
    from harness.engine import EvalConfig, evaluate

    n = 20_000
    src = load_dataset(f"synthetic:channels=1,size=8,n={n},noise=0.1")
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(n, 1, 8, 8))
    for s in range(0, n, 4096):
        mm[s : s + 4096] = (src.x[s : s + 4096] * 255).round().to(torch.uint8).numpy()
    mm.flush()
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    ds = ImageDataset("memmapped", x, src.y, 10, eps_grid=src.eps_grid)
    means = torch.stack(
        [torch.from_numpy(x[:4096][src.y[:4096].numpy() == k].astype(np.float32) / 255).mean(0) for k in range(10)]
    )
    model = NearestMean(means)
    cfg = EvalConfig(device="cpu", progress=False, batch_size=512, chunk_size=1000)

    small = evaluate(model, ds.subset(slice(0, 2000)), "quick", out=tmp_path, name="warm", config=cfg)
    assert small.clean.accuracy > 0.5  # the attacks have work to do
    peak_ok = _reset_peak()
    rss0 = _status_kb("VmRSS")
    res = evaluate(model, ds, "quick", out=tmp_path, name="big", config=cfg)
    grown_kb = (_status_kb("VmHWM") if peak_ok else _status_kb("VmRSS")) - rss0
    assert res.clean.n == n and len(list((tmp_path / "big" / "records").glob("chunk-*.npz"))) == 20
    # 10x the samples of the warm-up run; the record (about 1 MB here) lives on disk in 20 chunks,
    # and the working set is one chunk: growth stays far below what holding the data would need.
    print(f"RSS growth over a {n}-sample run: {grown_kb / 1024:.1f} MiB (peak measured: {peak_ok})")
    assert grown_kb < 40 * 1024, f"memory grew by {grown_kb / 1024:.1f} MiB"
