"""Sweeps: models × suites as keyed run folders; finished cells skipped, changed or interrupted ones
recomputed; the --plan commands plus `harness report OUT` give the local sweep's report; clear errors."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest

from harness.api import plan_sweep, sweep
from harness.cli import main
from harness.engine import Evaluation, run_lock
from harness.errors import SweepError, UnknownNameError
from harness.reporting.runs import find_runs
from harness.sweeps import Sweep
from tests.harness.dist_helpers import assert_same_record, tiny_checkpoint

N, CHUNK = 64, 32  # 2 chunks per cell
SUITES = {
    "s1": '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.1\n',
    "s2": '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.1\nparams = { steps = 5, restarts = 1, loss = "ce" }\n',
}
OPTS = {"max_samples": N, "chunk_size": CHUNK, "seed": 0}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Two tiny digits MLPs × two one-attack suites, swept once into ROOT/local."""
    root = tmp_path_factory.mktemp("sweep")
    tiny_checkpoint(root / "ck" / "a", seed=0)
    tiny_checkpoint(root / "ck" / "b", seed=1, hidden=16)
    suites = []
    for name, text in SUITES.items():
        (root / f"{name}.toml").write_text(f'summary = "{name}"\n{text}')
        suites.append(str(root / f"{name}.toml"))
    res = sweep(str(root / "ck" / "*.safetensors"), suites, "digits", out=root / "local", progress=False, **OPTS)
    return root, suites, res


def _copy(root, tmp_path):
    """The checkpoints and the finished sweep, copied so a test may change them."""
    shutil.copytree(root / "ck", tmp_path / "ck")
    shutil.copytree(root / "local", tmp_path / "local")
    return str(tmp_path / "ck" / "*.safetensors"), tmp_path / "local"


def _tables(report_md) -> list[str]:
    """The report's table rows, with the wall-time column (seconds per attack) blanked."""
    rows, timed = [], False
    for line in report_md.read_text().splitlines():
        if not line.startswith("|"):
            timed = False
            continue
        if line.endswith("| seconds |"):
            timed = True
        rows.append(re.sub(r"\| [0-9.]+ \|$", "| s |", line) if timed else line)
    return rows


