"""Test-only fault injection, for the crash-safety and storage tests; unset in normal use.

``HARNESS_TEST_KILL_AT=<point>[@N]`` SIGKILLs the process the N-th time (default 1) it reaches a
named point. Used to kill the CLI at exact places (mid-chunk, between chunks, while a file is being
written) and show that running the same command again resumes with identical results. Points:
``eval:attack`` (after each attack of a batch), ``eval:chunk`` (after each chunk is written),
``write:<file name>`` (a file's bytes are on disk under its temporary name, not yet renamed),
``train:step`` (after each optimiser step), ``train:epoch`` (after each epoch's state is written).

``HARNESS_TEST_OSERROR=<point>=<ERRNO>[@N]`` raises ``OSError(<ERRNO>)`` instead (``ENOSPC``,
``EROFS``, ``EACCES``, ...), as a full or read-only disk would, at: ``tmpfile:<file name>`` (creating
the temporary file of an atomic write), ``tmpdir`` (creating a temporary folder), ``mkdir:<folder
name>`` (creating a folder). ``<point>`` may be a glob (``tmpfile:*``). ``@N``: from the N-th hit on.

Unset, both hooks are an environment lookup and nothing else. A malformed value is a `UsageError`.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal

from harness.errors import UsageError

ENV = "HARNESS_TEST_KILL_AT"
OSERROR_ENV = "HARNESS_TEST_OSERROR"
_hits: dict[str, int] = {}


def _count(spec: str, var: str) -> int:
    try:
        n = int(spec)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(
            f"malformed {var}: the count after '@' must be a positive integer, not {spec!r}",
            f"unset {var} (a test-only setting)",
        )
    return n


def parse_kill_at(spec: str) -> tuple[str, int]:
    """``"<point>[@N]"`` -> (point, N)."""
    point, at, nth = spec.partition("@")
    if not point.strip():
        raise UsageError(f"malformed {ENV}={spec!r}: no point named", f"e.g. {ENV}=eval:chunk@2, or unset it")
    return point, _count(nth, ENV) if at else 1


def parse_oserror(spec: str) -> tuple[str, int, int]:
    """``"<point>=<ERRNO>[@N]"`` -> (point glob, errno number, N)."""
    point, eq, rest = spec.rpartition("=")
    name, at, nth = rest.partition("@")
    code = getattr(errno, name.strip(), None)
    if not eq or not point.strip() or not isinstance(code, int):
        raise UsageError(
            f"malformed {OSERROR_ENV}={spec!r}: expected <point>=<ERRNO>[@N]",
            f"e.g. {OSERROR_ENV}=tmpfile:*=ENOSPC, or unset it (a test-only setting)",
        )
    return point, code, _count(nth, OSERROR_ENV) if at else 1


def _hit(key: str) -> int:
    _hits[key] = _hits.get(key, 0) + 1
    return _hits[key]


def kill_point(name: str) -> None:
    """SIGKILL this process if ``HARNESS_TEST_KILL_AT`` names ``name`` and its hit count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, nth = parse_kill_at(spec)
    if point == name and _hit(name) >= nth:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_point(name: str, filename: str | os.PathLike[str] | None = None) -> None:
    """Raise ``OSError`` if ``HARNESS_TEST_OSERROR`` matches ``name`` (from its N-th hit on)."""
    spec = os.environ.get(OSERROR_ENV)
    if not spec:
        return
    point, code, nth = parse_oserror(spec)
    # Counted over every name the glob matches: ``tmpfile:*=ENOSPC@3`` fails the third temporary file on.
    if fnmatch.fnmatchcase(name, point) and _hit(f"oserror:{point}") >= nth:
        raise OSError(code, os.strerror(code), None if filename is None else os.fspath(filename))
