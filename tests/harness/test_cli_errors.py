"""Issue 20 §5: every class of user mistake or hostile environment is one line and exit 2, nothing lost.

Table-driven like the bad-input matrix: each row goes through the CLI (in-process for every row,
a real ``python -m harness`` process for a few, all of them under ``-m slow``) and through the
Python API (the documented exception type). Before and after every row every file of the workspace
(an earlier run, its baseline, checkpoints) is hashed: a failing command loses nothing.

Storage faults that cannot be produced without privileges (a full or read-only disk) use the
test-only ``HARNESS_TEST_OSERROR`` hook (harness/faults.py); where user namespaces are allowed,
`test_real_full_and_read_only_file_systems` repeats them on a real tmpfs. The exit-code table
(0 pass, 1 regression, 2 usage/input/storage, 3 internal, 130 interrupted) is checked at the end.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from harness.errors import HarnessError, ModelError, StorageError, UsageError
from tests.harness.cli_helpers import ROOT, cli

torch.set_num_threads(1)

EVAL = ["--device", "cpu", "--no-progress", "--max-samples", "40"]
FACTORIES = "tests.harness._user_models"


class Workspace:
    """An earlier finished run (and a regressed one), a baseline, checkpoints, weights, a plain file."""

    def __init__(self, root: Path) -> None:
        from harness.api import evaluate, load_dataset
        from harness.gate import make_baseline
        from harness.models import create_model
        from harness.models.checkpoint import CheckpointMeta, save_checkpoint
        from tests.harness import _user_models

        self.root = root
        gate = ROOT / "tests" / "data" / "gate"
        for suffix in (".safetensors", ".json"):
            shutil.copy(gate / f"pgd_at_digits{suffix}", root / f"model{suffix}")
        self.model = root / "model.safetensors"
        torch.manual_seed(0)
        meta = CheckpointMeta("mlp", {"num_classes": 10, "hidden": [16]}, "digits", 10, [1, 8, 8])
        self.random = save_checkpoint(root / "random", create_model("mlp", load_dataset("digits"), hidden=[16]), meta)
        self.runs = root / "runs"
        kw = dict(out=self.runs, device="cpu", progress=False, max_samples=40)
        evaluate(self.model, "digits", name="earlier", **kw)
        evaluate(self.random, "digits", name="regressed", **kw)
        self.earlier, self.regressed = self.runs / "earlier", self.runs / "regressed"
        self.baseline = root / "baseline.json"
        make_baseline(self.earlier).save(self.baseline)
        self.afile = root / "afile"
        self.afile.write_text("a regular file\n")
        self.small_weights = root / "small.safetensors"
        save_file(_user_models.small_net().state_dict(), str(self.small_weights))
        self.int_weights = root / "int.safetensors"
        save_file(_user_models.int_logits().state_dict(), str(self.int_weights))
        (root / "broken_import_mod.py").write_text("raise ImportError('needs a GPU build of somelib')\n")
        self.scratch = root / "rows"  # where rows may write; emptied after each row
        self.logs = root / "logs"

    def snapshot(self) -> dict[str, str]:
        """sha256 of every file of the workspace except the rows' scratch folder, the error logs and
        Python's byte-code cache (written by the interpreter importing the rows' modules, unless
        PYTHONDONTWRITEBYTECODE is set)."""
        skip = (self.scratch, self.logs)
        files = [
            p
            for p in self.root.rglob("*")
            if p.is_file() and not any(s in p.parents for s in skip) and "__pycache__" not in p.parts
        ]
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("cli-errors"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No step summary from a CI runner; error logs go to a temporary folder, not the home directory."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("HARNESS_LOG_DIR", str(tmp_path / "logs"))
    for name in ("HARNESS_TEST_OSERROR", "HARNESS_TEST_KILL_AT", "HARNESS_DATA", "HARNESS_DIST_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Row:
    """One class of mistake: CLI arguments and/or an API call, the error, a regex on its message, the env."""

    id: str
    error: type[HarnessError]
    match: str
    cli: Callable[[Workspace], list] | None = None
    api: Callable[[Workspace], object] | None = None
    env: Callable[[Workspace], dict[str, str]] = field(default=lambda ws: {})
    real_process: bool = False  # also run in a real process in the default (not only the slow) run


def _eval(model: Callable[[Workspace], object], *extra) -> Callable[[Workspace], list]:
    return lambda ws: ["evaluate", model(ws), "--out", ws.scratch, *EVAL, *[e(ws) if callable(e) else e for e in extra]]


def _api_eval(model: Callable[[Workspace], object], **kw) -> Callable[[Workspace], object]:
    from harness.api import evaluate

    def call(ws: Workspace) -> object:
        args = {k: (v(ws) if callable(v) else v) for k, v in kw.items()}
        opts = {"out": ws.scratch, "name": "row", "device": "cpu", "progress": False, "max_samples": 40, **args}
        return evaluate(model(ws), "digits", **opts)

    return call


def _api_train(**kw) -> Callable[[Workspace], object]:
    from harness.api import train

    def call(ws: Workspace) -> object:
        args = {k: (v(ws) if callable(v) else v) for k, v in kw.items()}
        opts = {"out": ws.scratch / "trained", "epochs": 1, "progress": False, "device": "cpu", **args}
        return train("ce", "mlp", "digits", **opts)

    return call


def _oserror(spec: str) -> Callable[[Workspace], dict[str, str]]:
    return lambda ws: {"HARNESS_TEST_OSERROR": spec}


def _env(name: str, value: Callable[[Workspace], str] | str) -> Callable[[Workspace], dict[str, str]]:
    return lambda ws: {name: value(ws) if callable(value) else value}


def _read_env(name: str) -> Callable[[Workspace], object]:
    from harness.environment import env

    return lambda ws: env(name)


M = lambda ws: ws.model
NO_GPU = not torch.cuda.is_available()
N_GPU = torch.cuda.device_count() if torch.cuda.is_available() else 0
RERUN_EARLIER = lambda ws: ["evaluate", ws.model, "--out", ws.runs, "--name", "earlier", *EVAL]
API_RERUN_EARLIER = _api_eval(M, out=lambda ws: ws.runs, name="earlier")

ROWS = [
    # ---- storage ---------------------------------------------------------------------------------
    Row("out-is-a-file", StorageError, r"afile is a file, not a folder.*intact",
        cli=lambda ws: ["evaluate", ws.model, "--out", ws.afile, "--name", "r", *EVAL],
        api=_api_eval(M, out=lambda ws: ws.afile, name="r"), real_process=True),
    Row("out-under-a-file", StorageError, r"could not create the folder .*afile/sub/r: .*afile is a file, not a folder",
        cli=lambda ws: ["evaluate", ws.model, "--out", ws.afile / "sub", "--name", "r", *EVAL],
        api=_api_eval(M, out=lambda ws: ws.afile / "sub", name="r")),
    Row("name-is-a-file", StorageError, r"could not create the folder .*afile: .*afile is a file, not a folder",
        cli=lambda ws: ["evaluate", ws.model, "--out", ws.root, "--name", "afile", *EVAL],
        api=_api_eval(M, out=lambda ws: ws.root, name="afile")),
    Row("train-out-under-a-file", StorageError, r"afile is a file, not a folder",
        cli=lambda ws: ["train", "--model", "mlp", "--epochs", "1", "--out", ws.afile / "m", "--device", "cpu",
                        "--no-progress"],
        api=_api_train(out=lambda ws: ws.afile / "m")),
    Row("report-out-is-a-file", StorageError, r"afile is a file, not a folder",
        cli=lambda ws: ["report", ws.earlier, "--out", ws.afile],
        api=lambda ws: __import__("harness.reporting", fromlist=["x"]).build_report([ws.earlier], ws.afile)),
    Row("read-only-file-system-new-run", StorageError, r"could not create the folder .*: Read-only file system",
        cli=_eval(M, "--name", "new"), api=_api_eval(M, name="new"), env=_oserror("mkdir:*=EROFS")),
    Row("read-only-file-system-earlier-run", StorageError, r"could not write .*earlier.*Read-only file system.*intact",
        cli=RERUN_EARLIER, api=API_RERUN_EARLIER, env=_oserror("tmpfile:*=EROFS")),
    Row("unwritable-folder", StorageError, r"could not write .*Permission denied.*permissions",
        cli=RERUN_EARLIER, api=API_RERUN_EARLIER, env=_oserror("tmpfile:*=EACCES")),
    Row("no-space-creating-a-temporary-file", StorageError, r"could not write .*No space left on device.*intact",
        cli=RERUN_EARLIER, api=API_RERUN_EARLIER, env=_oserror("tmpfile:*=ENOSPC")),
    Row("no-space-creating-a-temporary-folder", StorageError,
        r"could not create a temporary folder .*No space left on device.*TMPDIR",
        cli=lambda ws: ["check", ws.model, "--baseline", ws.baseline, "--device", "cpu"],
        api=_api_eval(M, name=None, out=None), env=_oserror("tmpdir=ENOSPC")),
    Row("no-space-training", StorageError, r"could not write .*No space left on device",
        cli=lambda ws: ["train", "--model", "mlp", "--epochs", "1", "--out", ws.scratch / "m", "--device", "cpu",
                        "--no-progress"],
        api=_api_train(), env=_oserror("tmpfile:*=ENOSPC")),
    # ---- devices ---------------------------------------------------------------------------------
    Row("device-tpu", UsageError, r"unknown device 'tpu'.*--device auto",
        cli=_eval(M, "--device", "tpu"), api=_api_eval(M, device="tpu")),
    Row("device-meta", UsageError, r"device 'meta' is not supported",
        cli=_eval(M, "--device", "meta"), api=_api_eval(M, device="meta")),
    Row("device-cuda-7", UsageError, r"device 'cuda:7': (no CUDA GPU is visible|this machine has \d CUDA device)",
        cli=_eval(M, "--device", "cuda:7"), api=_api_eval(M, device="cuda:7")),
    Row("train-device-tpu", UsageError, r"unknown device 'tpu'",
        cli=lambda ws: ["train", "--epochs", "1", "--out", ws.scratch / "m", "--device", "tpu", "--no-progress"],
        api=_api_train(device="tpu")),
    Row("load-model-device-tpu", UsageError, r"unknown device 'tpu'",
        api=lambda ws: __import__("harness.api", fromlist=["x"]).load_model(ws.model, device="tpu")),
    # ---- numbers -----------------------------------------------------------------------------------
    Row("max-samples-0", UsageError, r"max_samples must be a positive integer, not 0",
        cli=lambda ws: ["evaluate", ws.model, "--out", ws.scratch, "--device", "cpu", "--max-samples", "0"],
        api=_api_eval(M, max_samples=0)),
    Row("max-samples-negative", UsageError, r"max_samples must be a positive integer, not -1",
        cli=lambda ws: ["evaluate", ws.model, "--out", ws.scratch, "--device", "cpu", "--max-samples", "-1"],
        api=_api_eval(M, max_samples=-1)),
    Row("chunk-size-0", UsageError, r"chunk_size must be a positive integer, not 0",
        cli=_eval(M, "--chunk-size", "0"), api=_api_eval(M, chunk_size=0)),
    Row("chunk-size-negative", UsageError, r"chunk_size must be a positive integer, not -4",
        cli=_eval(M, "--chunk-size", "-4"), api=_api_eval(M, chunk_size=-4)),
    # found by the fuzz test (ci profile): 2^63 overflowed the record's batch-plan column
    Row("batch-size-huge", UsageError, r"batch size must be at most 2147483647, not 9223372036854775808",
        cli=_eval(M, "--batch-size", "9223372036854775808"), api=_api_eval(M, batch_size=2**63)),
    Row("chunk-size-huge", UsageError, r"chunk_size must be at most 2147483647, not 9223372036854775808",
        cli=_eval(M, "--chunk-size", "9223372036854775808"), api=_api_eval(M, chunk_size=2**63)),
    Row("seed-negative", UsageError, r"seed must be an integer in \[0, \d+\], not -1",
        cli=_eval(M, "--seed", "-1"), api=_api_eval(M, seed=-1)),
    Row("chunk-size-0-sweep", UsageError, r"chunk_size must be a positive integer, not 0",
        cli=lambda ws: ["sweep", ws.model, "--out", ws.scratch, "--chunk-size", "0", "--device", "cpu"]),
    Row("batch-size-0-check", UsageError, r"batch size must be a positive integer",
        cli=lambda ws: ["check", ws.model, "--baseline", ws.baseline, "--batch-size", "0", "--device", "cpu"]),
    # ---- user code ---------------------------------------------------------------------------------
    Row("factory-raises", ModelError,
        r"model factory tests\.harness\._user_models:raising_factory\(\) raised RuntimeError: weights server",
        cli=lambda ws: ["evaluate", "--model", f"{FACTORIES}:raising_factory", "--weights", ws.small_weights,
                        "--out", ws.scratch, *EVAL],
        api=lambda ws: __import__("harness.api", fromlist=["x"]).load_model(
            f"{FACTORIES}:raising_factory", weights=ws.small_weights), real_process=True),
    Row("factory-module-import-raises", ModelError,
        r"importing 'broken_import_mod' for --model broken_import_mod:build raised ImportError: needs a GPU",
        cli=lambda ws: ["evaluate", "--model", "broken_import_mod:build", "--weights", ws.small_weights,
                        "--out", ws.scratch, *EVAL],
        api=lambda ws: __import__("harness.api", fromlist=["x"]).load_model(
            "broken_import_mod:build", weights=ws.small_weights)),
    Row("int64-logits", ModelError, r"model returned int64 logits; logits must be floating point",
        cli=lambda ws: ["evaluate", "--model", f"{FACTORIES}:int_logits", "--weights", ws.int_weights,
                        "--out", ws.scratch, *EVAL],
        api=_api_eval(lambda ws: __import__(FACTORIES, fromlist=["x"]).int_logits())),
    # ---- HARNESS_* variables (every declared one; test_every_harness_variable_is_declared) ---------
    Row("env-data-is-a-file", UsageError, r"HARNESS_DATA=.*afile.* is malformed \(.*is a file, not a folder\)",
        cli=lambda ws: ["list", "datasets"], api=lambda ws: __import__("harness.api", fromlist=["x"]).load_dataset(
            "cifar10"), env=_env("HARNESS_DATA", lambda ws: str(ws.afile))),
    Row("env-log-dir-is-a-file", UsageError, r"HARNESS_LOG_DIR=.*afile.* is malformed",
        cli=lambda ws: ["list", "datasets"], api=_read_env("HARNESS_LOG_DIR"),
        env=_env("HARNESS_LOG_DIR", lambda ws: str(ws.afile))),
    Row("env-dist-timeout-not-a-number", UsageError, r"HARNESS_DIST_TIMEOUT_S='soon' is malformed",
        cli=_eval(M), api=_read_env("HARNESS_DIST_TIMEOUT_S"), env=_env("HARNESS_DIST_TIMEOUT_S", "soon")),
    Row("env-dist-timeout-negative", UsageError, r"HARNESS_DIST_TIMEOUT_S='-5' is malformed .*positive",
        cli=_eval(M), api=_read_env("HARNESS_DIST_TIMEOUT_S"), env=_env("HARNESS_DIST_TIMEOUT_S", "-5")),
    Row("env-dist-timeout-nan", UsageError, r"HARNESS_DIST_TIMEOUT_S='nan' is malformed",
        cli=_eval(M), api=_read_env("HARNESS_DIST_TIMEOUT_S"), env=_env("HARNESS_DIST_TIMEOUT_S", "nan")),
    Row("env-launch-id", UsageError, r"HARNESS_LAUNCH_ID='a b/c' is malformed",
        cli=_eval(M), api=_read_env("HARNESS_LAUNCH_ID"), env=_env("HARNESS_LAUNCH_ID", "a b/c")),
    Row("env-launch-errors-is-a-file", UsageError, r"HARNESS_LAUNCH_ERRORS=.*afile.* is malformed",
        cli=_eval(M), api=_read_env("HARNESS_LAUNCH_ERRORS"),
        env=_env("HARNESS_LAUNCH_ERRORS", lambda ws: str(ws.afile))),
    Row("env-kill-at-count", UsageError, r"HARNESS_TEST_KILL_AT='eval:chunk@x' is malformed",
        cli=_eval(M), api=_read_env("HARNESS_TEST_KILL_AT"), env=_env("HARNESS_TEST_KILL_AT", "eval:chunk@x")),
    Row("env-oserror-errno", UsageError, r"HARNESS_TEST_OSERROR='tmpfile:\*=ENOPE' is malformed",
        cli=_eval(M), api=_read_env("HARNESS_TEST_OSERROR"), env=_env("HARNESS_TEST_OSERROR", "tmpfile:*=ENOPE")),
]  # fmt: skip


def run_cli_in_process(args: list, capsys) -> tuple[int, str, str]:
    from harness.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def one_line(err: str, prefix: str = "error: ") -> str:
    """The single non-empty stderr line (asserting there is exactly one and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith(prefix), lines[0]
    assert " — hint: " in lines[0], lines[0]
    return lines[0]


def _skip_unfit(row: Row) -> None:
    if row.id == "device-cuda-7" and N_GPU > 7:
        pytest.skip("this machine has a cuda:7")


def _finish(ws: Workspace, before: dict[str, str]) -> None:
    assert ws.snapshot() == before, "an earlier file changed"
    assert not [p for p in ws.root.rglob(".*.tmp")], "temporary files left behind"
    shutil.rmtree(ws.scratch, ignore_errors=True)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_row(row: Row, ws: Workspace, capsys, monkeypatch) -> None:
    _skip_unfit(row)
    monkeypatch.syspath_prepend(str(ws.root))  # broken_import_mod
    for k, v in row.env(ws).items():
        monkeypatch.setenv(k, v)
    before = ws.snapshot()
    if row.api:
        with pytest.raises(row.error) as exc:
            row.api(ws)
        assert re.search(row.match, str(exc.value)), (row.match, str(exc.value))
        assert exc.value.hint, "the error must say what to do"
    if row.cli:
        code, _, err = run_cli_in_process(row.cli(ws), capsys)
        assert code == 2, err
        line = one_line(err)
        assert re.search(row.match, line), (row.match, line)
    _finish(ws, before)


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.id, marks=() if r.real_process else pytest.mark.slow) for r in ROWS if r.cli]
)
def test_row_real_process(row: Row, ws: Workspace) -> None:
    """The same rows through ``python -m harness``: exit 2, one line, no traceback, nothing changed."""
    _skip_unfit(row)
    before = ws.snapshot()
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{ws.root}", **row.env(ws)}
    p = cli(*row.cli(ws), env=env)
    assert p.returncode == 2, p.stderr
    assert re.search(row.match, one_line(p.stderr)), (row.match, p.stderr)
    _finish(ws, before)


