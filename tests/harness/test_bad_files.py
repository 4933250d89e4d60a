"""Hostile files and silently wrong numbers (issue 20 §2-§5): each row ends in one line, never a traceback.

A row is one kind of bad input: data files (npy, image folders), checkpoints and sidecars, run
folders and baselines, paths leading out of the output folder, numbers that used to give a wrong
result. Through the CLI it must exit 2 with one line ``error: ... — hint: ...``; through the API it
must raise the documented `HarnessError` subclass. After every row the earlier run, its record and
the checkpoints are hashed again and must be byte-identical, and nothing may appear outside the
workspace. The CLI half runs `harness.cli.main` in-process; some rows by default, and all of them
under ``-m slow``, also run in a real ``python -m harness`` process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import CheckpointError, DataError, HarnessError, UsageError
from tests.harness.cli_helpers import cli

EVAL = ["--device", "cpu", "--no-progress", "--max-samples", "40"]
SUITE = '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.1\n\n[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.3\n'


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR declaring ``width`` x ``height`` 1-bit pixels, with one tiny IDAT.

    Opening it reads only the header: a decompression bomb in a few dozen bytes.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


class Workspace:
    """Good checkpoints, an earlier finished run, and one bad file per row."""

    def __init__(self, root: Path) -> None:
        from safetensors.torch import save_file

        from harness.api import evaluate, load_dataset, train
        from harness.gate import make_baseline
        from harness.models import create_model
        from harness.models.checkpoint import CheckpointMeta, save_checkpoint

        self.root = root
        self.outside = root.parent / f"{root.name}-outside"  # nothing may ever be written here
        self.outside.mkdir()
        digits = load_dataset("digits")
        torch.manual_seed(0)
        self.meta = CheckpointMeta("mlp", {"num_classes": 10, "hidden": [16]}, "digits", 10, [1, 8, 8])
        self.good = save_checkpoint(root / "good", create_model("mlp", digits, hidden=[16]), self.meta)
        self.suite = root / "two-eps.toml"
        self.suite.write_text(SUITE)
        self.runs = root / "runs"
        evaluate(self.good, "digits", str(self.suite), out=self.runs, name="earlier", device="cpu", progress=False,
                 max_samples=40, chunk_size=16)  # fmt: skip
        self.earlier = self.runs / "earlier"
        self.trained = root / "trained" / "ce"
        train("ce", "mlp", "digits", out=self.trained, epochs=1, progress=False, device="cpu",
              model_args={"hidden": [8]}, eval_samples=0)  # fmt: skip
        self.baseline = root / "baseline.json"
        make_baseline(self.earlier).save(self.baseline)

        # ---- npy files -------------------------------------------------------------------------
        x, y = digits.batch(slice(0, 40))
        self.x, self.y = x.numpy(), y.numpy()
        self.npy = root / "npy"
        self.npy.mkdir()
        np.save(self.npy / "x.npy", self.x)
        np.save(self.npy / "y.npy", self.y)
        np.save(self.npy / "x-complex.npy", self.x.astype(np.complex64) + 0.5j)
        np.save(self.npy / "x-int32.npy", (self.x * 255).astype(np.int32))
        huge = self.y.astype(np.int64)
        huge[3] = 2**40
        np.save(self.npy / "y-huge.npy", huge)
        (self.npy / "y-dir.npy").mkdir()
        os.mkfifo(self.npy / "x-fifo.npy")
        os.mkfifo(self.npy / "y-fifo.npy")
        header = self.npy / "y-promises-more.npy"  # the header claims 10^12 labels; the file holds 40
        with open(header, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
            f.write(huge.tobytes())
        with open(self.npy / "y-truncated.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (10**6,)})
            f.write(self.y.astype(np.int64).tobytes())

        # ---- image folders (2 classes, 8x8 RGB crops; model: mlp on 3x8x8, 2 classes) ------------
        from PIL import Image

        self.rgb = save_checkpoint(
            root / "rgb",
            create_model("mlp", None, num_classes=2, in_channels=3, input_size=8, hidden=[8]),
            CheckpointMeta("mlp", {"num_classes": 2, "in_channels": 3, "input_size": 8, "hidden": [8]}, "x", 2,
                           [3, 8, 8]),
        )  # fmt: skip

        def folder(name: str, extra: Callable[[Path], None] | None = None) -> Path:
            base = root / "images" / name
            for cls in ("a", "b"):
                (base / cls).mkdir(parents=True)
                for i in range(2):
                    Image.new("RGB", (12, 10), (40 * i, 90, 200)).save(base / cls / f"{i}.png")
            if extra:
                extra(base)
            return base

        self.img_fifo = folder("fifo", lambda b: os.mkfifo(b / "a" / "pipe.png"))
        self.img_dangling = folder("dangling", lambda b: os.symlink(b / "a" / "gone.png", b / "b" / "link.png"))
        self.img_bomb = folder("bomb", lambda b: png_header_only(b / "a" / "bomb.png", 10_000, 10_000))
        self.img_float = folder(
            "float", lambda b: Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(b / "a" / "f.tif")
        )
        self.img_ok = folder("ok")

        # ---- checkpoints and sidecars ------------------------------------------------------------
        sidecar = json.loads(self.good.with_suffix(".json").read_text())
        state = {k: v.clone() for k, v in create_model("mlp", digits, hidden=[16]).state_dict().items()}

        def ckpt(name: str, tensors: dict[str, torch.Tensor] | None = None, **changes) -> Path:
            path = root / f"{name}.safetensors"
            save_file(tensors or state, str(path))
            from harness.atomic import sha256_file

            meta = {**sidecar, "weights_sha256": sha256_file(path), **changes}
            path.with_suffix(".json").write_text(json.dumps(meta))
            return path

        self.int32 = ckpt("int32", {**state, "head.weight": (state["head.weight"] * 100).to(torch.int32)})
        self.complex = ckpt("complex", {**state, "head.bias": state["head.bias"].to(torch.complex64)})
        big = state["head.weight"].double()
        big[0, 0] = 1e300
        self.overflow = ckpt("overflow", {**state, "head.weight": big})
        self.fp64 = ckpt("fp64", {k: v.double() for k, v in state.items()})
        self.huge_hidden = ckpt("huge-hidden", arch_args={"num_classes": 10, "hidden": [200_000_000]})
        self.huge_classes = ckpt("huge-classes", arch_args={"num_classes": 10**11, "hidden": [16]})
        self.str_classes = ckpt("str-classes", num_classes="ten")
        self.bad_shape = ckpt("bad-shape", input_shape="1x8x8")
        self.bad_args = ckpt("bad-args", arch_args={"num_classes": 10, "hidden": "abc"})
        self.fifo_weights = root / "fifo-weights.safetensors"
        os.mkfifo(self.fifo_weights)
        self.fifo_weights.with_suffix(".json").write_text(json.dumps(sidecar))

        # ---- damaged copies of the earlier run, and a baseline with a renamed key ----------------
        self.damaged: dict[str, Path] = {}
        for case, damage in DAMAGE.items():
            d = root / "damaged" / case
            shutil.copytree(self.earlier, d, ignore=shutil.ignore_patterns(".lock"))
            damage(d)
            self.damaged[case] = d
        b = json.loads(self.baseline.read_text())
        b["metrics"][0]["kee"] = b["metrics"][0].pop("key")
        self.renamed = root / "renamed-key.json"
        self.renamed.write_text(json.dumps(b))
        self.bad_baselines: dict[str, Path] = {}
        for case, edit in BASELINE_DAMAGE.items():
            self.bad_baselines[case] = root / f"baseline-{case}.json"
            self.bad_baselines[case].write_text(json.dumps(edit(json.loads(self.baseline.read_text()))))

    def snapshot(self) -> dict[str, str]:
        """sha256 of the earlier run (record included), the checkpoints, and a listing of the outside folder."""
        files = [p for p in self.earlier.rglob("*") if p.is_file() and p.name != ".lock"]
        files += [self.good, self.good.with_suffix(".json"), self.baseline]
        files += [p for p in self.trained.parent.iterdir() if p.is_file() and not p.name.endswith(".lock")]
        out = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        out["outside"] = repr(sorted(str(p) for p in self.outside.rglob("*")))
        return out


def _edit_json(name: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = d / name
        p.write_text(json.dumps(edit(json.loads(p.read_text()))))

    return damage


def _set(key: str, value: object) -> Callable[[dict], dict]:
    return lambda obj: {**obj, key: value}


def _dataset_named(name: str) -> Callable[[dict], dict]:
    return lambda obj: {**obj, "dataset": {**obj["dataset"], "name": name}}


def _replace_in(path: tuple, value: object) -> Callable[[dict], dict]:
    """The document with the value at ``path`` (keys and list indices) replaced."""

    def edit(doc: dict) -> dict:
        node = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return doc

    return edit


def _truncate_chunk(d: Path) -> None:
    p = d / "records" / "chunk-000001.npz"
    p.write_bytes(p.read_bytes()[:100])


def _foreign_chunk(d: Path) -> None:
    """What an interrupted overwrite left before this fix: the old result.json beside a new chunk."""
    _edit_json("records/chunk-000000.json", _set("config_hash", "0123456789abcdef"))(d)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "result-null": lambda d: (d / "result.json").write_text("null"),
    "result-list": lambda d: (d / "result.json").write_text("[1, 2]"),
    "index-chunk-size-0": _edit_json("records/index.json", _set("chunk_size", 0)),
    "index-not-object": lambda d: (d / "records" / "index.json").write_text('"x"'),
    "truncated-chunk": _truncate_chunk,
    "stale-result": _foreign_chunk,
    "chunk-count-mismatch": _edit_json("result.json", lambda r: {**r, "record": {**r["record"], "chunks": 9}}),
    "dataset-name-traversal": _edit_json("result.json", _dataset_named("../../../../x")),
    "dataset-name-absolute": _edit_json("result.json", _dataset_named("/tmp/harness-export-escape")),
    "record-path-traversal": _edit_json("result.json", lambda r: {**r, "record": {**r["record"], "path": "../x"}}),
    "per-class-inf": _edit_json("result.json", _set("per_class_clean", [math.inf])),
    "per-class-above-1": _edit_json("result.json", lambda r: {**r, "per_class_clean": [10, *r["per_class_clean"][1:]]}),
    "class-count-null": _edit_json("result.json", lambda r: {**r, "extra": {**r["extra"], "class_counts": [None]}}),
    "group-per-class-short": _edit_json(
        "result.json", lambda r: {**r, "groups": [{**r["groups"][0], "per_class": [0.5]}, *r["groups"][1:]]}),
    "clean-accuracy-edited": _edit_json("result.json", _replace_in(("clean", "accuracy"), 0)),
    "versions-null": _edit_json("result.json", _replace_in(("environment", "versions"), None)),
    "group-eps-inf": _edit_json("result.json", _replace_in(("groups", 0, "eps"), math.inf)),
    "entry-without-cumulative": _edit_json(
        "result.json", lambda r: {**r, "groups": [{**r["groups"][0], "entries": [
            {k: v for k, v in r["groups"][0]["entries"][0].items() if k != "cumulative"}]}, *r["groups"][1:]]}),
    "reliability-short": _edit_json(
        "result.json", _replace_in(("extra", "calibration", "groups", "clean", "reliability", "accuracy"), [])),
    "index-entry-without-norm": _edit_json(
        "records/index.json", lambda i: {**i, "entries": [{k: v for k, v in i["entries"][0].items() if k != "norm"},
                                                          *i["entries"][1:]]}),
    "index-entry-added": _edit_json("records/index.json", lambda i: {**i, "entries": [*i["entries"], i["entries"][0]]}),
}  # fmt: skip


# Baselines with a field of the wrong type or range (written next to the good one).
BASELINE_DAMAGE: dict[str, Callable[[dict], dict]] = {
    "entries-null": _replace_in(("suite", "entries"), None),
    "entry-not-object": _replace_in(("suite", "entries", 0), 0.9),
    "samples-n-inf": _replace_in(("samples", "n"), math.inf),
    "seed-inf": _replace_in(("seed",), math.inf),
    "metrics-object": _replace_in(("metrics",), {}),
    "metric-dropped": lambda b: {**b, "metrics": [m for m in b["metrics"] if m["key"] != "linf-0.3"]},
    "samples-n-10^12": _replace_in(("samples", "n"), 10**12),
    # 130 KB of base64 that inflate to 100 MB of ids: refused after the promised n ids are read.
    "ids-zlib-bomb": _replace_in(("samples", "ids"), base64.b64encode(zlib.compress(b"\0" * 10**8, 9)).decode()),
}


@dataclass
class Row:
    """One mistake: CLI arguments and/or an API call, the error type and a regex on its message."""

    id: str
    error: type[HarnessError]
    match: str
    cli: Callable[[Workspace], list] | None = None
    api: Callable[[Workspace], object] | None = None
    after: Callable[[Workspace], None] | None = None


def _cli_eval(model, *extra):
    # The row's own options come last, so that they win over EVAL's (--max-samples).
    return lambda ws: ["evaluate", model(ws), "--out", ws.root / "rows", *EVAL,
                       *[e(ws) if callable(e) else e for e in extra]]  # fmt: skip


def _api_eval(model, data="digits", **kw):
    from harness.api import evaluate

    return lambda ws: evaluate(model(ws), data(ws) if callable(data) else data, "quick", out=ws.root / "rows",
                               name="row", device="cpu", progress=False, **{"max_samples": 40, **kw})  # fmt: skip


def _npy(x: str, y: str | None = "y.npy", extra: str = "") -> Callable[[Workspace], str]:
    return lambda ws: f"npy:x={ws.npy / x}" + (f",y={ws.npy / y}" if y else "") + extra


def _images(attr: str) -> Callable[[Workspace], str]:
    return lambda ws: f"imagefolder:root={getattr(ws, attr)},size=8,resize=8"


def _load_dataset(spec):
    from harness.api import load_dataset

    return lambda ws: load_dataset(spec(ws))


def _first_batch(spec):
    """Image files are decoded lazily: load the dataset and decode every image."""
    from harness.api import load_dataset

    def run(ws):
        ds = load_dataset(spec(ws))
        return ds.batch(slice(0, len(ds)))

    return run


def _load_model(attr: str):
    from harness.api import load_model

    return lambda ws: load_model(getattr(ws, attr))


def _damaged(case: str) -> Callable[[Workspace], Path]:
    return lambda ws: ws.damaged[case]


def _report(case: str):
    from harness.reporting import build_report

    return lambda ws: build_report([ws.damaged[case]], ws.root / "report-out")


def _export(run, threat: str | None = None):
    from harness.reporting import export_robustbench

    return lambda ws: export_robustbench(run(ws), ws.root / "export-out", threat=threat)


def _compare(case: str):
    from harness.reporting import compare_runs

    return lambda ws: compare_runs([ws.earlier, ws.damaged[case]])


def _check_baseline(case: str) -> Callable[[Workspace], list]:
    return lambda ws: ["check", ws.earlier, "--baseline", ws.bad_baselines[case]]


def _check_baseline_api(case: str):
    from harness.gate import check

    return lambda ws: check(ws.earlier, ws.bad_baselines[case])


def _nothing_at(*names: str) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        for n in names:
            assert not (ws.root / n).exists(), f"{n} was written"

    return check


ROWS = [
    # §2 numbers that were silently wrong
    Row("chunk-size-negative", UsageError, r"chunk_size must be a positive integer, not -4",
        cli=_cli_eval(lambda ws: ws.good, "--chunk-size", "-4"), api=_api_eval(lambda ws: ws.good, chunk_size=-4),
        after=_nothing_at("rows")),
    Row("chunk-size-zero", UsageError, r"chunk_size must be a positive integer, not 0",
        cli=_cli_eval(lambda ws: ws.good, "--chunk-size", "0"), api=_api_eval(lambda ws: ws.good, chunk_size=0)),
    Row("max-samples-negative", UsageError, r"max_samples must be a positive integer, not -1",
        cli=_cli_eval(lambda ws: ws.good, "--max-samples", "-1"), api=_api_eval(lambda ws: ws.good, max_samples=-1)),
    Row("max-samples-zero", UsageError, r"max_samples must be a positive integer, not 0",
        cli=_cli_eval(lambda ws: ws.good, "--max-samples", "0"), api=_api_eval(lambda ws: ws.good, max_samples=0)),
    Row("export-unknown-threat", UsageError, r"has no threat model 'linf-0.25'.*its threat models: linf-0.1, linf-0.3",
        cli=lambda ws: ["export", ws.earlier, "--threat", "linf-0.25", "--out", ws.root / "export-out"],
        api=_export(lambda ws: ws.earlier, "linf-0.25"), after=_nothing_at("export-out")),
    Row("export-threat-of-other-norm", UsageError, r"has no threat model 'l2-0.1'",
        cli=lambda ws: ["export", ws.earlier, "--threat", "l2-0.1", "--out", ws.root / "export-out"],
        api=_export(lambda ws: ws.earlier, "l2-0.1"), after=_nothing_at("export-out")),
    Row("npy-complex-pixels", DataError, r"complex pixels .*imaginary part would be dropped",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x-complex.npy")),
        api=_load_dataset(_npy("x-complex.npy"))),
    Row("npy-int32-pixels", DataError, r"pixels of dtype int32 are neither uint8 .* nor float",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x-int32.npy")), api=_load_dataset(_npy("x-int32.npy"))),
    Row("int32-weights", CheckpointError, r"wrong dtype: head\.weight: file torch\.int32 vs model torch\.float32",
        cli=_cli_eval(lambda ws: ws.int32), api=_load_model("int32")),
    Row("complex-weights", CheckpointError,
        r"wrong dtype: head\.bias: file torch\.complex64 vs model torch\.float32 \(complex values",
        cli=_cli_eval(lambda ws: ws.complex), api=_load_model("complex")),
    Row("float64-weights-overflowing", CheckpointError,
        r"head\.weight hold values that torch\.float32 cannot represent",
        cli=_cli_eval(lambda ws: ws.overflow), api=_load_model("overflow")),
    Row("image-float-mode", DataError, r"f\.tif has pixel mode 'F'",
        cli=_cli_eval(lambda ws: ws.rgb, "--dataset", _images("img_float")), api=_first_batch(_images("img_float"))),
    Row("train-over-another-objective", UsageError, r"ce\.safetensors already holds a checkpoint of objective 'ce'.*"
        r"training 'mixup' there would replace it.*--overwrite",
        cli=lambda ws: ["train", "--objective", "mixup", "--model", "mlp", "--model-arg", "hidden=[8]", "--out",
                        ws.trained, "--epochs", "1", "--device", "cpu", "--no-progress"],
        api=lambda ws: __import__("harness.api", fromlist=["train"]).train(
            "mixup", "mlp", "digits", out=ws.trained, epochs=1, progress=False, device="cpu",
            model_args={"hidden": [8]}, eval_samples=0)),
    Row("report-stale-result", DataError, r"result\.json is not the result of the record .*chunk chunk-000000\.json "
        r"belongs to another evaluation", cli=lambda ws: ["report", ws.damaged["stale-result"], "--out",
                                                           ws.root / "report-out"],
        api=_report("stale-result"), after=_nothing_at("report-out")),
    Row("export-stale-result", DataError, r"result\.json is not the result of the record",
        cli=lambda ws: ["export", ws.damaged["stale-result"], "--out", ws.root / "export-out"],
        api=_export(_damaged("stale-result")), after=_nothing_at("export-out")),
    Row("report-chunk-count-mismatch", DataError, r"it counts 9 chunks, the record 3",
        cli=lambda ws: ["report", ws.damaged["chunk-count-mismatch"], "--out", ws.root / "report-out"],
        api=_report("chunk-count-mismatch"), after=_nothing_at("report-out")),
    # §3 writes outside the output folder
    Row("export-dataset-name-traversal", UsageError, r"'\.\./\.\./\.\./\.\./x' is not a single folder or file name",
        cli=lambda ws: ["export", ws.damaged["dataset-name-traversal"], "--out", ws.root / "export-out"],
        api=_export(_damaged("dataset-name-traversal"))),
    Row("export-dataset-name-absolute", UsageError, r"'/tmp/harness-export-escape' is not a single folder",
        cli=lambda ws: ["export", ws.damaged["dataset-name-absolute"], "--out", ws.root / "export-out"],
        api=_export(_damaged("dataset-name-absolute")), after=lambda ws: _no_escape()),
    Row("record-path-traversal", UsageError, r"record folder in result\.json '\.\./x' is not a single folder",
        cli=lambda ws: ["report", ws.damaged["record-path-traversal"], "--out", ws.root / "report-out"],
        api=_report("record-path-traversal")),
    Row("run-folder-symlink-out", UsageError, r"run name .*linked leads outside .* through a symbolic link",
        cli=lambda ws: ["evaluate", ws.good, "--out", ws.runs, "--name", "linked", *EVAL],
        api=lambda ws: __import__("harness.api", fromlist=["x"]).evaluate(
            ws.good, "digits", out=ws.runs, name="linked", device="cpu", progress=False, max_samples=40)),
    Row("export-folder-symlink-out", UsageError, r"export path .*model_info.* leads outside .*symbolic link",
        cli=lambda ws: ["export", ws.earlier, "--out", ws.root / "export-linked"],
        api=lambda ws: __import__("harness.reporting", fromlist=["x"]).export_robustbench(
            ws.earlier, ws.root / "export-linked")),
    # §4 resource exhaustion from tiny inputs
    Row("npy-label-2^40", DataError, r"largest label is 1099511627776, which would mean 1099511627777 classes",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", "y-huge.npy")),
        api=_load_dataset(_npy("x.npy", "y-huge.npy"))),
    Row("npy-num-classes-1e11", UsageError, r"num_classes = 100000000000(\.0)? is out of range",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", extra=",num_classes=1e11")),
        api=_load_dataset(_npy("x.npy", extra=",num_classes=1e11"))),
    Row("npy-num-classes-10^11", UsageError, r"num_classes = 100000000000 is out of range",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", extra=",num_classes=100000000000")),
        api=_load_dataset(_npy("x.npy", extra=",num_classes=100000000000"))),
    Row("npy-header-promises-more", DataError, r"more than the 100000000 the harness reads",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", "y-promises-more.npy")),
        api=_load_dataset(_npy("x.npy", "y-promises-more.npy"))),
    Row("npy-header-truncated", DataError, r"y-truncated\.npy is truncated: its header promises \(1000000,\) int64",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", "y-truncated.npy")),
        api=_load_dataset(_npy("x.npy", "y-truncated.npy"))),
    Row("sidecar-hidden-2e8", CheckpointError, r"arch_args refused: model 'mlp': hidden\[0\] = 200000000 is out",
        cli=_cli_eval(lambda ws: ws.huge_hidden), api=_load_model("huge_hidden")),
    Row("sidecar-num-classes-1e11", CheckpointError, r"arch_args refused: model 'mlp': num_classes = 1e?0+ is out",
        cli=_cli_eval(lambda ws: ws.huge_classes), api=_load_model("huge_classes")),
    Row("npy-x-named-pipe", DataError, r"image file .*x-fifo\.npy is a named pipe, not a regular file",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x-fifo.npy")), api=_load_dataset(_npy("x-fifo.npy"))),
    Row("npy-y-named-pipe", DataError, r"label file .*y-fifo\.npy is a named pipe",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", "y-fifo.npy")),
        api=_load_dataset(_npy("x.npy", "y-fifo.npy"))),
    Row("imagefolder-named-pipe", DataError, r"image .*pipe\.png is a named pipe",
        cli=_cli_eval(lambda ws: ws.rgb, "--dataset", _images("img_fifo")), api=_load_dataset(_images("img_fifo"))),
    Row("weights-named-pipe", CheckpointError, r"weights file .*fifo-weights\.safetensors is a named pipe",
        cli=_cli_eval(lambda ws: ws.fifo_weights), api=_load_model("fifo_weights")),
    Row("png-decompression-bomb", DataError, r"bomb\.png declares 10000x10000 pixels, more than the 89478485",
        cli=_cli_eval(lambda ws: ws.rgb, "--dataset", _images("img_bomb")), api=_first_batch(_images("img_bomb"))),
    # §5 data and file classes that gave tracebacks
    Row("npy-y-missing", UsageError, r"dataset 'npy' needs the parameter 'y'",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", None)), api=_load_dataset(_npy("x.npy", None))),
    Row("npy-y-directory", DataError, r"label file .*y-dir\.npy is a directory",
        cli=_cli_eval(lambda ws: ws.good, "--dataset", _npy("x.npy", "y-dir.npy")),
        api=_load_dataset(_npy("x.npy", "y-dir.npy"))),
    Row("imagefolder-dangling-symlink", DataError, r"image .*link\.png is a dangling symbolic link",
        cli=_cli_eval(lambda ws: ws.rgb, "--dataset", _images("img_dangling")),
        api=_load_dataset(_images("img_dangling"))),
    Row("sidecar-num-classes-string", CheckpointError, r"wrong type or range: num_classes \('ten': an integer",
        cli=_cli_eval(lambda ws: ws.str_classes), api=_load_model("str_classes")),
    Row("sidecar-input-shape-string", CheckpointError, r"input_shape \('1x8x8': \[channels",
        cli=_cli_eval(lambda ws: ws.bad_shape), api=_load_model("bad_shape")),
    Row("sidecar-arch-args-wrong-type", CheckpointError, r"arch_args refused: model 'mlp': hidden = 'abc' is a string",
        cli=_cli_eval(lambda ws: ws.bad_args), api=_load_model("bad_args")),
    Row("result-null", UsageError, r"result\.json: a result must be a JSON object, not NoneType",
        cli=lambda ws: ["report", ws.damaged["result-null"], "--out", ws.root / "report-out"],
        api=_report("result-null")),
    Row("result-list", UsageError, r"result\.json: a result must be a JSON object, not list",
        cli=lambda ws: ["export", ws.damaged["result-list"], "--out", ws.root / "export-out"],
        api=_export(_damaged("result-list"))),
    Row("index-chunk-size-0", DataError, r"index\.json is not a valid record index: chunk_size is 0",
        cli=lambda ws: ["compare", ws.earlier, ws.damaged["index-chunk-size-0"], "--out", ws.root / "cmp"],
        api=_compare("index-chunk-size-0"), after=_nothing_at("cmp")),
    Row("index-not-object", DataError, r"index\.json is not a valid record index: it holds str",
        cli=lambda ws: ["check", ws.damaged["index-not-object"], "--baseline", ws.baseline],
        api=lambda ws: __import__("harness.gate", fromlist=["x"]).check(ws.damaged["index-not-object"], ws.baseline)),
    Row("compare-truncated-chunk", DataError, r"chunk-000001\.npz is truncated, corrupt or from another evaluation",
        cli=lambda ws: ["compare", ws.earlier, ws.damaged["truncated-chunk"], "--out", ws.root / "cmp"],
        api=_compare("truncated-chunk"), after=_nothing_at("cmp")),
    Row("baseline-renamed-key", UsageError, r"renamed-key\.json: metric #1 lacks a key, kind or bits string",
        cli=lambda ws: ["check", ws.earlier, "--baseline", ws.renamed],
        api=lambda ws: __import__("harness.gate", fromlist=["x"]).check(ws.earlier, ws.renamed)),
    Row("baseline-entries-null", UsageError, r"suite\.corruptions or suite\.verify is not a list",
        cli=_check_baseline("entries-null"), api=_check_baseline_api("entries-null")),
    Row("baseline-entry-not-object", UsageError, r"suite\.entries, .* is not a list of objects",
        cli=_check_baseline("entry-not-object"), api=_check_baseline_api("entry-not-object")),
    Row("baseline-samples-n-inf", UsageError, r"samples\.n is inf, not an integer >= 0",
        cli=_check_baseline("samples-n-inf"), api=_check_baseline_api("samples-n-inf")),
    Row("baseline-samples-n-10^12", UsageError, r"samples\.n is 1000000000000, more than the 100000000 samples",
        cli=_check_baseline("samples-n-10^12"), api=_check_baseline_api("samples-n-10^12")),
    Row("baseline-ids-zlib-bomb", DataError, r"baseline holds more sample ids, expected 40",
        cli=_check_baseline("ids-zlib-bomb"), api=_check_baseline_api("ids-zlib-bomb")),
    Row("baseline-seed-inf", UsageError, r"seed is inf, not an integer",
        cli=_check_baseline("seed-inf"), api=_check_baseline_api("seed-inf")),
    Row("baseline-metrics-object", UsageError, r"metrics is not a list of objects",
        cli=_check_baseline("metrics-object"), api=_check_baseline_api("metrics-object")),
    Row("baseline-metric-dropped", UsageError, r"has no bits for metric\(s\) \['linf-0\.3'\] of the same suite",
        cli=_check_baseline("metric-dropped"), api=_check_baseline_api("metric-dropped")),
    Row("report-per-class-inf", UsageError, r"per_class_clean is not a list of fractions in \[0, 1\]",
        cli=lambda ws: ["report", ws.damaged["per-class-inf"], "--out", ws.root / "report-out"],
        api=_report("per-class-inf"), after=_nothing_at("report-out")),
    Row("report-per-class-above-1", UsageError, r"per_class_clean is not a list of fractions in \[0, 1\]",
        cli=lambda ws: ["report", ws.damaged["per-class-above-1"], "--out", ws.root / "report-out"],
        api=_report("per-class-above-1"), after=_nothing_at("report-out")),
    Row("report-class-count-null", UsageError, r"result\.extra\.class_counts\[0\] is None, not an integer >= 0",
        cli=lambda ws: ["report", ws.damaged["class-count-null"], "--out", ws.root / "report-out"],
        api=_report("class-count-null"), after=_nothing_at("report-out")),
    Row("report-group-per-class-short", UsageError, r"a group's per_class does not hold the 10 classes",
        cli=lambda ws: ["report", ws.damaged["group-per-class-short"], "--out", ws.root / "report-out"],
        api=_report("group-per-class-short"), after=_nothing_at("report-out")),
    Row("report-clean-accuracy-edited", UsageError, r"result\.clean: its accuracy and ci95 do not follow from correct",
        cli=lambda ws: ["report", ws.damaged["clean-accuracy-edited"], "--out", ws.root / "report-out"],
        api=_report("clean-accuracy-edited"), after=_nothing_at("report-out")),
    Row("report-versions-null", UsageError, r"result\.environment\.versions is None, not an object",
        cli=lambda ws: ["report", ws.damaged["versions-null"], "--out", ws.root / "report-out"],
        api=_report("versions-null"), after=_nothing_at("report-out")),
    Row("export-group-eps-inf", UsageError, r"result\.groups\[0\]\.eps is inf, not a finite number >= 0",
        cli=lambda ws: ["export", ws.damaged["group-eps-inf"], "--out", ws.root / "export-out"],
        api=_export(_damaged("group-eps-inf")), after=_nothing_at("export-out")),
    Row("report-entry-without-cumulative", UsageError, r"result\.groups\[0\]\.entries\[0\] has no cumulative",
        cli=lambda ws: ["report", ws.damaged["entry-without-cumulative"], "--out", ws.root / "report-out"],
        api=_report("entry-without-cumulative"), after=_nothing_at("report-out")),
    Row("report-reliability-short", UsageError, r"clean\.reliability: edges must be one more than the bins",
        cli=lambda ws: ["report", ws.damaged["reliability-short"], "--out", ws.root / "report-out"],
        api=_report("reliability-short"), after=_nothing_at("report-out")),
    Row("index-entry-without-norm", DataError,
        r"index\.json is not a valid record index: entries .* \(an attack's with a norm and an eps\)",
        cli=lambda ws: ["check", ws.damaged["index-entry-without-norm"], "--baseline", ws.baseline],
        api=lambda ws: __import__("harness.gate", fromlist=["x"]).read_run(ws.damaged["index-entry-without-norm"])),
    Row("index-entry-added", DataError, r"records has no column\(s\) \['s2'\] for its index",
        cli=lambda ws: ["check", ws.damaged["index-entry-added"], "--baseline", ws.baseline],
        api=lambda ws: __import__("harness.gate", fromlist=["x"]).read_run(ws.damaged["index-entry-added"])),
]  # fmt: skip

# Rows that also run in a real process by default (one per class of input); all of them under -m slow.
SUBPROCESS_ROWS = {
    "chunk-size-negative", "export-unknown-threat", "export-dataset-name-traversal", "npy-x-named-pipe",
    "sidecar-hidden-2e8", "report-stale-result",
}  # fmt: skip


def _no_escape() -> None:
    assert not Path("/tmp/harness-export-escape").exists()


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    w = Workspace(tmp_path_factory.mktemp("bad-files"))
    os.symlink(w.outside, w.runs / "linked")  # a run folder that is a link leading out of --out
    (w.root / "export-linked").mkdir()
    os.symlink(w.outside, w.root / "export-linked" / "model_info")
    return w


def run_cli_in_process(args: list, capsys) -> tuple[int, str]:
    from harness.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code, capsys.readouterr().err


def check_message(err: str, row: Row) -> None:
    import re

    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("error: ") and " — hint: " in lines[0], lines[0]
    assert re.search(row.match, lines[0]), (row.match, lines[0])


@pytest.mark.timeout(120)  # a named pipe that is opened blocks forever: fail instead of hanging
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_file(row: Row, ws: Workspace, capsys) -> None:
    import re

    before = ws.snapshot()
    if row.api:
        with pytest.raises(row.error) as exc:
            row.api(ws)
        assert re.search(row.match, str(exc.value)), (row.match, str(exc.value))
        assert exc.value.hint, "the error must say what to do"
    if row.cli:
        code, err = run_cli_in_process(row.cli(ws), capsys)
        assert code == 2, err
        check_message(err, row)
    if row.after:
        row.after(ws)
    assert ws.snapshot() == before, "an earlier result, record or checkpoint changed, or a file appeared outside"
    shutil.rmtree(ws.root / "rows", ignore_errors=True)


@pytest.mark.parametrize(
    "row",
    [pytest.param(r, id=r.id, marks=() if r.id in SUBPROCESS_ROWS else pytest.mark.slow) for r in ROWS if r.cli],
)
def test_bad_file_real_process(row: Row, ws: Workspace) -> None:
    """The same rows through ``python -m harness`` in a fresh process: exit 2, one line, no traceback."""
    before = ws.snapshot()
    p = cli(*row.cli(ws), timeout=120)
    assert p.returncode == 2, p.stderr
    check_message(p.stderr, row)
    if row.after:
        row.after(ws)
    assert ws.snapshot() == before
    shutil.rmtree(ws.root / "rows", ignore_errors=True)


def test_sidecar_promising_a_huge_model_allocates_nothing(ws: Workspace) -> None:
    """The 1 KB sidecar with hidden=[200000000] is refused before the model is built: RSS stays flat."""
    import resource

    from harness.api import load_model

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    before = rss_mib()
    with pytest.raises(CheckpointError):
        load_model(ws.huge_hidden)
    assert rss_mib() - before < 200, "the skeleton check must not allocate the model"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 8 * 1024 * 1024  # KiB: never near 51 GB


def test_export_accepts_equivalent_spellings_of_a_key(ws: Workspace, tmp_path: Path) -> None:
    """linf-0.3, linf-0.30, Linf-0.300 name the same threat model; k/255 spellings too."""
    from harness.reporting import export_robustbench
    from harness.reporting.summary import canonical_threat

    assert canonical_threat("linf-0.30") == canonical_threat("Linf-0.3") == "linf-0.3"
    assert canonical_threat("linf-8/255") == "linf-0.0313725" and canonical_threat("linf-x") is None
    for i, spelling in enumerate(("linf-0.3", "linf-0.30", "LINF-0.300", "linf-76.5/255")):
        info = json.loads(export_robustbench(ws.earlier, tmp_path / str(i), threat=spelling)[0].read_text())
        assert info["eps"] == 0.3 and "at L∞ 0.3 " in info["footnote"], spelling
    assert json.loads(export_robustbench(ws.earlier, tmp_path / "d", threat="linf-0.1")[0].read_text())["eps"] == 0.1
    from harness.reporting import load_runs
    from harness.reporting import summary as S

    results = [r.result for r in load_runs([ws.earlier])]
    assert S.headline_threat(results, "LINF-0.30") == "linf-0.3"  # `harness report --threat` too
    with pytest.raises(UsageError, match=r"no threat model 'linf-0\.25'.*linf-0\.1, linf-0\.3"):
        S.headline_threat(results, "linf-0.25")


def test_float64_weights_load_and_give_the_same_model(ws: Workspace) -> None:
    """Floating weights of another precision load (rounded to the model's dtype); the dtype rule refuses the rest."""
    from harness.api import load_model
    from harness.models.checkpoint import dtype_problem

    model, _ = load_model(ws.fp64)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert dtype_problem(torch.float16, torch.float32) is None and dtype_problem(torch.int8, torch.int64) is None
    for bad in ((torch.int32, torch.float32), (torch.float32, torch.int64), (torch.bool, torch.float32),
                (torch.complex64, torch.float32), (torch.bool, torch.int64)):  # fmt: skip
        assert dtype_problem(*bad), bad


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    """A 16-bit greyscale ramp reads as v/65535 (to 8-bit precision), not 255 on 99 % of the pixels."""
    from PIL import Image

    from harness.api import load_dataset

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(ramp).save(tmp_path / cls / "ramp.png")
    assert Image.open(tmp_path / "a" / "ramp.png").mode == "I;16"
    ds = load_dataset(f"imagefolder:root={tmp_path},size=64,resize=64")
    x, _ = ds.batch(slice(0, 1))
    expect = torch.from_numpy(ramp.astype(np.float32) / 65535)
    assert torch.allclose(x[0, 0], expect, atol=1 / 255)  # 8-bit precision: |error| <= half a step, plus rounding
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])  # grey: R = G = B
    assert float((x == 1.0).float().mean()) < 0.01  # PIL's convert("RGB") made 99.6 % white


