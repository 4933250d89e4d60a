"""Test-only fault injection: ``HARNESS_TEST_KILL_AT=<point>[@N]`` SIGKILLs the process at a named point.

Used by the crash-safety tests to kill the CLI at exact places (mid-chunk, between chunks, while a
file is being written) and show that running the same command again resumes with identical
results. ``@N`` kills at the N-th time the point is reached (default 1). Unset in normal use, where
`kill_point` is a dictionary lookup and nothing else. Points: ``eval:attack`` (after each attack of
a batch), ``eval:chunk`` (after each chunk is written), ``write:<file name>`` (a file's bytes are on
disk under its temporary name, not yet renamed), ``train:step`` (after each optimiser step),
``train:epoch`` (after each epoch's state is written).
"""

from __future__ import annotations

import os
import signal

ENV = "HARNESS_TEST_KILL_AT"
_hits: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``HARNESS_TEST_KILL_AT`` names ``name`` and its hit count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
