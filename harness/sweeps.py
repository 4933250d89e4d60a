"""Sweeps: a matrix of models × suites on one dataset, each cell an ordinary, resumable run directory.

A cell is named ``<model>-<suite>-<key>``; the key hashes the engine's own config hash (model
weights, data, resolved suite, seed, chunk size, EOT, tool version) with the tool version and the
check level. So a finished cell (its result.json carries the same config hash) is skipped, a changed
one (retrained weights, other data or suite) gets a new name and is computed, and an interrupted one
resumes from its record chunks. `Sweep.commands` gives the same cells as `harness evaluate` command
lines for a cluster job array; `harness report OUT` then reads the cells listed in OUT/sweep.json.
(The module is ``sweeps`` so that ``harness.sweep`` stays the API function.)
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import shlex
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, distributed
from harness.atomic import write_json
from harness.data.base import ImageDataset
from harness.engine import EvalConfig, Evaluation, check_run_name, model_hash
from harness.errors import HarnessError, SweepError, UsageError
from harness.loading import load_dataset, load_model
from harness.models import external, zoo
from harness.paths import safe_join
from harness.reporting import build_report
from harness.reporting.runs import SWEEP_MANIFEST
from harness.results import Result
from harness.spec import default_run_name
from harness.suites import load_suite

# EvalConfig fields a sweep passes on to every cell (as `EvalConfig.to_argv` flags).
SWEEP_FIELDS = (
    "batch_size", "chunk_size", "seed", "device", "checks", "max_samples", "eot_samples", "precision", "compile", "eps",
    "gallery",
)  # fmt: skip
GLOB_CHARS = "*?["
REPORT_DIR = "report"
DEFAULT_TITLE = "Robustness report"  # the same default as `harness report`, so both reports agree


@dataclass(frozen=True)
class Cell:
    """One (model, suite) pair: its run directory name and the hashes that name is keyed by."""

    model: str
    suite: str
    name: str
    key: str
    config_hash: str


@dataclass
class SweepResult:
    """What a sweep did: every cell with its state (skipped, done, failed), results and the report."""

    out: Path
    cells: list[Cell]
    status: dict[str, str]
    results: list[Result] = field(default_factory=list)
    report: Any = None  # harness.reporting.build.Report, when at least one cell finished
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def run_dirs(self) -> list[Path]:
        """The finished cells' run directories, in sweep order."""
        return [
            safe_join(self.out, c.name, what="sweep cell")
            for c in self.cells
            if self.status.get(c.name) in ("skipped", "done")
        ]


def cell_key(ev: Evaluation) -> str:
    """12 hex digits over the engine's config hash (model, data, suite, seed, ...), tool version and checks."""
    blob = json.dumps({"config_hash": ev.config_hash, "version": __version__, "checks": ev.config.checks})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cell_name(model: str, suite: str, key: str) -> str:
    """``<model stem>-<suite>-<key>``, a valid run name (at most 128 characters)."""
    return check_run_name(f"{default_run_name(model, suite)[:100]}-{key}")


def expand_models(specs: Sequence[str]) -> list[str]:
    """Model specs with globs expanded (sorted; JSON sidecars dropped), duplicates removed, order kept."""
    out: list[str] = []
    for spec in specs:
        if zoo.is_zoo_spec(spec) or not any(c in spec for c in GLOB_CHARS):
            found = [spec]
        else:
            found = [
                p for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file() and not p.endswith(".json")
            ]
            if not found:
                raise SweepError(
                    f"no checkpoint matches {spec!r}",
                    "check the pattern (quote it so the shell passes it unexpanded), e.g. 'ckpts/*.safetensors'",
                )
        out += [f for f in found if f not in out]
    return out