def test_every_harness_variable_is_declared_and_has_a_row() -> None:
    """Every HARNESS_* name in the package source is declared (parsed, documented) and has a malformed-value row."""
    from harness.environment import VARIABLES

    names: set[str] = set()
    for path in (ROOT / "harness").rglob("*.py"):
        names |= set(re.findall(r"\bHARNESS_[A-Z0-9_]+\b", path.read_text()))
    assert names <= set(VARIABLES), names - set(VARIABLES)
    dummy = SimpleNamespace(afile=Path("afile"))
    covered = {k for r in ROWS if r.id.startswith("env-") for k in r.env(dummy)}  # type: ignore[arg-type]
    assert covered == set(VARIABLES), set(VARIABLES) ^ covered


# ---- exit codes ------------------------------------------------------------------------------------
def _check(ws: Workspace, run: Path, *extra) -> list:
    return ["check", run, "--baseline", ws.baseline, *extra]


def test_check_pass_is_0_and_regression_is_1(ws: Workspace, capsys) -> None:
    code, out, _ = run_cli_in_process(_check(ws, ws.earlier), capsys)
    assert code == 0 and "PASS" in out
    code, out, _ = run_cli_in_process(_check(ws, ws.regressed), capsys)
    assert code == 1 and "FAIL" in out


