"""The bad-input matrix: every row through the CLI and the Python API, then nothing earlier changed.

A row is one kind of user mistake. Through the CLI it must exit 2 with one line saying what was
wrong and what to do (no traceback); through the API it must raise the documented `HarnessError`
subclass. After every row the files of an earlier run and checkpoint must be byte-identical.
Rows that need a Python model (not a checkpoint file) run through the API only. The CLI half runs
`harness.cli.main` in-process (the same entry point ``python -m harness`` calls); a few rows, and
all of them under ``-m slow``, also run in a real subprocess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.errors import CheckpointError, DataError, HarnessError, ModelError, StorageError, UsageError
from harness.errors import UnknownNameError as Unknown
from tests.harness.cli_helpers import cli

EVAL = ["--device", "cpu", "--no-progress", "--max-samples", "40"]


class Workspace:
    """A folder with a good checkpoint, an earlier finished run, and the files bad rows need."""

    def __init__(self, root: Path) -> None:
        from harness.api import evaluate, load_dataset
        from harness.models import create_model
        from harness.models.checkpoint import CheckpointMeta, save_checkpoint

        self.root = root
        self.digits = load_dataset("digits")
        torch.manual_seed(0)
        self.meta = CheckpointMeta("mlp", {"num_classes": 10, "hidden": [16]}, "digits", 10, [1, 8, 8])
        self.good = save_checkpoint(root / "good", create_model("mlp", self.digits, hidden=[16]), self.meta)
        self.runs = root / "runs"
        evaluate(self.good, "digits", out=self.runs, name="earlier", device="cpu", progress=False, max_samples=40)
        self.earlier = self.runs / "earlier"

        def ckpt(name: str, edit: Callable[[torch.nn.Module], None], **meta_changes) -> Path:
            m = create_model("mlp", self.digits, hidden=[16], **meta_changes.pop("model_kw", {}))
            edit(m)
            return save_checkpoint(root / name, m, dataclasses.replace(self.meta, **meta_changes))

        self.nan = ckpt("nan", lambda m: torch.nn.init.constant_(m.head.bias, float("nan")))
        self.three = ckpt(
            "three", lambda m: None, model_kw={"num_classes": 3}, arch_args={"num_classes": 3, "hidden": [16]}
        )
        blob = self.good.read_bytes()
        sidecar = self.good.with_suffix(".json").read_text()
        self.truncated = self._pair("truncated", blob[: len(blob) // 2], sidecar)
        flipped = bytearray(blob)
        flipped[len(blob) - 40] ^= 0x10
        self.flipped = self._pair("flipped", bytes(flipped), sidecar)
        self.no_sidecar = root / "lonely.safetensors"
        self.no_sidecar.write_bytes(blob)
        # The sidecar promises 32 hidden units; the weights have 16 (hash matches: the sidecar is wrong).
        self.mismatch = self._pair("mismatch", blob, sidecar.replace('"hidden": [\n      16', '"hidden": [\n      32'))
        assert self.mismatch.with_suffix(".json").read_text() != sidecar
        self.pwned = root / "pwned"
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(1), "x": _FileCreator(str(self.pwned))}, buf)
        (root / "evil.pt").write_bytes(buf.getvalue())
        torch.jit.script(torch.nn.Linear(64, 10)).save(str(root / "scripted.pt"))
        cifar = root / "cifar-trunc" / "cifar-10-batches-bin"
        cifar.mkdir(parents=True)
        (cifar / "test_batch.bin").write_bytes(bytes(3073 * 2 + 100))
        self.suites: dict[str, Path] = {}
        for key, text in SUITE_TEXTS.items():
            self.suites[key] = root / f"{key}.toml"
            self.suites[key].write_text(text)

    def _pair(self, name: str, blob: bytes, sidecar: str) -> Path:
        (self.root / f"{name}.safetensors").write_bytes(blob)
        (self.root / f"{name}.json").write_text(sidecar)
        return self.root / f"{name}.safetensors"

    def snapshot(self) -> dict[str, str]:
        """sha256 of every file written before the rows ran (the earlier run and the good checkpoint)."""
        files = [p for p in self.earlier.rglob("*") if p.is_file()] + [self.good, self.good.with_suffix(".json")]
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


class _FileCreator:
    """Unpickling this calls open(path, 'w'): a file appears if the loader unpickles arbitrary objects."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


