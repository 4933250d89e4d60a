"""Run the CLI in a subprocess with this checkout first on the path (for crash and bad-input tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(
    *args: str,
    kill_at: str | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
):
    """``python -m harness *args``; ``kill_at``: the test-only HARNESS_TEST_KILL_AT hook; ``env``: more variables"""
    base = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    base.pop("HARNESS_TEST_KILL_AT", None)
    if kill_at:
        base["HARNESS_TEST_KILL_AT"] = kill_at
    env = {**base, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_inprocess(*args: object, capsys) -> tuple[int, str, str]:
    """The real entry point in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    import pytest

    from harness.cli.app import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err
