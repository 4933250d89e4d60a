"""Lazy datasets: .npy files read row by row and image folders decoded on demand; a dataset several
times larger than the RSS bound is evaluated without loading it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import evaluate, load_dataset
from harness.errors import DataError


def _npy(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return f"npy:x={tmp_path / 'x.npy'},y={tmp_path / 'y.npy'}"


def test_npy_channels_last_rows_and_subset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)  # NHWC like CIFAR-10-C
    y = rng.integers(0, 4, 50)
    ds = load_dataset(_npy(tmp_path, x, y))
    assert ds.shape == (3, 6, 5) and len(ds) == 50 and ds.num_classes == int(y.max()) + 1
    rows = np.array([7, 8, 9, 3, 40])
    xb, yb = ds.batch(rows)
    expect = torch.from_numpy(x[rows].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(xb, expect) and torch.equal(yb, torch.as_tensor(y[rows]))
    sub = ds.subset(slice(10, 20))
    assert type(sub.x).__name__ == "NpyRows"  # still lazy
    assert torch.equal(sub.batch(slice(0, 3))[0], ds.batch(slice(10, 13))[0])
    assert sub.ids.tolist() == list(range(10, 20))
    sev = load_dataset(_npy(tmp_path, x, y) + ",offset=20,n=10")
    assert sev.ids.tolist() == list(range(20, 30)) and torch.equal(
        sev.batch(slice(0, 10))[0], ds.batch(slice(20, 30))[0]
    )
    assert sev.content_hash() != sub.content_hash()


def test_npy_bad_input(tmp_path):
    x = np.zeros((10, 1, 4, 4), np.uint8)
    with pytest.raises(DataError, match="holds 9 labels"):
        load_dataset(_npy(tmp_path, x, np.zeros(9, np.int64)))
    spec = _npy(tmp_path, x, np.zeros(10, np.int64))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(spec)
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"not a \.npy"):
        load_dataset(spec)
    with pytest.raises(DataError, match="outside"):
        load_dataset(_npy(tmp_path, x, np.zeros(10, np.int64)) + ",offset=5,n=6")


def _image_folder(root: Path) -> dict[str, tuple[int, int, int]]:
    from PIL import Image

    colors = {}
    for c, (cls, col) in enumerate([("n01", (255, 0, 0)), ("n02", (0, 128, 255))]):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + 10 * i, 30), col).save(root / cls / f"img{i}.png")
            colors[f"{cls}/img{i}.png"] = col
    (root / "n02" / "notes.txt").write_text("not an image")
    return colors


def test_imagefolder_decodes_lazily_with_subset(tmp_path):
    colors = _image_folder(tmp_path / "val")
    ds = load_dataset(f"imagefolder:root={tmp_path / 'val'},size=16,resize=20")
    assert len(ds) == 6 and ds.shape == (3, 16, 16) and ds.class_names == ("n01", "n02")
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    xb, _ = ds.batch(np.array([0, 4]))
    assert torch.allclose(xb[0], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 16, 16))
    assert torch.allclose(xb[1], (torch.tensor([0, 128, 255]) / 255).view(3, 1, 1).expand(3, 16, 16), atol=1 / 255)
    listing = tmp_path / "subset.txt"
    listing.write_text("n02/img1.png\nn01/img2.png\n")
    sub = load_dataset(f"imagefolder:root={tmp_path / 'val'},subset={listing},size=16,resize=20")
    assert sub.y.tolist() == [1, 0] and sub.ids.tolist() == [0, 1]
    assert sub.content_hash() != ds.content_hash()
    assert colors["n02/img1.png"] == (0, 128, 255)
    listing.write_text("n02/missing.png\n")
    with pytest.raises(DataError, match="missing"):
        load_dataset(f"imagefolder:root={tmp_path / 'val'},subset={listing}")
    with pytest.raises(DataError, match="no image folder"):
        load_dataset(f"imagefolder:root={tmp_path / 'nope'}")


def _status(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) * 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_dataset_larger_than_the_memory_bound_is_streamed(tmp_path):
    n, shape = 17_100, (3, 64, 64)  # 210 MB of uint8 pixels
    bound = 60 * 2**20
    with open(tmp_path / "x.npy", "wb") as f:  # written block by block, never held in memory
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, *shape)})
        block = np.random.default_rng(0).integers(0, 256, (1024, *shape), dtype=np.uint8)
        for s in range(0, n, 1024):
            f.write(block[: min(1024, n - s)].tobytes())
    np.save(tmp_path / "y.npy", np.arange(n) % 10)
    size = (tmp_path / "x.npy").stat().st_size
    assert size > 3 * bound
    suite = tmp_path / "fgsm.toml"
    suite.write_text('summary = "FGSM only"\n[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.03\n')
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 10)).eval()
    ds = load_dataset(f"npy:x={tmp_path / 'x.npy'},y={tmp_path / 'y.npy'}")
    t0 = time.perf_counter()
    # warm-up on the first rows: imports (reporting, matplotlib) and the allocator's steady state
    evaluate(model, ds.subset(slice(0, 1024)), suite, out=tmp_path, name="warm", chunk_size=128, progress=False)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    base = _status("VmRSS")
    res = evaluate(model, ds, suite, out=tmp_path, name="big", chunk_size=128, batch_size=128, progress=False)
    growth = _status("VmHWM") - base
    assert res.clean.n == n
    assert growth < bound, f"peak RSS grew by {growth / 2**20:.0f} MB reading a {size / 2**20:.0f} MB dataset"
    assert time.perf_counter() - t0 < 60
