"""Fuzzing every input file and number through the CLI and the API: a result, a one-line error, never a crash.

Hypothesis generates suite TOML, dataset specs, checkpoint sidecars, baselines, ``result.json`` and
``records/index.json`` files (valid ones mutated at a random place, and raw garbage) and the numbers
of the command line (``--batch-size``, ``--chunk-size``, ``--max-samples``, ``--seed``, ``--eps``,
``-p``). Each goes through ``harness.cli.main`` in-process (the entry point ``python -m harness``
calls) and through the matching API function. Allowed outcomes: success (findings included), a
`HarnessError` (CLI: exit 2 and one ``error:`` line), for ``harness check`` a regression (exit 1).
Anything else (exit 3, a traceback, another exception) fails the test.

Generated numbers are small (|n| <= 12, |x| <= 10, plus nan/inf) and paths come from a fixed set in
the workspace, so that a valid input stays cheap and nothing allocates gigabytes or scans the disk:
bounding huge sizes is tested where it is implemented (harness/data, checkpoints).

Profiles: the default (``fast``) runs a few examples per target, well under a minute in all;
``HYPOTHESIS_PROFILE=ci`` runs `CI_EXAMPLES` per costly target and twice that per cheap one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.spec import parse_value
from tests.harness.cli_helpers import ROOT

torch.set_num_threads(1)

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
CI_EXAMPLES = 150
# Parsing-only targets are cheap; targets that run an evaluation or training cost ~1 s per example.
CHEAP = settings(max_examples=CI_EXAMPLES * 2 if CI else 8, suppress_health_check=list(HealthCheck), deadline=None)
COSTLY = settings(max_examples=CI_EXAMPLES if CI else 3, suppress_health_check=list(HealthCheck), deadline=None)
EVAL = ["--device", "cpu", "--no-progress"]


# ---- the workspace: a model, an earlier run, its baseline; fixed paths for path-valued fields ----------
class Workspace:
    def __init__(self, root: Path) -> None:
        from harness.api import evaluate
        from harness.gate import make_baseline

        self.root = root
        gate = ROOT / "tests" / "data" / "gate"
        for suffix in (".safetensors", ".json"):
            shutil.copy(gate / f"pgd_at_digits{suffix}", root / f"model{suffix}")
        self.model = root / "model.safetensors"
        self.sidecar = json.loads((root / "model.json").read_text())
        self.fgsm = root / "fgsm.toml"
        self.fgsm.write_text('[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = [0.05, 0.1]\n')
        self.runs = root / "runs"
        evaluate(self.model, "digits", str(self.fgsm), out=self.runs, name="earlier", device="cpu", progress=False,
                 max_samples=40, chunk_size=16)  # fmt: skip
        self.earlier = self.runs / "earlier"
        self.baseline_path = root / "baseline.json"
        make_baseline(self.earlier).save(self.baseline_path)
        self.baseline = json.loads(self.baseline_path.read_text())
        self.result = json.loads((self.earlier / "result.json").read_text())
        self.index = json.loads((self.earlier / "records" / "index.json").read_text())
        # Targets of path-valued fields (PATHS): a plain file, an empty folder, a folder of junk.
        (root / "empty").mkdir()
        (root / "junk").mkdir()
        (root / "junk" / "a.npy").write_bytes(b"\x93NUMPY junk")
        (root / "junk" / "b.png").write_bytes(b"\x89PNG junk")

    @contextlib.contextmanager
    def scratch(self):
        d = Path(tempfile.mkdtemp(prefix="case-", dir=self.root))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("HARNESS_LOG_DIR", str(tmp_path_factory.mktemp("logs")))


# ---- running and judging -------------------------------------------------------------------------------
def run_cli(args: list) -> tuple[int, str, str]:
    """``harness.cli.main(args)`` in-process: (exit code, stdout, stderr)."""
    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def check_cli(args: list, allowed: tuple[int, ...] = (0, 2)) -> int:
    code, _, err = run_cli(args)
    assert code in allowed, f"harness {' '.join(map(str, args))}\nexit {code}:\n{err}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return code


def check_api(call: Callable[[], Any]) -> Any:
    """The call returns, or raises a `HarnessError` that says what was wrong."""
    try:
        return call()
    except HarnessError as e:
        assert e.what.strip(), "an error without a message"
        return e


# ---- value strategies (bounded by construction) -------------------------------------------------------
TEXT = st.text(alphabet="abcxyz019._-=:, []{}\"'", max_size=6)
NUMBERS = st.one_of(
    st.integers(-3, 12),
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-9, 0.5, 8 / 255]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), TEXT)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(TEXT, SCALARS, max_size=2))
JSON_VALUES = st.one_of(st.none(), VALUES)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def toml_text(doc: dict[str, Any]) -> str:
    """A suite document as TOML: top-level scalars, then [table]s, then [[array]] tables."""
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tables += [f"[[{k}]]", *[f"{json.dumps(str(a))} = {toml_value(b)}" for a, b in item.items()]]
        elif isinstance(v, dict):
            tables += [f"[{k}]", *[f"{json.dumps(str(a))} = {toml_value(b)}" for a, b in v.items()]]
        else:
            lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines + tables) + "\n"


def _registry(kind: str):
    import harness.api  # noqa: F401  (registers everything)
    from harness.registry import REGISTRIES

    return REGISTRIES[kind]


def _params(kind: str, name: str) -> list[str]:
    reg = _registry(kind)
    return list(reg.get(name).parameters()) if name in reg else []


# Budgets whose defaults are large: the CLI-path generator always sets them (to small values).
BUDGETS = ("steps", "restarts", "n_queries", "n", "n0", "binary_search_steps", "eot_iter", "eot_samples",
           "n_verdict", "max_images", "attack_steps", "torchattacks_steps", "bootstrap")  # fmt: skip
CHEAP_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "cw-linf", "cw-l2", "square", "fab")


def sane(value: Any) -> Any:
    """A parameter's default as a TOML value (None when it has none, e.g. a None or callable default)."""
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, list | tuple) and value and all(sane(v) is not None for v in value):
        return list(value)
    return None