@pytest.mark.parametrize("target", ["junit", "summary", "step-summary"])
def test_a_report_that_cannot_be_written_after_a_pass_is_2_not_1(target, ws: Workspace, capsys, monkeypatch) -> None:
    """The gate passed: an unwritable --junit/--summary/$GITHUB_STEP_SUMMARY is a storage error, never a regression."""
    before = ws.snapshot()
    extra = {"junit": ["--junit", ws.afile / "gate.xml"], "summary": ["--summary", ws.afile / "gate.md"]}
    if target == "step-summary":
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(ws.afile / "summary.md"))
    code, out, err = run_cli_in_process(_check(ws, ws.earlier, *extra.get(target, [])), capsys)
    assert code == 2, err
    assert "PASS" in out  # the verdict is still shown
    assert re.search(r"could not (create the folder|append to) .*afile.*is a file, not a folder", one_line(err))
    assert ws.snapshot() == before


def test_a_regression_stays_1_when_its_report_cannot_be_written(ws: Workspace, capsys) -> None:
    """Every output is attempted; the verdict (regression) decides the code, the failed write is a line."""
    junit = ws.scratch / "gate.xml"
    code, out, err = run_cli_in_process(
        _check(ws, ws.regressed, "--junit", junit, "--summary", ws.afile / "gate.md"), capsys
    )
    assert code == 1 and "FAIL" in out
    assert "afile is a file, not a folder" in one_line(err)
    assert junit.is_file()  # the writable one was written
    shutil.rmtree(ws.scratch)