class _Counter:
    """Counts `Evaluation.run` calls (each computed cell is one)."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        real = Evaluation.run

        def run(ev):
            self.names.append(ev.name)
            return real(ev)

        monkeypatch.setattr(Evaluation, "run", run)


def test_every_cell_is_a_keyed_run_with_one_report(swept):
    root, _, res = swept
    out = root / "local"
    assert [res.status[c.name] for c in res.cells] == ["done"] * 4
    assert [(c.model.rsplit("/", 1)[1], c.suite.rsplit("/", 1)[1]) for c in res.cells] == [
        ("a.safetensors", "s1.toml"),
        ("a.safetensors", "s2.toml"),
        ("b.safetensors", "s1.toml"),
        ("b.safetensors", "s2.toml"),
    ]
    for c in res.cells:
        assert re.fullmatch(r"[ab]-s[12]-[0-9a-f]{12}", c.name)
        cfg = json.loads((out / c.name / "result.json").read_text())["config"]
        assert cfg["config_hash"] == c.config_hash and cfg["max_samples"] == N
    assert len({c.key for c in res.cells}) == 4
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.html").is_file()
    assert (out / "report" / "tradeoff.png").is_file()
    assert len(res.results) == 4
    head = _tables(out / "report" / "report.md")[:6]  # the clean-vs-robust table: one row per cell
    assert head[0] == "| model | clean | L∞ 0.1 |"
    assert [[c.name in r for c in res.cells] for r in head[2:]] == [[i == j for j in range(4)] for i in range(4)]
    assert find_runs([out]) == res.run_dirs


def test_second_run_skips_every_cell(swept, monkeypatch, capsys):
    root, suites, res = swept
    out = root / "local"
    before = {c.name: (out / c.name / "result.json").stat().st_mtime_ns for c in res.cells}

    def boom(ev):
        raise AssertionError(f"cell {ev.name} was recomputed")

    monkeypatch.setattr(Evaluation, "run", boom)
    again = sweep(str(root / "ck" / "*.safetensors"), suites, "digits", out=out, progress=True, **OPTS)
    assert [again.status[c.name] for c in again.cells] == ["skipped"] * 4
    assert [c.name for c in again.cells] == [c.name for c in res.cells]
    assert {c.name: (out / c.name / "result.json").stat().st_mtime_ns for c in res.cells} == before
    text = capsys.readouterr().out
    assert all(f"skipped {c.name}" in text for c in res.cells), text  # one progress line per cell


def test_changed_weights_get_new_cells_and_an_interrupted_cell_resumes(swept, tmp_path, monkeypatch):
    root, suites, res = swept
    pattern, out = _copy(root, tmp_path)
    tiny_checkpoint(tmp_path / "ck" / "b", seed=2, hidden=16)  # "retrained": same name, new weights
    cut = res.cells[1]  # interrupted: its second chunk and result.json never written
    (out / cut.name / "result.json").unlink()
    for p in (out / cut.name / "records").glob("chunk-000001.*"):
        p.unlink()
    kept = (out / cut.name / "records" / "chunk-000000.npz").stat().st_mtime_ns
    runs = _Counter(monkeypatch)
    new = sweep(pattern, suites, "digits", out=out, progress=False, **OPTS)
    old = [c.name for c in res.cells]
    assert [c.name for c in new.cells][:2] == old[:2]
    assert all(c.name not in old for c in new.cells[2:])
    assert [new.status[c.name] for c in new.cells] == ["skipped", "done", "done", "done"]
    assert runs.names == [c.name for c in new.cells[1:]]
    assert (out / cut.name / "records" / "chunk-000000.npz").stat().st_mtime_ns == kept  # resumed, not redone
    assert_same_record(root / "local" / cut.name, out / cut.name)
    # The superseded cells stay on disk, but the sweep's report (and `harness report OUT`) covers this sweep only.
    assert all((out / n / "result.json").is_file() for n in old)
    assert find_runs([out]) == new.run_dirs
    text = (out / "report" / "report.md").read_text()
    assert all(c.name in text for c in new.cells) and not any(n in text for n in old[2:])


def test_a_failing_cell_does_not_stop_the_others(swept, tmp_path):
    root, suites, res = swept
    pattern, out = _copy(root, tmp_path)
    busy, other = res.cells[0], res.cells[3]
    for c in (busy, other):
        (out / c.name / "result.json").unlink()
    with run_lock(out / busy.name), pytest.raises(SweepError, match=f"1 of 4 cell\\(s\\) failed \\(first: {busy.name}"):
        sweep(pattern, suites, "digits", out=out, progress=False, **OPTS)  # another process holds one cell
    assert (out / other.name / "result.json").is_file() and not (out / busy.name / "result.json").exists()
    text = (out / "report" / "report.md").read_text()  # the finished cells are reported all the same
    assert "3 model(s)" in text and busy.name not in text and other.name in text
    assert not any(busy.name in p.name for p in (out / "report").iterdir())  # no stale figures of it


def test_plan_commands_then_report_give_the_local_report(swept, tmp_path, monkeypatch, capsys):
    root, suites, res = swept
    planned = tmp_path / "planned"
    lines = plan_sweep(str(root / "ck" / "*.safetensors"), suites, "digits", out=planned, **OPTS)
    assert len(lines) == 4 and not any(planned.glob("*/result.json"))  # planning runs nothing
    for line, cell in zip(lines, res.cells):
        argv = shlex.split(line)
        assert argv[:2] == ["harness", "evaluate"] and argv[argv.index("--name") + 1] == cell.name
        with pytest.raises(SystemExit) as e:  # as a job array would, one command per cell
            main([*argv[1:], "--no-progress"])
        assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(["report", str(planned)])
    assert e.value.code == 0
    assert _tables(planned / "report" / "report.md") == _tables(root / "local" / "report" / "report.md")
    for cell in res.cells:
        assert_same_record(root / "local" / cell.name, planned / cell.name)
    # The cells the commands wrote carry the sweep's keys: a local sweep over them computes nothing.
    planned_sweep = Sweep(str(root / "ck" / "*.safetensors"), suites, "digits", out=planned, **OPTS)
    assert all(planned_sweep.finished(c) for c in planned_sweep.plan())
    # The CLI prints exactly one command line per cell on stdout.
    capsys.readouterr()
    ck = str(root / "ck" / "*.safetensors")
    cli_opts = ["--max-samples", str(N), "--chunk-size", str(CHUNK), "--seed", "0"]
    with pytest.raises(SystemExit) as e:
        main(["sweep", ck, "--suite", ",".join(suites), "--out", str(planned), *cli_opts, "--plan"])
    assert e.value.code == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_errors_are_one_line_with_a_hint(swept, tmp_path, capsys):
    root, suites, _ = swept
    ck = str(root / "ck" / "*.safetensors")
    with pytest.raises(SweepError, match="no checkpoint matches"):
        sweep(str(tmp_path / "nothing" / "*.safetensors"), suites, out=tmp_path / "o", progress=False)
    with pytest.raises(UnknownNameError, match="quik"):
        sweep(ck, ["quik"], out=tmp_path / "o", progress=False)
    with pytest.raises(SweepError, match="no cells"):
        sweep([], suites, out=tmp_path / "o", progress=False)
    with pytest.raises(SweepError, match="no cells"):
        plan_sweep(ck, [], out=tmp_path / "o")
    for args, what in (
        ([str(tmp_path / "nothing" / "*.pt")], "no checkpoint matches"),
        ([ck, "--suite", "quik"], "unknown suite 'quik'"),
        ([ck, "--suite", ","], "the sweep has no cells"),
        ([ck, "--suite", "quik", "--plan"], "unknown suite 'quik'"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["sweep", *args, "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2, err
        assert err.count("\n") == 0 and err.startswith("error:") and what in err and "hint:" in err, err
    assert not (tmp_path / "o").exists()  # nothing was written


def test_sweep_cells_pass_on_what_evaluate_takes(tmp_path):
    # One EvalConfig.to_argv for --nproc ranks and sweep cells: a sweep accepts precision, compile and
    # --batch-size auto, and its cell commands carry them (they used to be refused by sweeps).
    from harness.engine import EvalConfig
    from harness.sweeps import Cell

    cfg = EvalConfig(batch_size="auto", precision="bf16", compile=True, eot_samples=3, eps={"linf": (0.1, 0.2)})
    argv = cfg.to_argv()
    assert argv[:2] == ["--batch-size", "auto"]
    assert {"--compile", "bf16", "--eot-samples", "linf=0.1,0.2"} <= set(argv)
    assert "--precision" not in EvalConfig().to_argv()  # defaults stay off the command line
    sw = Sweep("m.safetensors", "quick", "digits", out=tmp_path, batch_size="auto", precision="bf16", compile=True)
    cmd = sw.command(Cell("m.safetensors", "quick", "m-quick-k", "k", "h"))
    assert cmd[cmd.index("--batch-size") + 1] == "auto"
    assert cmd[cmd.index("--precision") + 1] == "bf16" and "--compile" in cmd