SUITE_TEXTS = {
    "eps0": '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0\n',
    "epsneg": '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = -0.1\n',
    "eps2": '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 2.0\n',
    "norm": '[[attack]]\nname = "fgsm"\nnorm = "l3"\neps = 0.1\n',
    "attack": '[[attack]]\nname = "pgdd"\nnorm = "linf"\neps = 0.1\n',
    "syntax": 'summary = "x"\n[[attack]]\nname = "fgsm"\neps = \n',
    "field": 'summary = "x"\n\n[[attack]]\nname = "fgsm"\nepz = 0.1\n',
}


class Softmaxed(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, mode: str) -> None:
        super().__init__()
        self.inner, self.mode = inner, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        return z.softmax(1) if self.mode == "probs" else z.unsqueeze(-1)


@dataclass
class Row:
    """One mistake: CLI arguments and/or an API call, the error type and a regex on its message."""

    id: str
    error: type[HarnessError]
    match: str
    cli: Callable[[Workspace], list] | None = None
    api: Callable[[Workspace], object] | None = None
    after: Callable[[Workspace], None] | None = None


def _api_eval(model, data="digits", suite="quick", **kw):
    from harness.api import evaluate

    return lambda ws: evaluate(
        model(ws) if callable(model) else model, data, suite(ws) if callable(suite) else suite,
        out=ws.root / "rows", name=kw.pop("name", "row"), device="cpu", progress=False, max_samples=40, **kw,
    )  # fmt: skip


def _cli_eval(model, *extra):
    return lambda ws: [
        "evaluate",
        model(ws),
        *[e(ws) if callable(e) else e for e in extra],
        "--out",
        ws.root / "rows",
        *EVAL,
    ]


def _suite(key):
    return lambda ws: ws.suites[key]


def _no_file(name):
    def check(ws):
        assert not (ws.root / name).exists()

    return check


def _load_dataset(spec):
    from harness.api import load_dataset

    return lambda ws: load_dataset(spec(ws) if callable(spec) else spec)


def _load_model(path):
    from harness.api import load_model

    return lambda ws: load_model(path(ws))


def _train(**kw):
    from harness.api import train

    return lambda ws: train(out=ws.root / "trained", epochs=1, progress=False, device="cpu", **kw)


