"""CIFAR-10-C / CIFAR-100-C readers on tiny files written in the official layout."""

from __future__ import annotations

import numpy as np
import pytest

from harness.api import load_dataset
from harness.errors import DataError, UsageError

N = 6  # images per severity


@pytest.fixture
def root(tmp_path):
    rng = np.random.RandomState(0)
    # severity s has all pixels == 10 * s + image index, so the rows read can be checked exactly
    x = np.stack([np.full((32, 32, 3), 10 * s + i, np.uint8) for s in range(1, 6) for i in range(N)])
    labels = np.tile(rng.randint(0, 10, N), 5).astype(np.uint8)  # official labels.npy: 5 stacked copies
    np.save(tmp_path / "fog.npy", x)
    np.save(tmp_path / "labels.npy", labels)
    return tmp_path, labels[:N]


def test_reads_one_severity_memory_mapped(root):
    path, labels = root
    ds = load_dataset(f"cifar10c:root={path},corruption=fog,severity=3")
    assert len(ds) == N and ds.shape == (3, 32, 32) and ds.num_classes == 10
    assert isinstance(ds.x, np.memmap) or isinstance(getattr(ds.x, "base", None), np.memmap)
    x, y = ds.batch(np.arange(N))
    np.testing.assert_array_equal(y.numpy(), labels)
    np.testing.assert_allclose(x[:, 0, 0, 0].numpy(), (30 + np.arange(N)) / 255, rtol=0, atol=1e-7)
    assert ds.info == {"corruption": "fog", "severity": 3, "root": str(path)}
    ds100 = load_dataset(f"cifar100c:root={path},corruption=fog,severity=5")
    assert ds100.num_classes == 100 and float(ds100.batch(np.arange(1))[0].max()) == pytest.approx(50 / 255)


def test_missing_file_names_it(root):
    path, _ = root
    with pytest.raises(DataError, match=r"snow\.npy"):
        load_dataset(f"cifar10c:root={path},corruption=snow,severity=1")
    (path / "labels.npy").unlink()
    with pytest.raises(DataError, match=r"labels\.npy"):
        load_dataset(f"cifar10c:root={path},corruption=fog,severity=1")


def test_truncated_file_names_it(root):
    path, _ = root
    data = (path / "fog.npy").read_bytes()
    (path / "fog.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"fog\.npy"):
        load_dataset(f"cifar10c:root={path},corruption=fog,severity=1")


def test_wrong_count_and_bad_arguments(root):
    path, _ = root
    np.save(path / "fog.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"fog\.npy"):
        load_dataset(f"cifar10c:root={path},corruption=fog,severity=1")
    # Argument errors come from the declared parameters (harness/params.py), before any file is read.
    with pytest.raises(UsageError, match="severity = 6 is out of range"):
        load_dataset(f"cifar10c:root={path},corruption=fog,severity=6")
    with pytest.raises(UsageError, match="did you mean 'fog'"):
        load_dataset(f"cifar10c:root={path},corruption=fogg,severity=1")
