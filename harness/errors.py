"""One exception family for user mistakes: each says what was wrong and what to do.

The CLI maps every `HarnessError` to exit code 2 and one readable line; anything else is a
programming error and surfaces as a traceback.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A user-facing error: bad input, a missing file, a refused checkpoint."""

    exit_code = 2

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
    """A write failed (no space, permissions); earlier results are left intact."""


class SweepError(UsageError):
    """A sweep cannot be planned or did not finish: a glob matched nothing, no cells, failed cells."""