def test_documented_imagenet_spec_names_the_dataset(ws: Workspace) -> None:
    """`imagefolder:...,name=imagenet` (docs/scale.md) used to crash in Registry.create."""
    from harness.api import load_dataset

    ds = load_dataset(f"imagefolder:root={ws.img_ok},size=8,resize=8,name=imagenet")
    assert ds.name == "imagenet" and len(ds) == 4 and ds.num_classes == 2
    assert load_dataset(f"npy:x={ws.npy / 'x.npy'},y={ws.npy / 'y.npy'},name=mine").name == "mine"


def test_npy_offset_and_class_count_are_read_from_the_header_only(ws: Workspace) -> None:
    """The label file is read after its header is checked; the class count is max label + 1 within the bound."""
    from harness.api import load_dataset

    ds = load_dataset(f"npy:x={ws.npy / 'x.npy'},y={ws.npy / 'y.npy'}")
    assert ds.num_classes == int(ws.y.max()) + 1 and len(ds) == 40
    x, y = ds.batch(slice(0, 40))
    assert torch.equal(x, torch.from_numpy(ws.x)) and torch.equal(y, torch.from_numpy(ws.y))


def _tree_hashes(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_overwrite_with_fewer_chunks_removes_the_old_record(ws: Workspace, tmp_path: Path) -> None:
    """--overwrite with fewer chunks leaves only the new record; the same command then resumes, not refuses."""
    from harness.api import evaluate

    kw = dict(out=tmp_path, name="r", device="cpu", progress=False)
    evaluate(ws.good, "digits", str(ws.suite), chunk_size=10, max_samples=40, **kw)
    assert len(list((tmp_path / "r" / "records").glob("chunk-*.npz"))) == 4
    with pytest.raises(UsageError, match="holds results of a different evaluation"):
        evaluate(ws.good, "digits", str(ws.suite), chunk_size=20, max_samples=20, **kw)
    r = evaluate(ws.good, "digits", str(ws.suite), chunk_size=20, max_samples=20, overwrite=True, **kw)
    assert sorted(p.name for p in (tmp_path / "r" / "records").glob("chunk-*")) == [
        "chunk-000000.json", "chunk-000000.npz"]  # fmt: skip
    assert not (tmp_path / "r" / ".replaced").exists() and r.clean.n == 20
    records = _tree_hashes(tmp_path / "r" / "records")
    again = evaluate(ws.good, "digits", str(ws.suite), chunk_size=20, max_samples=20, **kw)  # no --overwrite
    assert again.clean == r.clean and _tree_hashes(tmp_path / "r" / "records") == records


def test_interrupted_overwrite_keeps_the_old_run_and_reports_nothing_stale(
    ws: Workspace, tmp_path: Path, capsys
) -> None:
    """A kill during --overwrite: the old result and record lie intact in .replaced, `harness report`
    and `export` refuse (no result.json is current), and the same command finishes the new evaluation."""
    from harness.api import evaluate
    from harness.reporting import build_report, load_runs

    kw = dict(out=tmp_path, name="r", device="cpu", progress=False)
    evaluate(ws.good, "digits", str(ws.suite), chunk_size=10, max_samples=40, **kw)
    old = _tree_hashes(tmp_path / "r")
    args = ["evaluate", ws.good, "--suite", ws.suite, "--out", tmp_path, "--name", "r", "--chunk-size", "10",
            "--max-samples", "30", "--seed", "1", "--overwrite", "--device", "cpu", "--no-progress"]  # fmt: skip
    killed = cli(*args, kill_at="eval:chunk@2", timeout=120)  # SIGKILL after the second new chunk
    assert killed.returncode == -9, killed.stderr
    run = tmp_path / "r"
    assert not (run / "result.json").exists() and _tree_hashes(run / ".replaced") == old  # nothing of the old lost
    assert len(list((run / "records").glob("chunk-*.npz"))) == 2  # the new evaluation's first chunks
    for command in (["report", run, "--out", tmp_path / "rep"], ["export", run, "--out", tmp_path / "exp"]):
        code, err = run_cli_in_process(command, capsys)
        assert code == 2 and "Traceback" not in err and "no result" in err, err
    with pytest.raises(UsageError, match=r"no result\.json under"):
        build_report([tmp_path], tmp_path / "rep")  # the set-aside result.json is never found as a run
    evaluate(ws.good, "digits", str(ws.suite), chunk_size=10, max_samples=30, seed=1, overwrite=True, **kw)
    assert not (run / ".replaced").exists()
    (loaded,) = load_runs([run])
    assert loaded.result.clean.n == 30 and loaded.result.config["seed"] == 1


def test_overwrite_that_fails_at_once_leaves_the_old_run_as_it_was(ws: Workspace, tmp_path: Path) -> None:
    """--overwrite with a model that fails its checks: the old run is moved back, byte for byte."""
    from harness.api import evaluate
    from harness.errors import ModelError
    from harness.models import create_model
    from harness.models.checkpoint import save_checkpoint

    kw = dict(out=tmp_path, name="r", device="cpu", progress=False, max_samples=40)
    evaluate(ws.good, "digits", str(ws.suite), chunk_size=16, **kw)
    before = _tree_hashes(tmp_path / "r")
    m = create_model("mlp", None, num_classes=10, hidden=[16])
    torch.nn.init.constant_(m.head.bias, float("nan"))
    nan = save_checkpoint(tmp_path / "nan", m, ws.meta)
    with pytest.raises(ModelError, match="NaN or Inf"):
        evaluate(nan, "digits", str(ws.suite), chunk_size=16, overwrite=True, **kw)
    assert _tree_hashes(tmp_path / "r") == before and not (tmp_path / "r" / ".replaced").exists()


def test_train_overwrite_guard(ws: Workspace, tmp_path: Path) -> None:
    """Same training again: allowed (same weights). Another objective: refused, then replaced with --overwrite."""
    from harness.api import train
    from harness.models.checkpoint import read_meta

    stem = tmp_path / "m"
    kw = dict(out=stem, epochs=1, progress=False, device="cpu", model_args={"hidden": [8]}, eval_samples=0)
    first = train("ce", "mlp", "digits", **kw)
    weights = first.checkpoint.read_bytes()
    again = train("ce", "mlp", "digits", **kw)
    assert again.checkpoint.read_bytes() == weights  # CPU training is bit-reproducible
    with pytest.raises(UsageError, match="already holds a checkpoint of objective 'ce'"):
        train("ce", "mlp", "digits", **{**kw, "lr": 0.01})  # same objective, other settings
    assert first.checkpoint.read_bytes() == weights
    replaced = train("mixup", "mlp", "digits", overwrite=True, **kw)
    assert read_meta(stem).objective == "mixup" and replaced.checkpoint.read_bytes() != weights