def _boom(*a, **k):
    raise ValueError("boom: an invariant broke")


def test_internal_error_is_3_one_line_and_a_log(ws: Workspace, capsys, monkeypatch, tmp_path) -> None:
    import harness.gate

    monkeypatch.setattr(harness.gate.GateReport, "table", _boom)
    code, _, err = run_cli_in_process(_check(ws, ws.earlier), capsys)
    assert code == 3
    line = one_line(err, prefix="internal error: ")
    assert "ValueError: boom: an invariant broke" in line and "bug in harness" in line
    log = Path(re.search(r"the traceback is in (\S+\.log)", line).group(1))
    assert log.parent == tmp_path / "logs"  # HARNESS_LOG_DIR: this command has no run folder
    text = log.read_text()
    assert "Traceback" in text and "_boom" in text and "command: harness check" in text


def test_internal_error_during_a_run_logs_into_the_run_folder(ws: Workspace, capsys, monkeypatch) -> None:
    import harness.engine

    monkeypatch.setattr(harness.engine.Evaluation, "_precheck", _boom)
    code, _, err = run_cli_in_process(_eval(M, "--name", "broken")(ws), capsys)
    assert code == 3
    log = Path(re.search(r"the traceback is in (\S+\.log)", one_line(err, "internal error: ")).group(1))
    assert log.parent == ws.scratch / "broken" and "_boom" in log.read_text()
    shutil.rmtree(ws.scratch)


