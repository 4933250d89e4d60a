"""Helpers for the distributed, sweep and large-data tests: a tiny checkpoint, subprocess runs, record comparison."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.records import chunk_files

ROOT = Path(__file__).resolve().parents[2]


def tiny_checkpoint(path: Path, hidden: int = 32, steps: int = 60, seed: int = 0) -> Path:
    """A digits MLP trained full-batch for a few steps (about 1 s), saved as a harness checkpoint."""
    from harness.api import load_dataset
    from harness.models import create_model
    from harness.models.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(seed)
    ds = load_dataset("digits:split=train")
    x, y = ds.batch(slice(0, len(ds)))
    m = create_model("mlp", ds, hidden=(hidden,))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    args = {"hidden": [hidden], "in_channels": 1, "input_size": 8, "num_classes": 10}
    return save_checkpoint(path, m.eval(), CheckpointMeta("mlp", args, "digits", 10, [1, 8, 8], objective="ce"))


def env(extra_path: Path | None = None, capability: str | None = None) -> dict[str, str]:
    """The subprocess environment: this checkout first on the path, one thread, and a CPU capability if given."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(extra_path)] if extra_path else []))
    e["OMP_NUM_THREADS"] = "1"
    e["MKL_NUM_THREADS"] = "1"
    e.pop("GITHUB_STEP_SUMMARY", None)
    if capability is not None:
        e["ATEN_CPU_CAPABILITY"] = capability
    return e


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> list[str]:
    """``default`` (the scalar kernels) and the best capability torch picks on this machine, if other.

    The best is asked of a fresh interpreter without ATEN_CPU_CAPABILITY (the variable is read at import).
    """
    clean = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    p = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=120, check=True)
    best = p.stdout.strip().lower()
    return ["default"] + ([best] if best and best != "default" else [])


def harness(
    args: list[str],
    *,
    extra_path: Path | None = None,
    cwd: Path | None = None,
    timeout: int = 300,
    capability: str | None = None,
):
    """``python -m harness ARGS`` in a subprocess; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        env=env(extra_path, capability),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun(
    nproc: int, args: list[str], *, extra_path: Path | None = None, timeout: int = 300, capability: str | None = None
):
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m harness ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run(
        [*cmd, "-m", "harness", *args],
        env=env(extra_path, capability),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def record_chunks(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    return chunk_files(run_dir / "records")


def assert_same_record(a: Path, b: Path) -> None:
    """Bit-identical per-sample records, chunk by chunk and column by column (NaN equal to NaN).

    Promised only for the same batch plan and kernel configuration (CPU capability, threads per
    process, device), whatever the resume point, chunk order or number of ranks (docs/reliability.md).
    """
    ra, rb = record_chunks(a), record_chunks(b)
    assert ra and list(ra) == list(rb)
    for name in ra:
        assert sorted(ra[name]) == sorted(rb[name]), name
        for col in ra[name]:
            assert np.array_equal(ra[name][col], rb[name][col], equal_nan=True), (name, col)


def assert_same_verdicts(a: Path, b: Path) -> None:
    """Records of two batch plans or kernel configurations: the same ids, labels and verdicts.

    Every status (robust / broken / not attacked) and tie flag per sample and entry, and the clean
    verdict; floats (margins, calibration) and the adversarial points behind them are not compared:
    they differ with the kernel sums (docs/reliability.md).
    """
    ra, rb = record_chunks(a), record_chunks(b)
    assert ra and list(ra) == list(rb)
    for name in ra:
        x, y = ra[name], rb[name]
        for col in ("id", "label"):
            assert np.array_equal(x[col], y[col]), (name, col)
        assert np.array_equal(x["clean_pred"] == x["label"], y["clean_pred"] == y["label"]), (name, "clean")
        verdicts = [c for c in x if c[0] in "st" and c[1:].isdigit()]
        assert verdicts and sorted(verdicts) == sorted(c for c in y if c[0] in "st" and c[1:].isdigit())
        for col in verdicts:
            assert np.array_equal(x[col], y[col]), (name, col)


def fault_plugin(directory: Path) -> Path:
    """A `harness.plugins` entry point registering ``fault-digits``: digits whose rank DIE_RANK kills
    itself (SIGKILL, no cleanup) the first time it loads the chunk starting at ``die_at``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "faultplug.py").write_text(
        textwrap.dedent(
            '''
            import os, signal
            from pathlib import Path
            from harness.data.base import ImageDataset
            from harness.registry import DATASETS


            class Dying(ImageDataset):
                def batch(self, rows):
                    start = rows.start if isinstance(rows, slice) else int(rows[0])
                    marker = Path(self.info["marker"])
                    if (os.environ.get("RANK") == str(self.info["die_rank"]) and start == self.info["die_at"]
                            and not marker.exists()):
                        marker.write_text("died")
                        os.kill(os.getpid(), signal.SIGKILL)
                    return super().batch(rows)


            @DATASETS.register("fault-digits")
            def fault_digits(die_rank: int = 1, die_at: int = 64, marker: str = "died", n: int = 256):
                """Digits whose rank die_rank is killed when it first reads the chunk at die_at (tests)."""
                from harness.api import load_dataset

                d = load_dataset("digits").subset(slice(0, n))
                return Dying(d.name, d.x, d.y, d.num_classes, d.split, d.class_names, d.ids, d.eps_grid,
                             d.train_eps, {"die_rank": die_rank, "die_at": die_at, "marker": marker})
            '''
        )
    )
    info = directory / "faultplug-0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: faultplug\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[harness.plugins]\nfault = faultplug\n")
    return directory
