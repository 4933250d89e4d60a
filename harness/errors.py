"""One exception family for user mistakes: each says what was wrong and what to do.

The CLI maps every `HarnessError` to exit code 2 and one readable line. Anything else is a
failure of the tool itself: exit code 3, one line, and the traceback in a log file (or on stderr
with ``harness --debug``). The full table is `ExitCode` (documented in docs/ci.md).
"""

from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    """What the `harness` command's exit status means, for every subcommand."""

    OK = 0  # success; for `harness check`: the gate passed
    REGRESSION = 1  # `harness check` only: a significant regression or a floor breach
    USAGE = 2  # a user or input error (`HarnessError`), or the environment refused (disk full, read-only)
    INTERNAL = 3  # an unexpected error inside the tool: a bug; the traceback is logged
    INTERRUPTED = 130  # Ctrl-C (SIGINT); finished work is kept and a rerun resumes


class HarnessError(Exception):
    """A user-facing error: bad input, a missing file, a refused checkpoint."""

    exit_code = int(ExitCode.USAGE)

    def __init__(self, what: str, hint: str | None = None) -> None:
        self.what = what
        self.hint = hint
        super().__init__(what if not hint else f"{what} — {hint}")


class UsageError(HarnessError):
    """Bad arguments: unknown names, invalid values, inconsistent options."""


class UnknownNameError(UsageError):
    """A registry lookup failed; the message lists the closest names."""


class DataError(HarnessError):
    """A dataset is missing, truncated, or not in the expected format."""


class CheckpointError(HarnessError):
    """A checkpoint is missing, corrupt, untrusted or does not fit its architecture."""


class ModelError(HarnessError):
    """The model breaks the contract: wrong output shape, non-finite logits, etc."""


class ThreatModelViolation(HarnessError):
    """An attack returned points outside its threat model (eps-ball, [0, 1], finite)."""


class RunLockedError(HarnessError):
    """Another process is writing to the same run directory."""


class StorageError(HarnessError):
    """A write failed (no space, permissions, a file where a folder must be); earlier results are left intact."""


class SweepError(UsageError):
    """A sweep cannot be planned or did not finish: a glob matched nothing, no cells, failed cells."""


# An unexpected exception carries the folder its process was working in (the locked run folder),
# so that the CLI can put the traceback log next to the run it broke.
_FOLDER_ATTR = "harness_work_folder"


def note_work_folder(exc: BaseException, folder: str | Path) -> None:
    """Record ``folder`` on ``exc`` unless an inner frame already did (the innermost folder wins)."""
    if getattr(exc, _FOLDER_ATTR, None) is None:
        try:
            setattr(exc, _FOLDER_ATTR, Path(folder))
        except (AttributeError, TypeError):  # exceptions with __slots__ cannot carry it
            pass


def work_folder(exc: BaseException) -> Path | None:
    """The folder `note_work_folder` recorded on ``exc``, if any."""
    folder = getattr(exc, _FOLDER_ATTR, None)
    return folder if isinstance(folder, Path) else None