class Sweep:
    """A planned sweep: models (globs expanded) × suites on one dataset, written under ``out``."""

    def __init__(
        self,
        models: str | Sequence[str],
        suites: str | Sequence[str] = "quick",
        dataset: str | ImageDataset = "digits",
        *,
        out: str | Path = "sweep",
        threat_model: str | None = None,
        model_dir: str | Path | None = None,
        trust_torchscript: bool = False,
        **config: Any,
    ) -> None:
        unknown = sorted(set(config) - set(SWEEP_FIELDS))
        if unknown:
            raise UsageError(f"sweep: unknown option(s) {unknown}", f"a sweep passes on {', '.join(SWEEP_FIELDS)}")
        self.suites = [suites] if isinstance(suites, str) else list(suites)
        for s in self.suites:
            load_suite(s)  # an unknown preset or a missing file fails here, before any model loads
        self.models = expand_models([models] if isinstance(models, str) else list(models))
        if not self.models or not self.suites:
            raise SweepError(
                f"the sweep has no cells ({len(self.models)} model(s) × {len(self.suites)} suite(s))",
                "pass at least one model (path, glob or robustbench:<Name>) and one suite",
            )
        self.dataset = dataset
        self.out = Path(out)
        self.loader = {"threat_model": threat_model, "model_dir": model_dir, "trust_torchscript": trust_torchscript}
        self.config = EvalConfig(**config)  # validates the values once for all cells
        self._data: ImageDataset | None = None
        self._cells: list[Cell] | None = None

    # ---- planning -------------------------------------------------------------------------------------
    def data(self) -> ImageDataset:
        """The dataset, loaded once and cut to max_samples once (so its content hash is computed once)."""
        if self._data is None:
            ds = load_dataset(self.dataset)
            n = self.config.max_samples
            self._data = ds.subset(slice(0, n)) if n is not None and n < len(ds) else ds
        return self._data

    def load(self, spec: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        """A model of the sweep and its description, with the engine's state hash precomputed."""
        if external.is_factory_spec(spec):
            raise SweepError(
                f"{spec}: a module:factory model needs --weights, which a sweep cannot give per model",
                "save it as a harness checkpoint, or evaluate it with `harness evaluate --model ... --weights ...`",
            )
        zoo_opts = {k: self.loader[k] for k in ("threat_model", "model_dir")} if zoo.is_zoo_spec(spec) else {}
        model, info = load_model(
            spec, device=device, dataset=self.data(), trust_torchscript=self.loader["trust_torchscript"], **zoo_opts
        )
        info["sha256_state"] = model_hash(model)
        return model, info

    def plan(self) -> list[Cell]:
        """Every cell with its key: loads each model once (on the CPU) to hash its weights."""
        if self._cells is None:
            cfg = EvalConfig(**{**asdict(self.config), "device": "cpu", "progress": False})
            cells: list[Cell] = []
            for spec in self.models:
                model, info = self.load(spec)
                for suite in self.suites:
                    ev = Evaluation(model, self.data(), suite, config=cfg, model_info=dict(info))
                    key = cell_key(ev)
                    cell = Cell(spec, suite, cell_name(spec, suite, key), key, ev.config_hash)
                    if all(c.name != cell.name for c in cells):  # the same weights twice: one cell
                        cells.append(cell)
                del model
            self._cells = cells
        return self._cells

    def finished(self, cell: Cell) -> bool:
        """True when the cell's result.json exists and was written for this exact cell."""
        try:
            cfg = json.loads(safe_join(self.out, cell.name, "result.json", what="sweep cell").read_text()).get("config")
            cfg = cfg or {}
        except (OSError, ValueError, AttributeError):
            return False
        return cfg.get("config_hash") == cell.config_hash and cfg.get("checks") == self.config.checks

    def write_manifest(self) -> Path:
        """OUT/sweep.json: the cells in order, so `harness report OUT` reports exactly this sweep."""
        ds = self.dataset if isinstance(self.dataset, str) else self.dataset.name
        path = self.out / SWEEP_MANIFEST
        write_json(
            path, {"schema": 1, "version": __version__, "dataset": ds, "cells": [asdict(c) for c in self.plan()]}
        )
        return path

    # ---- plan as commands -----------------------------------------------------------------------------
    def command(self, cell: Cell, executable: str = "harness") -> list[str]:
        """The `harness evaluate` arguments that compute ``cell`` (same key, same run directory)."""
        if not isinstance(self.dataset, str):
            raise SweepError("a sweep plan needs the dataset as a spec string", "pass e.g. dataset='digits'")
        args = [executable, "evaluate", cell.model, "--dataset", self.dataset, "--suite", cell.suite]
        args += ["--out", str(self.out), "--name", cell.name]
        args += self.config.to_argv()
        if zoo.is_zoo_spec(cell.model):
            for k, flag in (("model_dir", "--model-dir"), ("threat_model", "--threat-model")):
                args += [flag, str(self.loader[k])] if self.loader[k] is not None else []
        args += ["--trust-torchscript"] if self.loader["trust_torchscript"] else []
        return args

    def commands(self, executable: str = "harness") -> list[str]:
        """One shell line per cell (for a job array); writes OUT/sweep.json, runs nothing."""
        lines = [shlex.join(self.command(c, executable)) for c in self.plan()]
        self.write_manifest()
        return lines

    # ---- running --------------------------------------------------------------------------------------
    def run(self, *, progress: bool = True, title: str = DEFAULT_TITLE, threat: str | None = None) -> SweepResult:
        """Compute the unfinished cells, then build the combined report in OUT/report/.

        A cell that fails with a `HarnessError` is reported and the others go on; at the end a
        `SweepError` names the failed cells (after the report of the finished ones is written).
        """

        if distributed.env_world()[1] > 1:
            raise UsageError(
                "harness sweep does not run under torchrun",
                "use `harness sweep --plan` and run each cell's command with torchrun (or --nproc)",
            )
        cells = self.plan()
        self.write_manifest()
        res = SweepResult(self.out, cells, {})
        cfg = EvalConfig(**{**asdict(self.config), "progress": False, "overwrite": False})
        loaded: tuple[str, Any, dict[str, Any]] | None = None
        with _Display(cells, progress) as show:
            for i, cell in enumerate(cells):
                if self.finished(cell):
                    res.status[cell.name] = "skipped"
                    show(i, "skipped", "finished earlier")
            for i, cell in enumerate(cells):
                if cell.name in res.status:
                    continue
                try:
                    if loaded is None or loaded[0] != cell.model:
                        loaded = None  # free the previous model first
                        loaded = (cell.model, *self.load(cell.model))
                    _, model, info = loaded
                    ev = Evaluation(
                        model, self.data(), cell.suite, out=self.out, name=cell.name, config=cfg, model_info=dict(info)
                    )
                    if ev.config_hash != cell.config_hash:
                        raise SweepError(f"{cell.model} changed while the sweep ran", "run the sweep again")
                    kept = len(list(safe_join(self.out, cell.name, "records", what="sweep cell").glob("chunk-*.json")))
                    show(i, "running", f"resuming: {kept} chunk(s) on disk" if kept else "")
                    t0 = time.perf_counter()
                    r = ev.run()
                except HarnessError as e:
                    res.status[cell.name] = "failed"
                    res.errors[cell.name] = e.what
                    show(i, "failed", e.what)
                    continue
                res.status[cell.name] = "done"
                show(i, "done", f"{_summary(r)} · {time.perf_counter() - t0:.1f} s")
        return self._finish(res, title, threat)

    def _finish(self, res: SweepResult, title: str, threat: str | None) -> SweepResult:

        if res.run_dirs:
            res.report = build_report(
                res.run_dirs, safe_join(self.out, REPORT_DIR), title=title, threat=threat, clean=True
            )
            res.results = res.report.results
        if res.errors:
            first = next(iter(res.errors.items()))
            raise SweepError(
                f"{len(res.errors)} of {len(res.cells)} cell(s) failed (first: {first[0]}: {first[1]})",
                "fix the cause and run the same sweep again: finished cells are skipped",
            )
        return res


def _summary(r: Result) -> str:
    """``clean 91.2 % · L∞ 0.1 40.3 %``: the cell's clean and first robust accuracies."""
    from harness.reporting.summary import group_text

    bits = [f"clean {r.clean.pct()} %"] + [f"{group_text(g)} {g.accuracy.pct()} %" for g in r.threat_models[:2]]
    return " · ".join(bits)


@contextlib.contextmanager
def _Display(cells: list[Cell], enabled: bool) -> Iterator[Any]:
    """One line per cell: a live rich table on a terminal, plain lines in logs, nothing when off."""
    if not enabled:
        yield lambda i, state, detail="": None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    console = Console()
    colour = {"queued": "dim", "skipped": "blue", "running": "cyan", "done": "green", "failed": "red"}
    width = max(len(c.name) for c in cells)
    if not console.is_terminal:

        def line(i: int, state: str, detail: str = "") -> None:
            text = f"[{i + 1}/{len(cells)}] {state:<7} {cells[i].name}" + (f"  {detail}" if detail else "")
            console.print(text, markup=False, highlight=False, soft_wrap=True)

        yield line
        return
    with Progress(
        TextColumn("{task.fields[state]}"),
        TextColumn(f"{{task.description:<{width}}}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    ) as prog:
        ids = [prog.add_task(escape(c.name), start=False, total=1, state="[dim]queued ", detail="") for c in cells]

        def update(i: int, state: str, detail: str = "") -> None:
            if state == "running":
                prog.start_task(ids[i])
            elif state in ("done", "failed"):
                prog.stop_task(ids[i])
            prog.update(ids[i], state=f"[{colour[state]}]{state:<7}[/]", detail=escape(detail))

        yield update
