"""Finding run folders (each holds a result.json) and loading their results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.paths import safe_join
from harness.records import check_result_matches_record
from harness.results import Result

# Written by `harness sweep` (also with --plan) in its output root: the cells of the sweep, in order.
SWEEP_MANIFEST = "sweep.json"


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

        d = safe_join(self.path, str(self.result.record.get("path") or "records"), what="record folder in result.json")
        return d if (d / "index.json").is_file() else None


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders under ``paths``: a folder with result.json is a run; otherwise its subfolders are searched.

    A path to a result.json file is also accepted. Order follows the arguments, then sorted names.
    A sweep's output root (it holds sweep.json) gives the finished cells of that sweep, in its order,
    so runs of an earlier sweep into the same root are left out.
    """
    if not paths:
        raise UsageError("no run folders given", "pass one or more folders that hold result.json (or contain runs)")
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "result.json":
            found = [p.parent]
        elif (p / "result.json").is_file():
            found = [p]
        elif (p / SWEEP_MANIFEST).is_file():
            found, missing = sweep_cells(p)
            if not found:
                raise UsageError(
                    f"none of the {len(missing)} cell(s) of the sweep in {p} has finished",
                    "run `harness sweep` again, or the commands of `harness sweep --plan`",
                )
        elif p.is_dir():
            # Hidden folders are the harness's own (e.g. an evaluation set aside by --overwrite).
            found = sorted(
                {r.parent for r in p.rglob("result.json") if not any(c.startswith(".") for c in r.relative_to(p).parts)}
            )
        else:
            raise UsageError(f"{p} does not exist", "pass a run folder (it holds result.json) or a folder of runs")
        if not found:
            raise UsageError(f"no result.json under {p}", "run `harness evaluate` or `harness run` first")
        out += [f for f in found if f not in out]
    return out


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Load every run found under ``paths`` (see `find_runs`), each checked against its per-sample record.

    A result.json that is not the result of the record beside it (an interrupted ``--overwrite``,
    mixed files) is refused with a `DataError` rather than reported as current.
    """
    return [load_run(p) for p in find_runs(paths)]


def load_run(path: str | Path) -> Run:
    """One run folder: its result.json, verified against its record (`check_result_matches_record`)."""

    p = Path(path)
    r = Result.load(p / "result.json")
    check_result_matches_record(p, r.record, r.record.get("config_hash") or r.config.get("config_hash"))
    return Run(p, r)


def sweep_cells(root: str | Path) -> tuple[list[Path], list[str]]:
    """(finished cell folders in sweep order, names of unfinished cells) of the sweep written in ``root``."""
    root = Path(root)
    try:
        cells = json.loads((root / SWEEP_MANIFEST).read_text())["cells"]
        names = [str(c["name"]) for c in cells]
        if any(Path(n).name != n or n in ("", ".", "..") for n in names):
            raise ValueError("a cell name is not a folder name")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"{root / SWEEP_MANIFEST} is unreadable ({type(e).__name__})",
            "run `harness sweep` (or `harness sweep --plan`) again to rewrite it",
        ) from None
    cells = [safe_join(root, n, what="sweep cell") for n in names]
    done = [c for c in cells if (c / "result.json").is_file()]
    return done, [c.name for c in cells if not (c / "result.json").is_file()]