def test_internal_error_in_a_temporary_run_logs_into_the_log_folder(ws: Workspace, capsys, monkeypatch, tmp_path):
    """`check` without --out evaluates in a temporary folder, removed on the way out: the log goes elsewhere."""
    import harness.engine

    monkeypatch.setattr(harness.engine.Evaluation, "_precheck", _boom)
    code, _, err = run_cli_in_process(["check", ws.model, "--baseline", ws.baseline, "--device", "cpu"], capsys)
    assert code == 3
    log = Path(re.search(r"the traceback is in (\S+\.log)", one_line(err, "internal error: ")).group(1))
    assert log.parent == tmp_path / "logs" and "_boom" in log.read_text()


def test_debug_prints_the_traceback_instead_of_logging(ws: Workspace, capsys, monkeypatch, tmp_path) -> None:
    import harness.gate

    monkeypatch.setattr(harness.gate.GateReport, "table", _boom)
    code, _, err = run_cli_in_process(["--debug", *_check(ws, ws.earlier)], capsys)
    assert code == 3
    assert "Traceback" in err and "_boom" in err
    assert err.strip().splitlines()[-1].startswith("internal error: ValueError: boom")
    assert not (tmp_path / "logs").exists()
    # --debug shows the traceback of a user error too, still ending with its one line
    code, _, err = run_cli_in_process(["--debug", "evaluate", ws.model, "--device", "tpu"], capsys)
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: unknown device")


