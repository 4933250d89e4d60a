"""Data-parallel evaluation: 2 gloo ranks under torchrun give the single-process record bit for bit;
batch size changes no verdict (margins to float rounding); a dying rank is named, a rerun computes
only the missing chunks, and torchrun --max-restarts recovers."""

from __future__ import annotations

import json

import pytest
import torch

from harness.api import evaluate
from harness.distributed import DistContext, diagnose, write_status
from tests.harness.dist_helpers import (
    assert_same_record,
    fault_plugin,
    harness,
    record_chunks,
    tiny_checkpoint,
    torchrun,
)

N, CHUNK = 256, 32  # 8 chunks: 4 per rank
SUITE = """
summary = "FGSM and PGD-10 with a random start at one L-inf eps (distributed tests)"
[[attack]]
name = "fgsm"
norm = "linf"
eps = 0.1
[[attack]]
name = "pgd"
norm = "linf"
eps = 0.1
params = { steps = 10, restarts = 1, loss = "ce" }
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    ckpt = tiny_checkpoint(root / "mlp")
    suite = root / "tiny.toml"
    suite.write_text(SUITE)
    with one_thread():
        evaluate(ckpt, "digits", suite, out=root, name="one", chunk_size=CHUNK, max_samples=N, progress=False)
    return root, ckpt, suite


class one_thread:
    """CPU matmul kernels split work across threads by batch shape (ulp-level differences between
    batch sizes); with one thread, as in the torchrun ranks (OMP_NUM_THREADS=1), they do not."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _args(ckpt, root, name, suite, *extra):
    base = ["evaluate", str(ckpt), "--out", str(root), "--name", name, "--suite", str(suite)]
    return [*base, "--chunk-size", str(CHUNK), "--no-progress", *extra]


def test_two_ranks_match_single_process(setup):
    root, ckpt, suite = setup
    p = torchrun(2, _args(ckpt, root, "two", suite, "--max-samples", str(N)))
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_record(root / "one", root / "two")
    one = json.loads((root / "one" / "result.json").read_text())
    two = json.loads((root / "two" / "result.json").read_text())
    assert one["clean"] == two["clean"]
    assert [g["accuracy"] for g in one["groups"]] == [g["accuracy"] for g in two["groups"]]
    assert two["extra"]["distributed"]["world_size"] == 2
    assert two["extra"]["distributed"]["chunks_per_rank"] == [4, 4]
    statuses = [json.loads((root / "two" / ".ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [s["state"] for s in statuses] == ["done", "done"]
    assert statuses[0]["chunks"] == [0, 2, 4, 6] and statuses[1]["chunks"] == [1, 3, 5, 7]


def test_batch_size_does_not_change_the_record(setup):
    root, ckpt, suite = setup
    with one_thread():
        evaluate(
            ckpt, "digits", suite, out=root, name="bs13", chunk_size=CHUNK, max_samples=N, batch_size=13, progress=False
        )
    assert_same_record(root / "one", root / "bs13", margin_rtol=1e-5)


def test_shard_is_balanced_and_covers_everything():
    todo = [3, 4, 7, 8, 9, 12, 15]
    shards = [DistContext(rank=r, world_size=3).shard(todo) for r in range(3)]
    assert sorted(x for s in shards for x in s) == todo
    assert [len(s) for s in shards] == [3, 2, 2]


def test_diagnose_names_failed_and_vanished_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LAUNCH_ID", "L1")
    write_status(tmp_path, 0, "terminated")
    write_status(tmp_path, 1, "running")
    assert "rank 1" in diagnose(tmp_path, 2, "L1") and "without reporting" in diagnose(tmp_path, 2, "L1")
    write_status(tmp_path, 1, "failed", error="DataError: bad file")
    assert diagnose(tmp_path, 2, "L1") == "rank 1 failed: DataError: bad file"
    assert diagnose(tmp_path, 2, "other-launch") is None  # status files of another launch are ignored


@pytest.mark.slow
def test_two_ranks_other_batch_size(setup):
    root, ckpt, suite = setup
    p = torchrun(2, _args(ckpt, root, "two-bs", suite, "--max-samples", str(N), "--batch-size", "7"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_record(root / "one", root / "two-bs", margin_rtol=1e-5)


@pytest.mark.slow
def test_dead_rank_is_named_and_rerun_computes_only_missing(setup, tmp_path):
    root, ckpt, suite = setup
    plug = fault_plugin(tmp_path / "plug")
    marker = tmp_path / "died"
    ds = f"fault-digits:die_rank=1,die_at={3 * CHUNK},marker={marker},n={N}"  # rank 1's 2nd chunk
    args = _args(ckpt, tmp_path, "faulty", suite, "--dataset", ds, "--nproc", "2")
    p = harness(args, extra_path=plug)
    assert p.returncode == 2, p.stderr[-3000:]
    assert marker.exists()
    assert "rank 1" in p.stderr and "stopped without reporting" in p.stderr, p.stderr[-3000:]
    assert "run the same command again" in p.stderr
    before = {q.name: q.stat().st_mtime_ns for q in (tmp_path / "faulty" / "records").glob("chunk-*.npz")}
    assert "chunk-000001.npz" in before and "chunk-000003.npz" not in before
    p = harness(args, extra_path=plug)
    assert p.returncode == 0, p.stderr[-3000:]
    after = {q.name: q.stat().st_mtime_ns for q in (tmp_path / "faulty" / "records").glob("chunk-*.npz")}
    assert len(after) == N // CHUNK
    assert all(after[k] == v for k, v in before.items())  # finished chunks were not recomputed
    assert_same_record(root / "one", tmp_path / "faulty")


@pytest.mark.slow
def test_max_restarts_recovers_in_one_command(setup, tmp_path):
    root, ckpt, suite = setup
    plug = fault_plugin(tmp_path / "plug")
    marker = tmp_path / "died"
    ds = f"fault-digits:die_rank=1,die_at={3 * CHUNK},marker={marker},n={N}"
    args = _args(ckpt, tmp_path, "restart", suite, "--dataset", ds, "--nproc", "2", "--max-restarts", "1")
    p = harness(args, extra_path=plug)
    assert p.returncode == 0, p.stderr[-3000:]
    assert marker.exists()
    st = json.loads((tmp_path / "restart" / ".ranks" / "rank-1.json").read_text())
    assert st["state"] == "done" and st["restart"] == "1"
    assert len(record_chunks(tmp_path / "restart")) == N // CHUNK
    assert_same_record(root / "one", tmp_path / "restart")