ROWS = [
    Row("missing-dataset-folder", DataError, r"no CIFAR-10 data found under .*nope.*nothing is downloaded",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", lambda ws: f"cifar10:root={ws.root / 'nope'}"),
        api=_load_dataset(lambda ws: f"cifar10:root={ws.root / 'nope'}")),
    Row("truncated-dataset-file", DataError, r"test_batch.bin has 6246 bytes, not a multiple.*truncated",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", lambda ws: f"cifar10:root={ws.root / 'cifar-trunc'}"),
        api=_load_dataset(lambda ws: f"cifar10:root={ws.root / 'cifar-trunc'}")),
    Row("truncated-safetensors", CheckpointError, r"does not match the sha256 in its sidecar.*restore",
        cli=_cli_eval(lambda ws: ws.truncated), api=_load_model(lambda ws: ws.truncated)),
    Row("bit-flipped-safetensors", CheckpointError, r"does not match the sha256 in its sidecar",
        cli=_cli_eval(lambda ws: ws.flipped), api=_load_model(lambda ws: ws.flipped)),
    Row("sidecar-missing", CheckpointError, r"no sidecar .*lonely.json next to the weights",
        cli=_cli_eval(lambda ws: ws.no_sidecar), api=_load_model(lambda ws: ws.no_sidecar)),
    Row("sidecar-mismatch", CheckpointError, r"wrong shape: .*trunk\.1\.weight: file \(16, 64\) vs model \(32, 64\)",
        cli=_cli_eval(lambda ws: ws.mismatch), api=_load_model(lambda ws: ws.mismatch)),
    Row("pickle-creating-a-file", CheckpointError, r"refused to unpickle .*evil.pt.*could run code",
        cli=_cli_eval(lambda ws: ws.root / "evil.pt"), api=_load_model(lambda ws: ws.root / "evil.pt"),
        after=_no_file("pwned")),
    Row("torchscript-untrusted", CheckpointError, r"scripted.pt is a TorchScript program.*trust",
        cli=_cli_eval(lambda ws: ws.root / "scripted.pt"), api=_load_model(lambda ws: ws.root / "scripted.pt")),
    Row("nan-logits", ModelError, r"NaN or Inf logits",
        cli=_cli_eval(lambda ws: ws.nan), api=_api_eval(lambda ws: ws.nan)),
    Row("wrong-class-count", ModelError, r"model returns 3 logits but the dataset has 10 classes",
        cli=_cli_eval(lambda ws: ws.three), api=_api_eval(lambda ws: ws.three)),
    Row("wrong-logit-shape", ModelError, r"model returned shape \(\d+, 10, 1\)",
        api=_api_eval(lambda ws: Softmaxed(ws.load_good(), "shape"))),
    Row("images-0-255", DataError, r"dataset images lie in \[0, 255\].*divide by 255",
        api=_api_eval(lambda ws: ws.good, lambda: None)),
    Row("eps-zero", UsageError, r"attack #1: eps must be a positive number, not 0",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("eps0")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("eps0"))),
    Row("eps-negative", UsageError, r"eps must be a positive number, not -0.1",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("epsneg")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("epsneg"))),
    Row("eps-above-1", UsageError, r"L-inf eps 2.0 exceeds 1.*8/255",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("eps2")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("eps2"))),
    Row("unknown-norm", UsageError, r"unknown norm 'l3'.*'linf' or 'l2'",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("norm")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("norm"))),
    Row("unknown-attack", Unknown, r"unknown attack 'pgdd'\. Did you mean 'pgd'",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("attack")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("attack"))),
    Row("unknown-objective", Unknown, r"unknown objective 'pgd-att'\. Did you mean 'pgd-at'",
        cli=lambda ws: ["train", "--objective", "pgd-att", "--out", ws.root / "trained", "--no-progress"],
        api=_train(objective="pgd-att"), after=_no_file("trained.safetensors")),
    Row("unknown-dataset", Unknown, r"unknown dataset 'digitz'\. Did you mean 'digits'",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", "digitz"), api=_load_dataset("digitz")),
    Row("unknown-suite", Unknown, r"unknown suite 'quik'\. Did you mean 'quick'",
        cli=_cli_eval(lambda ws: ws.good, "--suite", "quik"), api=_api_eval(lambda ws: ws.good, suite="quik")),
    Row("malformed-suite-toml", UsageError, r"syntax.toml: malformed TOML: .*line 4",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("syntax")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("syntax"))),
    Row("suite-unknown-field", UsageError, r"field.toml line 5: attack #1 has unknown field\(s\) \['epz'\]",
        cli=_cli_eval(lambda ws: ws.good, "--suite", _suite("field")),
        api=_api_eval(lambda ws: ws.good, suite=_suite("field"))),
    Row("run-name-traversal", UsageError, r"invalid run name '\.\./x'.*under the output root",
        cli=_cli_eval(lambda ws: ws.good, "--name", "../x"), api=_api_eval(lambda ws: ws.good, name="../x"),
        after=_no_file("x")),
    Row("run-name-absolute", UsageError, r"invalid run name '/.*abs'",
        cli=_cli_eval(lambda ws: ws.good, "--name", lambda ws: str(ws.root / "abs")),
        api=lambda ws: _api_eval(lambda ws: ws.good, name=str(ws.root / "abs"))(ws), after=_no_file("abs")),
]  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    w = Workspace(tmp_path_factory.mktemp("bad-inputs"))
    w.load_good = lambda: __import__("harness.api", fromlist=["load_model"]).load_model(w.good)[0]  # type: ignore[attr-defined]
    return w


def _images_255(ws: Workspace):
    from harness.data.base import ImageDataset

    d = ws.digits.subset(slice(0, 40))
    return ImageDataset("digits255", d.x * 255, d.y, 10, eps_grid=d.eps_grid)