def test_unhandled_os_error_is_2_not_3(ws: Workspace, capsys, monkeypatch) -> None:
    """An OSError no layer translated is the environment refusing, not a bug: exit 2, one line, logged."""
    import harness.gate

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(harness.gate.GateReport, "table", denied)
    code, _, err = run_cli_in_process(_check(ws, ws.earlier), capsys)
    assert code == 2
    assert one_line(err).startswith("error: Permission denied: /some/where")


def test_interrupt_is_130(ws: Workspace, capsys, monkeypatch) -> None:
    import harness.gate

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.gate.GateReport, "table", interrupt)
    code, _, err = run_cli_in_process(_check(ws, ws.earlier), capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, match",
    [
        (["evaluate", "x", "--chunk-size", "abc"], r"Invalid value for '--chunk-size'"),
        (["evaluate", "x", "--no-such-option"], r"No such option: --no-such-option"),
        (["evaluatee"], r"No such command 'evaluatee'"),
    ],
)
def test_option_parsing_errors_are_one_line(args, match, capsys) -> None:
    code, _, err = run_cli_in_process(args, capsys)
    assert code == 2
    assert re.search(match, one_line(err)) and "--help" in err


def test_internal_error_in_a_real_process(ws: Workspace, tmp_path) -> None:
    """``python -m harness`` semantics in a fresh interpreter: exit 3, one line, the traceback in the log folder."""
    script = (
        "import sys, harness.gate as g\n"
        "def boom(*a, **k): raise ValueError('boom in a real process')\n"
        "g.GateReport.table = boom\n"
        "from harness.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_LOG_DIR": str(tmp_path / "logs"), "COLUMNS": "200"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    p = subprocess.run(
        [sys.executable, "-c", script, *map(str, _check(ws, ws.earlier))], env=env, capture_output=True, text=True
    )
    assert p.returncode == 3, p.stderr
    line = one_line(p.stderr, "internal error: ")
    assert "ValueError: boom in a real process" in line
    log = Path(re.search(r"the traceback is in (\S+\.log)", line).group(1))
    assert [f.name for f in (tmp_path / "logs").iterdir()] == [log.name] and "boom" in log.read_text()


# ---- a real full / read-only file system (needs user namespaces; the hook above covers the rest) -------------
def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="no unprivileged user namespaces to mount a tmpfs")
@pytest.mark.parametrize("fs", ["full", pytest.param("read-only", marks=pytest.mark.slow)])
def test_real_full_and_read_only_file_systems(fs: str, ws: Workspace, tmp_path) -> None:
    """The earlier run copied onto a small tmpfs, then the disk filled (or remounted read-only), then re-run."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    hashes = tmp_path / "hashes"
    rerun = f"{sys.executable} -m harness evaluate {ws.model} --out {mnt} --name earlier " + " ".join(EVAL)
    spoil = (
        f"dd if=/dev/zero of={mnt}/filler bs=4k 2>/dev/null || true"
        if fs == "full"
        else f"mount -o remount,ro,bind {mnt}"
    )
    script = f"""
