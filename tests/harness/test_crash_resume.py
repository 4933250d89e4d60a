"""Crash safety: the CLI SIGKILLed at named points resumes to results identical to an uninterrupted run.

The kill points come from the test-only hook `harness.faults` (``HARNESS_TEST_KILL_AT``).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from harness.atomic import lock_file
from harness.errors import RunLockedError
from tests.harness.cli_helpers import cli

DATA = "synthetic:channels=1,size=8,n=1000"
KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small MLP trained for 3 epochs on 8x8 synthetic data (a few seconds)."""
    from harness.api import train

    out = tmp_path_factory.mktemp("ckpt") / "mlp"
    train("ce", "mlp", "synthetic:channels=1,size=8,n=512", out=out, epochs=3, eval_samples=0, progress=False)
    return out.with_name("mlp.safetensors")


def _eval_args(ckpt: Path, out: Path) -> list[str]:
    return [
        "evaluate", ckpt, "--dataset", DATA, "--out", out, "--name", "r", "--chunk-size", "400",
        "--batch-size", "100", "--device", "cpu", "--no-progress",
    ]  # fmt: skip


def _records(run: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted((run / "records").glob("chunk-*.npz")):
        with np.load(p, allow_pickle=False) as z:
            out[p.name] = {k: z[k] for k in z.files}
    return out


def _accuracies(run: Path) -> dict:
    r = json.loads((run / "result.json").read_text())
    return {
        "clean": r["clean"],
        "groups": [(g["key"], g["accuracy"], [e["cumulative"] for e in g["entries"]]) for g in r["groups"]],
    }


def _assert_same_run(run: Path, ref: Path) -> None:
    a, b = _records(run), _records(ref)
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        assert a[name].keys() == b[name].keys()
        for col in a[name]:
            np.testing.assert_array_equal(a[name][col], b[name][col], err_msg=f"{name}:{col}")
    assert _accuracies(run) == _accuracies(ref)
    assert (run / "report.md").read_text().splitlines()[:3] == (ref / "report.md").read_text().splitlines()[:3]
    assert not list(run.rglob(".*.tmp")), "stale temporary files left after resume"


@pytest.mark.slow
def test_evaluate_killed_at_several_points_resumes_identically(checkpoint, tmp_path):
    ref = cli(*_eval_args(checkpoint, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "crash"
    run = out / "r"
    # 6 entries (FGSM and PGD at 3 eps) per batch of 100, 4 batches per chunk of 400.
    plan = [
        ("eval:attack@3", lambda: not list((run / "records").glob("chunk-*.json"))),  # first chunk, first batch
        ("eval:chunk@1", lambda: (run / "records" / "chunk-000000.json").is_file()),  # between chunks
        ("eval:attack@9", lambda: not (run / "records" / "chunk-000001.json").is_file()),  # between attacks
        ("write:result.json", lambda: list(run.glob(".result.json.*.tmp")) and not (run / "result.json").exists()),
        ("write:report.md", lambda: (run / "result.json").is_file() and not (run / "report.md").exists()),
    ]
    for point, state_ok in plan:
        p = cli(*_eval_args(checkpoint, out), kill_at=point)
        assert p.returncode == KILLED, (point, p.returncode, p.stderr[-2000:])
        assert state_ok(), point
    p = cli(*_eval_args(checkpoint, out))
    assert p.returncode == 0, p.stderr
    _assert_same_run(run, tmp_path / "ref" / "r")

    # Torn files (a truncated chunk, a truncated result.json) are detected and recomputed, never read.
    npz = run / "records" / "chunk-000001.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    (run / "result.json").write_text('{"schema_version": 1, "clean": ')
    p = cli(*_eval_args(checkpoint, out))
    assert p.returncode == 0, p.stderr
    _assert_same_run(run, tmp_path / "ref" / "r")


class _Interrupt(BaseException):
    pass


def test_evaluate_interrupted_in_process_resumes_identically(checkpoint, tmp_path, monkeypatch):
    """The fast in-process twin of the SIGKILL test: an interrupt after the first chunk, then resume."""
    import harness.engine.evaluation
    from harness.api import evaluate

    kw = dict(out=tmp_path, device="cpu", progress=False, chunk_size=100, batch_size=50, max_samples=200)
    ref = evaluate(checkpoint, DATA, name="ref", **kw)

    def interrupt(point: str) -> None:
        if point == "eval:chunk":
            raise _Interrupt

    monkeypatch.setattr(harness.engine.evaluation, "kill_point", interrupt)
    with pytest.raises(_Interrupt):
        evaluate(checkpoint, DATA, name="cut", **kw)
    assert len(list((tmp_path / "cut" / "records").glob("chunk-*.json"))) == 1
    monkeypatch.undo()
    res = evaluate(checkpoint, DATA, name="cut", **kw)
    assert res.clean == ref.clean and [g.accuracy for g in res.groups] == [g.accuracy for g in ref.groups]
    a, b = _records(tmp_path / "cut"), _records(tmp_path / "ref")
    assert a.keys() == b.keys()
    for name in a:
        for col in a[name]:
            np.testing.assert_array_equal(a[name][col], b[name][col])


def test_second_writer_gets_run_locked_error(checkpoint, tmp_path):
    from harness.api import evaluate

    run = tmp_path / "r"
    with lock_file(run / ".lock", "held by the test"):
        p = cli(*_eval_args(checkpoint, tmp_path))
        with pytest.raises(RunLockedError, match="another process"):
            evaluate(checkpoint, DATA, out=tmp_path, name="r", device="cpu", progress=False, max_samples=10)
    assert p.returncode == 2
    assert "another process is writing to" in p.stderr and "Traceback" not in p.stderr
    assert not (run / "records").exists() and not (run / "result.json").exists()


TRAIN = ["train", "--objective", "ce", "--model", "mlp", "--dataset", "synthetic:channels=1,size=8,n=256",
         "--epochs", "3", "--device", "cpu", "--no-progress", "--augment", "crop-flip"]  # fmt: skip


@pytest.mark.slow
def test_train_killed_resumes_to_bit_identical_weights(tmp_path):
    ref = cli(*TRAIN, "--out", tmp_path / "ref" / "m")
    assert ref.returncode == 0, ref.stderr
    stem = tmp_path / "crash" / "m"
    state = stem.with_name("m.state.pt")
    # 4 optimiser steps per epoch (256 samples, batch 64).
    plan = [
        ("train:step@2", lambda: not state.exists()),  # mid first epoch: nothing saved yet
        ("train:epoch@1", lambda: state.is_file()),  # first epoch's state written
        ("train:step@3", lambda: state.is_file()),  # mid second epoch (resumed from epoch 1)
        ("write:m.safetensors", lambda: state.is_file() and not stem.with_name("m.safetensors").exists()),
    ]
    for point, state_ok in plan:
        p = cli(*TRAIN, "--out", stem, kill_at=point)
        assert p.returncode == KILLED, (point, p.returncode, p.stderr[-2000:])
        assert state_ok(), point
    p = cli(*TRAIN, "--out", stem)
    assert p.returncode == 0, p.stderr
    assert stem.with_name("m.safetensors").read_bytes() == (tmp_path / "ref" / "m.safetensors").read_bytes()
    assert not state.exists() and not list(stem.parent.glob(".*.tmp"))

    def log(p: Path) -> list[list[str]]:
        rows = [line.split(",") for line in p.read_text().splitlines()]
        keep = [i for i, k in enumerate(rows[0]) if k != "seconds"]
        return [[r[i] for i in keep] for r in rows]

    assert log(stem.with_name("m.train.csv")) == log(tmp_path / "ref" / "m.train.csv")