@st.composite
def entry(draw, kind: str, names: tuple[str, ...], cheap: bool, wild: bool) -> dict[str, Any]:
    """One suite entry. Its structure (name, norm, eps, severity, fields) is always fuzzed; its params
    are any values when ``wild``, else each chosen parameter at its default (budgets small)."""
    reg_kind = {"attack": "attacks", "corruption": "corruptions", "smoothing": "certifiers"}[kind]
    name = draw(st.one_of(st.sampled_from(names), TEXT))
    keys = draw(st.lists(st.sampled_from(_params(reg_kind, name) or ["x"]), max_size=3))
    if wild:
        params = {k: draw(VALUES) for k in keys}
    else:
        defaults = _registry(reg_kind).get(name).parameters() if name in _registry(reg_kind) else {}
        params = {k: sane(defaults.get(k)) for k in keys if k not in ("norm", "eps", "severity")}
        params = {k: v for k, v in params.items() if v is not None}
    if cheap or not wild:
        params |= {k: draw(st.integers(-1 if wild else 1, 3)) for k in BUDGETS if k in _params(reg_kind, name)}
    e: dict[str, Any] = {"name": name}
    if kind == "attack":
        e["norm"] = draw(st.one_of(st.sampled_from(["linf", "l2", "Linf", "L2", "l1"]), SCALARS))
        e["eps"] = draw(st.one_of(st.just("dataset"), NUMBERS, st.lists(NUMBERS, max_size=3), SCALARS))
    if kind == "corruption":
        e["severity"] = draw(st.one_of(st.integers(-1, 6), st.just("all"), st.lists(st.integers(0, 6), max_size=3),
                                       SCALARS))  # fmt: skip
    if params or draw(st.booleans()):
        e["params"] = params if draw(st.integers(0, 9)) else draw(SCALARS)
    if draw(st.integers(0, 9)) == 0:
        e[draw(st.sampled_from(["label", "when", "epz", "severity"]))] = draw(VALUES)
    return e


