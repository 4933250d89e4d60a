"""One runner per kind of suite entry (`EntryRunner`), looked up by the entry's kind.

A new kind of suite entry is a runner module here, its `EntryKind` (harness/records/kinds.py) and its
suite table (harness/suites); the chunk loop does not change (docs/architecture.md).
"""

from __future__ import annotations

from harness.engine.runners.attack import AttackRunner
from harness.engine.runners.base import Batch, Engine, EntryRunner, Scored
from harness.engine.runners.corruption import CorruptionRunner
from harness.engine.runners.radius import RadiusRunner
from harness.engine.runners.smoothing import SmoothingRunner
from harness.engine.runners.verify import VerifyRunner
from harness.errors import UsageError
from harness.records.kinds import ENTRY_KINDS

RUNNERS: dict[str, EntryRunner] = {
    r.kind: r for r in (AttackRunner(), CorruptionRunner(), SmoothingRunner(), VerifyRunner(), RadiusRunner())
}
assert set(RUNNERS) == set(ENTRY_KINDS), "every declared entry kind has exactly one runner"


def runner_for(kind: str) -> EntryRunner:
    """The runner of entries of ``kind``."""
    try:
        return RUNNERS[kind]
    except KeyError:
        raise UsageError(f"no runner for suite entry kind {kind!r}", f"known kinds: {', '.join(RUNNERS)}") from None


__all__ = [
    "RUNNERS",
    "AttackRunner",
    "Batch",
    "CorruptionRunner",
    "Engine",
    "EntryRunner",
    "RadiusRunner",
    "Scored",
    "SmoothingRunner",
    "VerifyRunner",
    "runner_for",
]
