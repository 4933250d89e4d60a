import pickle

import numpy as np
import pytest
import torch

from harness.api import load_dataset
from harness.data import check_image_range
from harness.errors import DataError


def test_digits_split_is_fixed_stratified_and_documented_sizes():
    test, train, full = load_dataset("digits"), load_dataset("digits:split=train"), load_dataset("digits:split=all")
    assert (len(test), len(train), len(full)) == (539, 1258, 1797)
    assert set(test.ids.tolist()).isdisjoint(train.ids.tolist())
    assert test.shape == (1, 8, 8) and test.num_classes == 10
    x, _ = test.batch(slice(None))
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    counts = test.class_counts()
    assert int(counts.min()) >= 50  # stratified: every class ~30 % of its samples
    assert test.content_hash() == load_dataset("digits").content_hash()


def test_digits_upsampled_keeps_ids():
    big = load_dataset("digits:size=32,channels=3")
    assert big.shape == (3, 32, 32)
    assert torch.equal(big.ids, load_dataset("digits").ids)


def test_synthetic_is_seeded_and_shaped():
    a = load_dataset("synthetic:n=64,channels=1,size=12,num_classes=4,seed=3")
    b = load_dataset("synthetic:n=64,channels=1,size=12,num_classes=4,seed=3")
    assert a.shape == (1, 12, 12) and a.num_classes == 4
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != load_dataset("synthetic:n=64,channels=1,size=12,num_classes=4,seed=4").content_hash()


def _cifar_arrays(n, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (n, 3072), dtype=np.uint8), rng.randint(0, 10, n)


def _write_bin(path, data, labels):
    rec = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
    path.write_bytes(rec.tobytes())


def test_cifar10_binary_format(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    data, labels = _cifar_arrays(7)
    _write_bin(d / "test_batch.bin", data, labels)
    ds = load_dataset(f"cifar10:root='{tmp_path}'")
    assert len(ds) == 7 and ds.shape == (3, 32, 32)
    x, y = ds.batch(slice(None))
    assert torch.equal(y, torch.tensor(labels))
    np.testing.assert_allclose(x[2].numpy().ravel(), data[2] / 255.0, atol=1e-7)


def test_cifar10_python_format_through_restricted_unpickler(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    data, labels = _cifar_arrays(5, 1)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels.tolist()}, protocol=2))
    ds = load_dataset("cifar10", root=str(tmp_path))
    x, y = ds.batch(slice(None))
    assert y.tolist() == labels.tolist()
    np.testing.assert_allclose(x[4].numpy().ravel(), data[4] / 255.0, atol=1e-7)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/should_not_exist",))


def test_restricted_unpickler_refuses_arbitrary_objects(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="refused"):
        load_dataset("cifar10", root=str(tmp_path))


def test_missing_folder_names_expected_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root=str(tmp_path / "nowhere"))
    assert "test_batch.bin" in str(e.value) and "cifar-10-batches-py" in str(e.value)


def test_truncated_binary_is_a_clear_error(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    data, labels = _cifar_arrays(3)
    _write_bin(d / "test_batch.bin", data, labels)
    raw = (d / "test_batch.bin").read_bytes()
    (d / "test_batch.bin").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.RandomState(0)
    data = rng.randint(0, 256, (6, 3072), dtype=np.uint8)
    fine = np.array([0, 1, 2, 3, 4, 99])
    coarse = np.array([4, 1, 14, 8, 0, 19])
    (d / "test").write_bytes(
        pickle.dumps({b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()})
    )
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert ds.num_classes == 100 and ds.info["coarse_labels_of_fine"][99] == 19
    assert load_dataset("cifar100", root=str(tmp_path), labels="coarse").num_classes == 20


def test_image_range_check_explains_0_255_input():
    with pytest.raises(DataError, match="divide by 255"):
        check_image_range(torch.full((2, 1, 4, 4), 200.0))
    with pytest.raises(DataError, match="NaN"):
        check_image_range(torch.full((2, 1, 4, 4), float("nan")))