@st.composite
def suite_doc(draw, cheap: bool, wild: bool = False) -> dict[str, Any]:
    attacks = CHEAP_ATTACKS if cheap else tuple(_registry("attacks").names())
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["summary"] = draw(st.one_of(TEXT, SCALARS))
    doc["attack"] = draw(st.lists(entry("attack", attacks, cheap, wild), max_size=2))
    if draw(st.booleans()):
        doc["corruption"] = draw(st.lists(entry("corruption", tuple(_registry("corruptions").names()), cheap, wild),
                                          max_size=2))  # fmt: skip
    if draw(st.integers(0, 3)) == 0:
        doc["smoothing"] = draw(st.lists(entry("smoothing", ("smoothing-l2",), cheap, wild), max_size=1))
    if draw(st.integers(0, 3)) == 0:
        keys = draw(st.lists(st.sampled_from(["bootstrap", "bins", "temperature", "x"] if wild else ["bins", "x"])))
        doc["calibration"] = {k: draw(VALUES if wild else st.integers(1, 15)) for k in keys}
        if cheap or not wild:
            doc["calibration"]["bootstrap"] = draw(st.integers(-1 if wild else 1, 3))
    if draw(st.integers(0, 5)) == 0:  # a wrong type for a whole section
        doc[draw(st.sampled_from(["attack", "corruption", "name", "calibration"]))] = draw(VALUES)
    return doc


SUITE_TEXT = st.one_of(
    suite_doc(cheap=False).map(toml_text),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.text(max_size=40),
)
SUITE_TEXT_WILD = suite_doc(cheap=False, wild=True).map(toml_text)