# The 0-255 row needs a dataset object, not a spec: patch its API call here.
ROWS[[r.id for r in ROWS].index("images-0-255")].api = lambda ws: _api_eval(lambda w: w.good, _images_255(ws))(ws)


def run_cli_in_process(args: list, capsys) -> tuple[int, str]:
    from harness.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code, capsys.readouterr().err


def _check_message(err: str, row: Row) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert " — hint: " in lines[0], lines[0]  # what to do
    assert _search(row.match, lines[0]), (row.match, lines[0])


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, ws: Workspace, capsys) -> None:
    before = ws.snapshot()
    assert row.cli or row.api
    if row.api:
        with pytest.raises(row.error) as exc:
            row.api(ws)
        assert _search(row.match, str(exc.value)), (row.match, str(exc.value))
        assert exc.value.hint, "the error must say what to do"
    if row.cli:
        code, err = run_cli_in_process(row.cli(ws), capsys)
        assert code == 2, err
        _check_message(err, row)
    if row.after:
        row.after(ws)
    assert ws.snapshot() == before, "an earlier result or checkpoint changed"
    shutil.rmtree(ws.root / "rows", ignore_errors=True)


SUBPROCESS_ROWS = ["pickle-creating-a-file"]


@pytest.mark.parametrize(
    "row",
    [pytest.param(r, id=r.id, marks=() if r.id in SUBPROCESS_ROWS else pytest.mark.slow) for r in ROWS if r.cli],
)
def test_bad_input_real_process(row: Row, ws: Workspace) -> None:
    """The same rows through ``python -m harness`` in a fresh process: exit 2, one line, no traceback."""
    before = ws.snapshot()
    p = cli(*row.cli(ws))
    assert p.returncode == 2, p.stderr
    _check_message(p.stderr, row)
    if row.after:
        row.after(ws)
    assert ws.snapshot() == before


def test_probabilities_are_a_finding_not_an_error(ws: Workspace) -> None:
    from harness.api import evaluate

    res = evaluate(Softmaxed(ws.load_good(), "probs"), "digits", out=ws.root / "rows", name="probs", device="cpu",
                   progress=False, max_samples=40)  # fmt: skip
    assert any(f.check == "probabilities" for f in res.findings)
    shutil.rmtree(ws.root / "rows")


def test_no_space_left_is_a_storage_error_and_earlier_results_stay(ws: Workspace, monkeypatch, capsys) -> None:
    """ENOSPC while re-running into the earlier run: StorageError (CLI exit 2), the old files unchanged."""
    import errno
    import os

    import harness.atomic
    from harness.api import evaluate

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = ws.snapshot()
    monkeypatch.setattr(harness.atomic.os, "replace", no_space)
    with pytest.raises(StorageError, match="No space left on device"):
        evaluate(ws.good, "digits", out=ws.runs, name="earlier", device="cpu", progress=False, max_samples=40)
    code, err = run_cli_in_process(["evaluate", ws.good, "--out", ws.runs, "--name", "earlier", *EVAL], capsys)
    monkeypatch.undo()
    assert code == 2
    _check_message(err, Row("enospc", StorageError, r"could not write .*No space left on device.*intact"))
    assert ws.snapshot() == before
    assert not list(ws.earlier.rglob(".*.tmp")), "temporary files left behind"


class _OOMAbove(torch.nn.Module):
    """Raises CUDA out-of-memory on batches larger than ``limit`` (simulating a small GPU)."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_gpu_out_of_memory_halves_the_batch_and_completes(ws: Workspace) -> None:
    from harness.api import evaluate

    kw = dict(out=ws.root / "rows", device="cpu", progress=False, max_samples=24, batch_size=24)
    plain = evaluate(ws.load_good(), "digits", name="plain", **kw)
    small = evaluate(_OOMAbove(ws.load_good(), 6), "digits", name="oom", **kw)
    assert small.config["oom_backoffs"] >= 2 and small.config["final_batch_size"] <= 6
    assert small.clean == plain.clean
    assert [g.accuracy for g in small.groups] == [g.accuracy for g in plain.groups]
    shutil.rmtree(ws.root / "rows")
