"""The progress of an evaluation people can plan by: samples done with the ETA of the run, and for the
chunk in work its own bar and ETA, the suite entry running and how many images of the batch are
still unbroken (alive) when it starts.

Updated once per batch and entry, never per attack step: the alive count is the one host sync it
adds, and only while a display is on (`Quiet` takes no count).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Quiet:
    """The display when progress is off: every call does nothing (and reads no tensor)."""

    def advance(self, k: int) -> None:
        pass

    def start_chunk(self, index: int, rows: int) -> None:
        pass

    def batch_done(self, k: int) -> None:
        pass

    def entry(self, text: str, alive: Any, batch: int) -> None:
        pass


class EvalProgress(Quiet):
    """Two rich bars: the whole evaluation (samples, ETA) and the chunk in work (entry, alive, ETA)."""

    def __init__(self, progress: Any, total: int, label: str, chunks: int) -> None:
        self.progress = progress
        self.chunks = chunks
        self.run = progress.add_task(f"evaluate {label}", total=total, status="")
        self.chunk = progress.add_task("chunk", total=1, status="", visible=False)

    def advance(self, k: int) -> None:
        self.progress.advance(self.run, k)

    def start_chunk(self, index: int, rows: int) -> None:
        self.progress.reset(self.chunk, total=rows, visible=True, description=f"chunk {index}/{self.chunks}")

    def batch_done(self, k: int) -> None:
        self.progress.advance(self.chunk, k)

    def entry(self, text: str, alive: Any, batch: int) -> None:
        """``text`` is starting on a batch of ``batch`` images of which ``alive`` (a count, or a boolean
        tensor) are still unbroken; one sync for a tensor, once per batch and entry."""
        n = int(alive.sum()) if hasattr(alive, "sum") else int(alive)
        self.progress.update(self.chunk, status=f"{text}: {n} of {batch} alive")


@contextlib.contextmanager
def evaluation_progress(enabled: bool, total: int, label: str, chunks: int = 1, console: Any = None) -> Iterator[Quiet]:
    """The display of one evaluation (`EvalProgress`), or `Quiet` when ``enabled`` is false."""
    if not enabled:
        yield Quiet()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=False,
        console=console,
    ) as prog:
        yield EvalProgress(prog, total, label, chunks)