def spec_text(name: str, args: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return json.dumps(v) if isinstance(v, list | dict) else str(v)

    return name + (":" + ",".join(f"{k}={fmt(v)}" for k, v in args.items()) if args else "")


@st.composite
def dataset_spec(draw, ws_paths: list[str]) -> str:
    if draw(st.integers(0, 7)) == 0:
        return draw(TEXT)
    name = draw(st.one_of(st.sampled_from(_registry("datasets").names()), TEXT))
    keys = draw(st.lists(st.sampled_from(_params("datasets", name) or ["x"]), max_size=3, unique=True))
    path_keys = {"root", "x", "y", "hierarchy"}
    args = {k: draw(st.sampled_from(ws_paths)) if k in path_keys else draw(VALUES) for k in keys}
    return spec_text(name, args)


@dataclass(frozen=True)
class Mutation:
    """One change to a JSON document: replace or delete the value at ``path``, replace the whole
    document, or cut its text to a fraction. Path steps are keys, or ints that index a dict's sorted
    keys or a list (modulo its length), so any generated path lands somewhere."""

    kind: str  # "replace" | "delete" | "root" | "truncate"
    path: tuple[str | int, ...] = ()
    value: Any = None
    keep: float = 0.5  # "truncate": the fraction of the text kept

    def apply(self, doc: Any) -> str:
        if self.kind == "root":
            return json.dumps(self.value)
        if self.kind == "truncate":
            text = json.dumps(doc)
            return text[: int(len(text) * min(max(self.keep, 0.0), 1.0))]
        doc = copy.deepcopy(doc)
        parent, key = None, None
        node = doc
        for step in self.path:
            if not isinstance(node, dict | list) or not node:
                break
            if isinstance(node, dict):
                k = step if isinstance(step, str) and step in node else sorted(node)[hash_step(step) % len(node)]
            else:
                k = hash_step(step) % len(node)
            parent, key, node = node, k, node[k]
        if parent is None:
            return json.dumps(self.value)
        if self.kind == "delete" and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = self.value
        return json.dumps(doc, allow_nan=True)


def hash_step(step: str | int) -> int:
    return step if isinstance(step, int) else sum(map(ord, step))


MUTATIONS = st.builds(
    Mutation,
    kind=st.sampled_from(["replace", "replace", "replace", "delete", "root", "truncate"]),
    path=st.lists(st.integers(0, 40), min_size=1, max_size=4).map(tuple),
    value=JSON_VALUES,
    keep=st.floats(0, 1),
)


# ---- the targets -------------------------------------------------------------------------------------------
def evaluation_of(ws: Workspace, suite: str):
    """What `Evaluation` does before any work: parse the suite, resolve its eps, build and validate every entry."""
    from harness.api import load_dataset, load_model
    from harness.engine import EvalConfig, Evaluation

    model, _ = load_model(ws.model)
    data = load_dataset("digits").subset(slice(0, 8))
    return Evaluation(model, data, suite, config=EvalConfig(device="cpu", progress=False))


@given(text=SUITE_TEXT)
@CHEAP
def test_suite_files_through_the_api(ws: Workspace, text: str) -> None:
    suite_api_case(ws, text)


@given(text=suite_doc(cheap=True).map(toml_text))
@COSTLY
def test_suite_files_through_the_cli(ws: Workspace, text: str) -> None:
    suite_cli_case(ws, text)


@given(text=SUITE_TEXT_WILD)
@CHEAP
def test_suite_parameters_through_the_api(ws: Workspace, text: str) -> None:
    """Any value for any declared parameter of an attack, corruption or certifier, and for [calibration]."""
    suite_api_case(ws, text)


@given(text=suite_doc(cheap=True, wild=True).map(toml_text))
@COSTLY
def test_suite_parameters_through_the_cli(ws: Workspace, text: str) -> None:
    suite_cli_case(ws, text)


def suite_api_case(ws: Workspace, text: str) -> None:
    with ws.scratch() as d:
        (d / "s.toml").write_bytes(text.encode("utf-8", "surrogateescape"))
        check_api(lambda: evaluation_of(ws, str(d / "s.toml")))


def suite_cli_case(ws: Workspace, text: str) -> None:
    with ws.scratch() as d:
        (d / "s.toml").write_text(text)
        check_cli(["evaluate", ws.model, "--suite", d / "s.toml", "--out", d, "--max-samples", "6", *EVAL])


# Path-valued arguments come from these names, relative to the workspace (the tests run from there).
PATHS = ["missing", "fgsm.toml", "empty", "junk", "junk/a.npy"]
DATASET_SPECS = dataset_spec(PATHS)


@given(spec=DATASET_SPECS)
@CHEAP
def test_dataset_specs_through_the_api(ws: Workspace, spec: str) -> None:
    from harness.api import load_dataset

    with contextlib.chdir(ws.root):
        check_api(lambda: load_dataset(spec))


@given(spec=DATASET_SPECS)
@COSTLY
def test_dataset_specs_through_the_cli(ws: Workspace, spec: str) -> None:
    with ws.scratch() as d, contextlib.chdir(ws.root):
        check_cli(["evaluate", ws.model, "--dataset", spec, "--suite", ws.fgsm, "--out", d, "--max-samples", "6",
                   *EVAL])  # fmt: skip


def _sidecar_case(ws: Workspace, d: Path, m: Mutation) -> Path:
    shutil.copy(ws.model, d / "m.safetensors")
    (d / "m.json").write_text(m.apply(ws.sidecar))
    return d / "m.safetensors"


@given(m=MUTATIONS)
@CHEAP
def test_sidecars_through_the_api(ws: Workspace, m: Mutation) -> None:
    from harness.api import load_model

    with ws.scratch() as d:
        path = _sidecar_case(ws, d, m)
        check_api(lambda: load_model(path))


@given(m=MUTATIONS)
@COSTLY
def test_sidecars_through_the_cli(ws: Workspace, m: Mutation) -> None:
    with ws.scratch() as d:
        path = _sidecar_case(ws, d, m)
        check_cli(["evaluate", path, "--suite", ws.fgsm, "--out", d, "--max-samples", "6", *EVAL])


@given(m=MUTATIONS)
@CHEAP
def test_baselines_through_the_cli_and_api(ws: Workspace, m: Mutation) -> None:
    """`harness check RUN --baseline B` reads the run (no evaluation): exit 0, 1 or 2; the API likewise."""
    baseline_case(ws, m)


def baseline_case(ws: Workspace, m: Mutation) -> None:
    from harness.gate import check

    with ws.scratch() as d:
        (d / "b.json").write_text(m.apply(ws.baseline))
        check_api(lambda: check(ws.earlier, d / "b.json"))
        check_cli(["check", ws.earlier, "--baseline", d / "b.json"], allowed=(0, 1, 2))


def _run_copy(ws: Workspace, d: Path) -> Path:
    run = d / "run"
    shutil.copytree(ws.earlier, run)
    (run / ".lock").unlink(missing_ok=True)
    return run


READERS = ["report", "compare", "export", "check"]


def _read_with_cli(ws: Workspace, d: Path, run: Path, how: str) -> None:
    args = {
        "report": ["report", run, "--out", d / "report"],
        "compare": ["compare", ws.earlier, run, "--out", d / "compare"],
        "export": ["export", run, "--out", d / "export"],
        "check": ["check", run, "--baseline", ws.baseline_path],
        "resume": ["evaluate", ws.model, "--suite", ws.fgsm, "--out", d, "--name", "run", "--max-samples", "40",
                   "--chunk-size", "16", *EVAL],
    }[how]  # fmt: skip
    check_cli(args, allowed=(0, 1, 2) if how == "check" else (0, 2))


def result_case(ws: Workspace, m: Mutation, how: str) -> None:
    from harness.gate import read_run
    from harness.results import Result

    with ws.scratch() as d:
        run = _run_copy(ws, d)
        (run / "result.json").write_text(m.apply(ws.result))
        check_api(lambda: Result.load(run / "result.json"))
        check_api(lambda: read_run(run))
        for reader in READERS if how == "all" else [how]:
            _read_with_cli(ws, d, run, reader)


@given(m=MUTATIONS, how=st.sampled_from(READERS))
@CHEAP
def test_result_files_through_the_cli_and_api(ws: Workspace, m: Mutation, how: str) -> None:
    result_case(ws, m, how)


def index_case(ws: Workspace, m: Mutation, how: str, cut_chunk: int | None = None) -> None:
    from harness.gate import read_run
    from harness.records import open_record

    with ws.scratch() as d:
        run = _run_copy(ws, d)
        (run / "records" / "index.json").write_text(m.apply(ws.index))
        if cut_chunk is not None:
            chunk = sorted((run / "records").glob("*.npz"))[0]
            chunk.write_bytes(chunk.read_bytes()[:cut_chunk])
        check_api(lambda: open_record(run / "records"))
        check_api(lambda: read_run(run))
        for reader in [*READERS, "resume"] if how == "all" else [how]:  # resume last: it rewrites the record
            _read_with_cli(ws, d, run, reader)


@given(m=MUTATIONS, how=st.sampled_from([*READERS, "resume"]), cut_chunk=st.one_of(st.none(), st.integers(0, 200)))
@CHEAP
def test_index_files_through_the_cli_and_api(ws: Workspace, m: Mutation, how: str, cut_chunk: int | None) -> None:
    """A damaged record index (and maybe a truncated chunk) read by report/compare/export/check, or resumed into."""
    index_case(ws, m, how, cut_chunk)


NUMBER_TEXT = st.one_of(
    st.integers(-10, 600).map(str),
    st.floats(-10, 600, allow_nan=False).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "0", "-1", "auto", "AUTO", "", " 3", "1e3", "0x10", "2**3", "1_0",
                     "9223372036854775808", "-9223372036854775809", "true"]),
    TEXT,
)  # fmt: skip
EPS_TEXT = (
    st.builds(
        lambda norm, vals: f"{norm}={','.join(vals)}",
        st.one_of(st.sampled_from(["linf", "l2", "Linf", "l1"]), TEXT),
        st.lists(NUMBER_TEXT, max_size=3),
    )
    | TEXT
)


