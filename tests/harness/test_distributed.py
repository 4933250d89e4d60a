"""Data-parallel evaluation: 2 gloo ranks under torchrun give the record of one process with the same
kernel configuration (CPU capability, one thread) bit for bit, under the scalar and the best CPU
capability; batch size changes no verdict; a dying rank is named, a rerun computes only the missing
chunks, torchrun --max-restarts recovers, and a failing launch says one line."""

from __future__ import annotations

import json
import os

import pytest
import torch

from harness.api import evaluate
from harness.distributed import (
    ERRORS_ENV,
    RESTART_ENV,
    DistContext,
    RankFailedError,
    diagnose,
    internal_exit_code,
    launch_error,
    reporting,
    write_status,
)
from harness.errors import DataError, UsageError
from tests.harness.dist_helpers import (
    assert_same_record,
    assert_same_verdicts,
    cpu_capabilities,
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
    """One thread, as each torchrun rank has (OMP_NUM_THREADS=1): the same kernel configuration, so
    the records match bit for bit (promise (a)); CPU kernels split sums by thread count."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _args(ckpt, root, name, suite, *extra):
    base = ["evaluate", str(ckpt), "--out", str(root), "--name", name, "--suite", str(suite)]
    return [*base, "--chunk-size", str(CHUNK), "--no-progress", *extra]


@pytest.mark.parametrize("capability", cpu_capabilities())
def test_two_ranks_match_single_process(setup, capability):
    """Promise (a) across rank counts: one process and 2 ranks, each with one thread, same capability."""
    root, ckpt, suite = setup
    one_dir, two_dir = root / f"one-{capability}", root / f"two-{capability}"
    p = harness(_args(ckpt, root, one_dir.name, suite, "--max-samples", str(N)), capability=capability)
    assert p.returncode == 0, p.stderr[-3000:]
    p = torchrun(2, _args(ckpt, root, two_dir.name, suite, "--max-samples", str(N)), capability=capability)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_record(one_dir, two_dir)
    one = json.loads((one_dir / "result.json").read_text())
    two = json.loads((two_dir / "result.json").read_text())
    assert one["config"]["cpu_capability"].lower() == two["config"]["cpu_capability"].lower() == capability
    assert one["clean"] == two["clean"]
    assert [g["accuracy"] for g in one["groups"]] == [g["accuracy"] for g in two["groups"]]
    assert two["extra"]["distributed"]["world_size"] == 2
    assert two["extra"]["distributed"]["chunks_per_rank"] == [4, 4]
    statuses = [json.loads((two_dir / ".ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [s["state"] for s in statuses] == ["done", "done"]
    assert statuses[0]["chunks"] == [0, 2, 4, 6] and statuses[1]["chunks"] == [1, 3, 5, 7]


def test_batch_size_does_not_change_the_record(setup):
    root, ckpt, suite = setup
    with one_thread():
        res = evaluate(
            ckpt, "digits", suite, out=root, name="bs13", chunk_size=CHUNK, max_samples=N, batch_size=13, progress=False
        )
    assert_same_verdicts(root / "one", root / "bs13")
    assert res.config["batch_plan"] == {"batch_size": 13, "used": [13], "per_chunk": [13] * (N // CHUNK)}


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


def test_statuses_of_an_earlier_attempt_do_not_count(tmp_path, monkeypatch):
    """After a torchrun restart, a status the killed attempt left names a process that is gone."""
    monkeypatch.setenv("HARNESS_LAUNCH_ID", "L1")
    monkeypatch.setenv(RESTART_ENV, "0")
    write_status(tmp_path, 0, "terminated")
    write_status(tmp_path, 1, "running")  # attempt 0's rank 1, then killed
    monkeypatch.setenv(RESTART_ENV, "1")
    write_status(tmp_path, 0, "running")
    cause = diagnose(tmp_path, 2, "L1", exclude=0, attempt=1)
    assert "rank 1 never reported of attempt 1" in cause and "pid" not in cause
    whole = diagnose(tmp_path, 2, "L1")  # the launcher's view: the latest attempt any rank wrote
    assert whole.startswith(f"rank 0 (pid {os.getpid()} on ") and whole.endswith(cause)


def test_diagnose_waits_for_the_new_rank_of_this_attempt(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("HARNESS_LAUNCH_ID", "L1")
    monkeypatch.setenv(RESTART_ENV, "0")
    write_status(tmp_path, 1, "running")  # left by attempt 0
    monkeypatch.setenv(RESTART_ENV, "1")
    late = threading.Timer(0.5, lambda: write_status(tmp_path, 1, "failed", error="DataError: bad file"))
    late.start()
    try:
        cause = diagnose(tmp_path, 2, "L1", exclude=0, attempt=1, wait_s=10)
    finally:
        late.join()
    assert cause == "rank 1 failed: DataError: bad file"


def _report(folder, monkeypatch, rank, attempt, error):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv(RESTART_ENV, str(attempt))
    monkeypatch.setenv(ERRORS_ENV, str(folder))

    def fail():
        raise error

    with pytest.raises(type(error)):
        reporting(fail)()


def test_launch_error_is_the_first_failure_of_the_last_attempt(tmp_path, monkeypatch):
    errs = tmp_path / "errors"
    errs.mkdir()
    _report(errs, monkeypatch, 1, 0, RuntimeError("boom in attempt 0"))
    _report(errs, monkeypatch, 1, 1, DataError("no file digits.npz", "put it in data/"))
    _report(errs, monkeypatch, 0, 1, UsageError("later, and another message"))
    e = launch_error(errs, tmp_path / "run", 2, "L1", 1, tmp_path / "stderr.log")
    assert isinstance(e, DataError) and e.exit_code == 2
    assert e.what == "rank 1: no file digits.npz" and e.hint == "put it in data/"


def test_launch_error_prefers_the_failing_rank_over_the_rank_relaying_it(tmp_path, monkeypatch):
    errs = tmp_path / "errors"
    errs.mkdir()
    _report(errs, monkeypatch, 0, 0, RankFailedError("distributed evaluation failed: rank 1 failed: bad"))
    _report(errs, monkeypatch, 1, 0, DataError("bad", "fix the file"))
    e = launch_error(errs, tmp_path / "run", 2, "L1", 1, tmp_path / "stderr.log")
    assert isinstance(e, DataError) and (e.what, e.hint) == ("rank 1: bad", "fix the file")


def test_launch_error_of_a_bug_keeps_the_internal_exit_code(tmp_path, monkeypatch):
    errs = tmp_path / "errors"
    errs.mkdir()
    _report(errs, monkeypatch, 0, 0, ValueError("shapes (3,) and (4,) not aligned\nmore text"))
    e = launch_error(errs, tmp_path / "run", 2, "L1", 1, tmp_path / "stderr.log")
    assert isinstance(e, RankFailedError) and e.exit_code == internal_exit_code() != 2
    assert e.what == "internal error on rank 0: ValueError: shapes (3,) and (4,) not aligned"
    assert "bug" in e.hint and str(tmp_path / "stderr.log") in e.hint


def test_same_user_error_on_every_rank_is_one_line_without_rank(tmp_path, monkeypatch):
    errs = tmp_path / "errors"
    errs.mkdir()
    for r in (0, 1):
        _report(errs, monkeypatch, r, 0, UsageError("unknown suite 'nosuch'", "run `harness list suites`"))
    e = launch_error(errs, tmp_path / "run", 2, "L1", 1, tmp_path / "stderr.log")
    assert (e.what, e.hint, e.exit_code) == ("unknown suite 'nosuch'", "run `harness list suites`", 2)


def test_nproc_user_error_is_one_line_and_exit_2(setup, tmp_path):
    """No rank tracebacks, no torchrun dump, no 'run the same command again' for a user's mistake."""
    _, ckpt, _ = setup
    p = harness(_args(ckpt, tmp_path, "bad", "nosuch", "--nproc", "2"))
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown suite 'nosuch'"), p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "torchrun" not in p.stderr and "same command" not in p.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_two_ranks_other_batch_size(setup):
    root, ckpt, suite = setup
    p = torchrun(2, _args(ckpt, root, "two-bs", suite, "--max-samples", str(N), "--batch-size", "7"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_verdicts(root / "one", root / "two-bs")


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
