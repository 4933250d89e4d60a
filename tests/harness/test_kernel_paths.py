"""The batch-size promise under more than one CPU kernel path, whatever CPU runs the tests.

Each capability runs tests/harness/kernel_paths.py in its own process (``ATEN_CPU_CAPABILITY`` is
read once, when torch is imported): ``default`` (no vector instructions) and the best this machine
offers, so an AVX2 machine also exercises the scalar path and an AVX-512 machine both.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.dist_helpers import ROOT, cpu_capabilities, env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from harness.api import train

    out = tmp_path_factory.mktemp("kernel") / "cnn"
    train("ce", "cnn", "digits", out=out, epochs=4, seed=0, eval_samples=0, progress=False, device="cpu")
    return out.with_name("cnn.safetensors")


@pytest.mark.parametrize("capability", cpu_capabilities())
def test_same_verdicts_across_batch_sizes_on_this_kernel_path(capability, checkpoint, tmp_path):
    e = env(capability=capability)  # one thread: the multi-threaded path is the in-process tests' (conftest)
    cmd = [sys.executable, "-m", "tests.harness.kernel_paths", str(checkpoint), str(tmp_path)]
    p = subprocess.run(cmd, env=e, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["capability"].lower() == capability  # the variable took effect
    assert got["attacks"] == 8 and got["columns"] == 6


def test_gate_compares_verdicts_not_bits_across_batch_sizes(tmp_path):
    """A baseline made at one batch size passes a run at another: the gate pairs verdicts, sample by sample."""
    from harness.api import evaluate
    from harness.gate import compare, make_baseline, read_run
    from tests.harness.dist_helpers import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "mlp")
    for name, bs in (("base", 64), ("other", 7)):
        evaluate(ckpt, "digits", "quick", out=tmp_path, name=name, max_samples=96, batch_size=bs, progress=False)
    base = make_baseline(tmp_path / "base", dataset="digits")
    report = compare(read_run(tmp_path / "other"), base)
    assert report.passed and report.checks
    assert all(c.lost == c.gained == 0 for c in report.checks)