def _as_number(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


@given(
    options=st.dictionaries(
        st.sampled_from(["--batch-size", "--chunk-size", "--max-samples", "--seed"]), NUMBER_TEXT, min_size=1
    ),
    eps=st.one_of(st.none(), EPS_TEXT),
)
@COSTLY
def test_cli_numbers_of_evaluate(ws: Workspace, options: dict[str, str], eps: str | None) -> None:
    """Every number option as text, the way a shell passes it; the API gets the same values, parsed or raw."""
    from harness.api import evaluate

    args = [a for k, v in options.items() for a in (k, v)] + (["--eps", eps] if eps is not None else [])
    with ws.scratch() as d:
        check_cli(["evaluate", ws.model, "--suite", ws.fgsm, "--out", d, *args, *EVAL])
        kw = {k.lstrip("-").replace("-", "_"): _as_number(v) for k, v in options.items()}
        check_api(lambda: evaluate(ws.model, "digits", str(ws.fgsm), device="cpu", progress=False, **kw))


TRAIN_KEYS = ["eps", "steps", "step_size", "alpha", "beta", "tau", "sigma", "label_smoothing", "norm", "p"]


@given(
    objective=st.sampled_from(["ce", "pgd-at", "trades", "mixup", "logitclip", "gce", "mart", "gaussian-aug"]),
    values=st.lists(st.tuples(st.one_of(st.sampled_from(TRAIN_KEYS), TEXT), NUMBER_TEXT), max_size=2),
    numbers=st.dictionaries(
        st.sampled_from(["--batch-size", "--seed", "--lr", "--epochs"]),
        st.sampled_from(["0", "-1", "1", "1.5", "nan", "x", "", "64", "inf"]),
        max_size=2,
    ),
)
@COSTLY
def test_cli_numbers_of_train(ws: Workspace, objective: str, values: list, numbers: dict[str, str]) -> None:
    """`harness train`'s numbers (one epoch of an MLP on digits when valid); -p values that are numbers."""
    if numbers.get("--epochs") in ("64", "inf"):
        numbers["--epochs"] = "1"  # bounded cost: at most one epoch when valid
    params = [a for k, v in values if _is_number(v) and k != "norm" for a in ("-p", f"{k}={v}")]
    args = [a for k, v in numbers.items() for a in (k, v)]
    train_case(ws, ["--objective", objective, *params, *args])


def _is_number(text: str) -> bool:
    return isinstance(parse_value(text), int | float) and not isinstance(parse_value(text), bool)


@given(
    objective=st.sampled_from(["ce", "pgd-at", "trades", "mixup", "logitclip", "gce", "mart", "gaussian-aug"]),
    values=st.lists(st.tuples(st.one_of(st.sampled_from(TRAIN_KEYS), TEXT), NUMBER_TEXT), min_size=1, max_size=2),
)
@COSTLY
def test_cli_parameters_of_train(ws: Workspace, objective: str, values: list) -> None:
    """`harness train -p KEY=VALUE` with any text as the value (one epoch of an MLP on digits when valid)."""
    train_case(ws, ["--objective", objective, *[a for k, v in values for a in ("-p", f"{k}={v}")]])


def train_case(ws: Workspace, args: list[str]) -> None:
    with ws.scratch() as d:
        check_cli(["train", "--model", "mlp", "--epochs", "1", *args, "--out", d / "m", "--device", "cpu",
                   "--no-progress"])  # fmt: skip
