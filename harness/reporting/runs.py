"""Finding run folders (each holds a result.json) and loading their results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.results import Result


@dataclass
class Run:
    """A loaded run: its folder (None for an in-memory result) and its `Result`."""

    path: Path | None
    result: Result

    @property
    def records(self) -> Path | None:
        """The per-sample record folder, when the run kept one."""
        if self.path is None:
            return None
        d = self.path / (self.result.record.get("path") or "records")
        return d if (d / "index.json").is_file() else None


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders under ``paths``: a folder with result.json is a run; otherwise its subfolders are searched.

    A path to a result.json file is also accepted. Order follows the arguments, then sorted names.
    """
    if not paths:
        raise UsageError("no run folders given", "pass one or more folders that hold result.json (or contain runs)")
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "result.json":
            found = [p.parent]
        elif (p / "result.json").is_file():
            found = [p]
        elif p.is_dir():
            found = sorted({r.parent for r in p.rglob("result.json")})
        else:
            raise UsageError(f"{p} does not exist", "pass a run folder (it holds result.json) or a folder of runs")
        if not found:
            raise UsageError(f"no result.json under {p}", "run `harness evaluate` or `harness run` first")
        out += [f for f in found if f not in out]
    return out


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Load every run found under ``paths`` (see `find_runs`)."""
    return [Run(p, Result.load(p / "result.json")) for p in find_runs(paths)]