set -e
mount -t tmpfs -o size=2m tmpfs {mnt}
cp -r {ws.earlier} {mnt}/earlier
(cd {mnt}/earlier && find . -type f ! -name .lock | sort | xargs sha256sum) > {hashes}.before
{spoil}
set +e
{rerun} 2> {tmp_path}/err; echo $? > {tmp_path}/rc
(cd {mnt}/earlier && find . -type f ! -name .lock | sort | xargs sha256sum) > {hashes}.after
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2", err
    reason = "No space left on device" if fs == "full" else "Read-only file system"
    assert reason in one_line(err) and "earlier results are intact" in err
    before, after = Path(f"{hashes}.before").read_text(), Path(f"{hashes}.after").read_text()
    assert before == after and "result.json" in before


# ---- units: devices on a machine with GPUs, the fault hook ------------------------------------------
def test_cuda_index_beyond_the_visible_gpus(monkeypatch) -> None:
    """With one (simulated) GPU: cuda and cuda:0 resolve without touching CUDA, cuda:7 names the real range."""
    from harness.environment import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(" CUDA ") == torch.device("cuda")
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(UsageError, match=r"device 'cuda:7': this machine has 1 CUDA device\(s\): cuda:0"):
        resolve_device("cuda:7")


def test_no_gpu_and_no_mps(monkeypatch) -> None:
    from harness.environment import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    for device, match in [("cuda", "no CUDA"), ("mps", "MPS .* not available"), ("", "unknown device ''")]:
        with pytest.raises(UsageError, match=match):
            resolve_device(device)


def test_oserror_hook_counts_and_globs(monkeypatch) -> None:
    """``<point>=<ERRNO>@N``: the glob matches several names; from the N-th hit on the call fails."""
    import errno

    from harness.faults import fail_point

    monkeypatch.setenv("HARNESS_TEST_OSERROR", "tmpfile:unit-*.json=EROFS@2")
    fail_point("tmpfile:unit-a.json")  # hit 1: passes
    fail_point("tmpfile:other.json")  # not matched
    with pytest.raises(OSError) as e:
        fail_point("tmpfile:unit-b.json", "/x/unit-b.json")  # hit 2: fails
    assert e.value.errno == errno.EROFS and e.value.filename == "/x/unit-b.json"
    with pytest.raises(OSError):
        fail_point("tmpfile:unit-a.json")  # and from then on


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file(tmp_path, monkeypatch) -> None:
    """ENOSPC while the bytes are written (not only at creation): StorageError, the old file, no .tmp."""
    import harness.atomic
    from harness.atomic import write_text

    target = tmp_path / "result.json"
    write_text(target, "old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harness.atomic.os, "fsync", full)
    with pytest.raises(StorageError, match=r"could not write .*result.json: No space left on device"):
        write_text(target, "new")
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
