"""Declared parameters: every registry entry declares each parameter, and every bad value is refused once,
at the registry boundary, in one line naming the entry, the parameter, the value and what is allowed.

Tables of bad values per class (attack, corruption, certifier, objective, model architecture, dataset,
suite TOML) run through the Python API; one row per class also runs through ``python -m harness`` in a
real process (exit 2, one line, no traceback).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError, UnknownNameError, UsageError
from harness.params import Param
from harness.registry import ATTACKS, CERTIFIERS, CORRUPTIONS, DATASETS, MODELS, OBJECTIVES, REGISTRIES
from tests.harness.cli_helpers import cli

# ---- every entry declares every parameter ---------------------------------------------------------------
# The built-in entries (test helpers and third-party plugins registered by other modules are not ours).
BUILT_IN = ("harness", "attacks", "defenses")
ENTRIES = [
    (kind, e.name)
    for kind, reg in REGISTRIES.items()
    for e in reg.entries()
    if getattr(e.factory, "__module__", "").split(".")[0] in BUILT_IN
]


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}-{n}" for k, n in ENTRIES])
def test_every_parameter_is_declared_and_its_default_validates(kind: str, name: str) -> None:
    entry = REGISTRIES[kind].get(name)
    assert not entry.takes_any, f"{kind} {name} takes **kwargs: its parameters cannot all be checked"
    for pname, p in entry.params.items():
        assert p.declared and p.doc, f"{kind} {name!r}: parameter {pname!r} has no declaration with a doc line"
        assert "any" not in p.kinds, f"{kind} {name!r}: parameter {pname!r} has no known type"
        if "list" in p.kinds:
            assert p.item is not None and "any" not in p.item.kinds, f"{name}.{pname}: undeclared items"
        if "int" in p.kinds:  # counts, sizes and indices always have a bound
            assert p.interval(), f"{kind} {name!r}: integer parameter {pname!r} has no declared range"
        if not p.required:
            p.check(p.default, pname, entry.where)  # the declared default is itself allowed


# ---- the check itself ----------------------------------------------------------------------------------
def _check(p: Param, value):
    return p.check(value, "x", "thing 't'")


def test_a_bool_is_never_a_number_and_a_number_never_a_bool() -> None:
    for kind in ("int", "float"):
        with pytest.raises(UsageError, match="x = True is a boolean, not a number"):
            _check(Param(kind=kind), True)
    with pytest.raises(UsageError, match="x = 1 is an integer; allowed: boolean"):
        _check(Param(kind="bool"), 1)
    assert _check(Param(kind="bool"), False) is False


def test_integers_floats_and_non_finite_values() -> None:
    p = Param(kind="int", ge=1)
    assert _check(p, 20.0) == 20 and type(_check(p, 20.0)) is int  # an integral float is an integer
    for bad, what in ((20.5, "not an integer"), (math.inf, "not a finite number"), (0, "out of range")):
        with pytest.raises(UsageError, match=what):
            _check(p, bad)
    f = Param(kind="float", gt=0, le=1)
    assert f.allowed() == "number in (0, 1]" and type(_check(f, 1)) is float
    for bad, what in ((math.nan, "not a finite number"), (0.0, "out of range"), (10**400, "too large")):
        with pytest.raises(UsageError, match=what):
            _check(f, bad)
    unbounded = Param(kind="float", finite=False)
    assert _check(unbounded, math.inf) == math.inf
    with pytest.raises(UsageError, match="not a finite number"):
        _check(unbounded, math.nan)  # NaN is never a value


def test_lists_none_and_choices() -> None:
    p = Param(kind="list", item=Param(kind="int", ge=1), max_len=2, nullable=True)
    assert _check(p, [3, 4.0]) == [3, 4] and _check(p, None) is None
    with pytest.raises(UsageError, match=r"x\[1\] = -1 is out of range; allowed: integer in \[1, ∞\)"):
        _check(p, [3, -1])
    with pytest.raises(UsageError, match="has 3 items, more than 2"):
        _check(p, [1, 2, 3])
    with pytest.raises(UsageError, match="x = 5 is an integer; allowed: list of integers"):
        _check(p, 5)
    c = Param(kind="str", choices=("a", "b"))
    with pytest.raises(UsageError, match=r"x = 'c' is not a valid choice; allowed: one of 'a', 'b'"):
        _check(c, "c")
    with pytest.raises(UsageError, match=r"is not allowed \(None\)"):
        _check(c, None)


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("int", "20", 20),
        ("int", "2e1", 20),
        ("int", "twenty", "twenty"),  # left as text: the check says "is a string"
        ("float", "0.5", 0.5),
        ("float", "abc", "abc"),
        ("bool", "true", True),
        ("bool", "1", "1"),  # a number is never taken as a bool
        ("str", "'a,b'", "a,b"),
        ("str", "12", "12"),
    ],
)
def test_command_line_text_is_converted_by_the_declared_kind(kind: str, text: str, value) -> None:
    assert Param(kind=kind).parse(text) == value


def test_command_line_lists_and_none() -> None:
    ints = Param(kind="list", item=Param(kind="int"), nullable=True)
    assert ints.parse("[64, 32]") == [64, 32] and ints.parse("-5") == [-5] and ints.parse("none") is None
    assert Param(kind="list", item=Param(kind="str")).parse("[ce, margin]") == ["ce", "margin"]
    assert math.isnan(Param(kind="float").parse("nan"))  # converted, then refused by the check


def test_create_normalises_what_it_accepts() -> None:
    a = ATTACKS.create("pgd", norm="Linf", eps=1, steps=20.0)
    assert (a.norm, a.eps, a.steps, type(a.steps)) == ("linf", 1.0, 20, int)
    # `name` is positional-only: an entry may have a parameter called name (imagefolder, npy).
    assert DATASETS.validate("npy", x="a.npy", y="b.npy", name="mine")["name"] == "mine"


# ---- bad values per class, through the API --------------------------------------------------------------
API_ROWS = [
    # attacks: the issue's list, then one per attack
    (ATTACKS, "pgd", {"steps": -5}, r"attack 'pgd': steps = -5 is out of range; allowed: integer in \[1, ∞\)"),
    (ATTACKS, "pgd", {"steps": 0}, r"steps = 0 is out of range"),
    (ATTACKS, "pgd", {"restarts": 0}, r"restarts = 0 is out of range"),
    (ATTACKS, "pgd", {"step_size": -0.05}, r"step_size = -0.05 is out of range; allowed: number in \(0, ∞\) or None"),
    (ATTACKS, "pgd", {"step_size": math.nan}, r"step_size = nan is not a finite number"),
    (ATTACKS, "pgd", {"eps": True}, r"eps = True is a boolean, not a number"),
    (ATTACKS, "pgd", {"steps": "twenty"}, r"steps = 'twenty' is a string; allowed: integer"),
    (ATTACKS, "pgd", {"eot_samples": -3}, r"eot_samples = -3 is out of range"),
    (ATTACKS, "pgd", {"loss": "nope"}, r"loss = 'nope' is not a valid choice; allowed: one of 'ce', 'margin'"),
    (ATTACKS, "pgd", {"norm": "l3"}, r"norm = 'l3' is not a valid choice; allowed: one of 'linf', 'l2'"),
    (ATTACKS, "fgsm", {"eps": math.inf}, r"attack 'fgsm': eps = inf is not a finite number"),
    (ATTACKS, "cw-linf", {"logit_scale": 0}, r"logit_scale = 0 is out of range"),
    (ATTACKS, "apgd-ce", {"rho": 0}, r"attack 'apgd-ce': rho = 0 is out of range; allowed: number in \(0, 1\]"),
    (ATTACKS, "apgd-t", {"n_target_classes": 0}, r"n_target_classes = 0 is out of range"),
    (ATTACKS, "apgd-dlr", {"eot_iter": 1.5}, r"eot_iter = 1.5 is not an integer"),
    (ATTACKS, "square", {"n_queries": 0}, r"attack 'square': n_queries = 0 is out of range"),
    (ATTACKS, "fab", {"beta": 0}, r"beta = 0 is out of range; allowed: number in \(0, 1\]"),
    (ATTACKS, "pgd", {"early_stop": 1}, r"early_stop = 1 is an integer; allowed: boolean"),
    (ATTACKS, "fab-t", {"mode": "smallest"}, r"mode = .smallest. is not a valid choice"),
    (ATTACKS, "cw-l2", {"norm": "l2", "lr": 0}, r"attack 'cw-l2': lr = 0 is out of range"),
    (ATTACKS, "autoattack", {"backend": "foolbox"}, r"backend = 'foolbox' is not a valid choice"),
    (ATTACKS, "autoattack", {"version": "custom", "components": ["apgd-ce"],
                             "component_params": {"apgd-ce": {"steps": 0}}}, r"attack 'apgd-ce': steps = 0"),
    # corruptions
    (CORRUPTIONS, "fog", {"severity": 6}, r"'fog': severity = 6 is out of range; allowed: integer in \[1, 5\]"),
    (CORRUPTIONS, "fog", {"severity": True}, r"severity = True is a boolean, not a number"),
    (CORRUPTIONS, "snow", {"preset": "cifar100"}, r"preset = 'cifar100' is not a valid choice"),
    (CORRUPTIONS, "glass_blur", {"scale": -1}, r"scale = -1 is out of range"),
    (CORRUPTIONS, "zoom_blur", {"scale": math.nan}, r"scale = nan is not a finite number"),
    # certifier
    (CERTIFIERS, "smoothing-l2", {"alpha": 0.5}, r"certifier 'smoothing-l2': alpha = 0.5 is out of range"),
    (CERTIFIERS, "smoothing-l2", {"n": 0}, r"n = 0 is out of range"),
    (CERTIFIERS, "smoothing-l2", {"sigma": math.nan}, r"sigma = nan is not a finite number"),
    (CERTIFIERS, "smoothing-l2", {"radii": [0.5, -1]}, r"radii\[1\] = -1 is out of range"),
    (CERTIFIERS, "smoothing-l2", {"radii": "0.5"}, r"radii = '0.5' is a string; allowed: list of numbers"),
    # objectives
    (OBJECTIVES, "ce", {"label_smoothing": "abc"}, r"objective 'ce': label_smoothing = 'abc' is a string"),
    (OBJECTIVES, "ce", {"label_smoothing": 2}, r"label_smoothing = 2 is out of range; allowed: number in \[0, 1\]"),
    (OBJECTIVES, "trades", {"beta": -1}, r"objective 'trades': beta = -1 is out of range"),
    (OBJECTIVES, "pgd-at", {"steps": 0}, r"steps = 0 is out of range"),
    (OBJECTIVES, "mart", {"init": "gauss"}, r"init = 'gauss' is not a valid choice"),
    (OBJECTIVES, "mixup", {"alpha": True}, r"alpha = True is a boolean"),
    (OBJECTIVES, "maxup", {"m": 0}, r"m = 0 is out of range"),
    (OBJECTIVES, "mmel-h", {"augmentation": "rotate"}, r"augmentation = 'rotate' is not a valid choice"),
    (OBJECTIVES, "logitclip", {"p": 0.5}, r"p = 0.5 is out of range"),
    (OBJECTIVES, "gaussian-aug", {"sigma": 0}, r"sigma = 0 is out of range"),
    (OBJECTIVES, "odnl", {"aux_batch": 0}, r"aux_batch = 0 is out of range"),
    (OBJECTIVES, "srat", {"beta": 1}, r"beta = 1 is out of range; allowed: number in \[0, 1\)"),
    (OBJECTIVES, "lrat", {"attacks": ["nope"]}, r"attacks\[0\] = 'nope' is not a valid choice"),
    (OBJECTIVES, "hcot", {"hierarchy": [0, -1]}, r"hierarchy\[1\] = -1 is out of range"),
    (OBJECTIVES, "gairat", {"lam": math.nan}, r"lam = nan is not a finite number"),
    # model architectures
    (MODELS, "mlp", {"hidden": -5}, r"model 'mlp': hidden = -5 is an integer; allowed: list of integers"),
    (MODELS, "mlp", {"hidden": [200_000_000]}, r"hidden\[0\] = 200000000 is out of range"),
    (MODELS, "mlp", {"input_size": 4096, "hidden": [16384]}, r"mlp with 1x4096x4096 inputs .* weights, more than"),
    (MODELS, "cnn", {"num_classes": 1}, r"num_classes = 1 is out of range"),
    (MODELS, "cnn", {"std": [0.0]}, r"std\[0\] = 0.0 is out of range"),
    (MODELS, "wrn", {"dropout": 1.0}, r"dropout = 1.0 is out of range; allowed: number in \[0, 1\)"),
    # datasets
    (DATASETS, "synthetic", {"size": 100_000}, r"dataset 'synthetic': size = 100000 is out of range"),
    (DATASETS, "synthetic", {"n": 1_000_000, "size": 256}, r"synthetic data of 1000000 images .* more than"),
    (DATASETS, "synthetic", {"split": "val"}, r"split = 'val' is not a valid choice"),
    (DATASETS, "synthetic", {"noise": math.nan}, r"noise = nan is not a finite number"),
    (DATASETS, "digits", {"size": 0}, r"dataset 'digits': size = 0 is out of range"),
    (DATASETS, "npy", {"x": "a.npy", "y": "b.npy", "num_classes": 1e11}, r"num_classes = 100000000000.0 is out"),
    (DATASETS, "npy", {"x": "a.npy"}, r"dataset 'npy' needs the parameter 'y'"),
    (DATASETS, "cifar10", {"split": "val"}, r"dataset 'cifar10': split = 'val' is not a valid choice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("registry", "name", "kwargs", "match"),
    API_ROWS,
    ids=[f"{r.kind}-{n}-{'-'.join(kw)}" for r, n, kw, _ in API_ROWS],
)
def test_bad_parameter_is_one_usage_error(registry, name: str, kwargs: dict, match: str) -> None:
    if registry is ATTACKS:
        kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(UsageError, match=match) as exc:
        registry.create(name, **kwargs)
    assert "\n" not in str(exc.value) and exc.value.hint


# ---- suite TOML ----------------------------------------------------------------------------------------
SUITE_ROWS = {
    "non-utf8": (b'summary = "caf\xe9"\n[[attack]]\nname = "fgsm"\n', r"not UTF-8 text \(byte 0xe9 at offset 14\)"),
    "attack-ints": (b"attack = [1, 2]\n", r"attack #1 must be a table \(\[\[attack\]\]\), not 1"),
    "name-list": (b'[[attack]]\nname = ["fgsm"]\neps = 0.1\n', r"attack #1: field 'name' must be a string"),
    "params-int": (b'[[attack]]\nname = "pgd"\neps = 0.1\nparams = 5\n', r"attack #1: field 'params' must be a table"),
    "corruption-params-int": (b'[[corruption]]\nname = "fog"\nparams = 5\n', r"corruption #1: field 'params'"),
    "eps-true": (b'[[attack]]\nname = "pgd"\neps = true\n', r"attack #1: field 'eps' must be a positive number"),
    "eps-date": (b'[[attack]]\nname = "pgd"\neps = 2024-01-01\n', r"field 'eps' must be .*datetime.date"),
    "severity-true": (b'[[corruption]]\nname = "fog"\nseverity = true\n', r"corruption #1: field 'severity'"),
    "label-int": (b'[[attack]]\nname = "pgd"\neps = 0.1\nlabel = 3\n', r"attack #1: field 'label' must be a string"),
    "summary-int": (b"summary = 5\n", r"field 'summary' must be a string, not 5"),
    "steps-negative": (b'[[attack]]\nname = "pgd"\neps = 0.1\nparams = { steps = -5 }\n',
                       r"attack #1: attack 'pgd': steps = -5 is out of range"),
    "steps-text": (b'[[attack]]\nname = "pgd"\neps = 0.1\nparams = { steps = "twenty" }\n',
                   r"attack #1: attack 'pgd': steps = 'twenty' is a string"),
    "step-size-nan": (b'[[attack]]\nname = "pgd"\neps = 0.1\nparams = { step_size = nan }\n',
                      r"step_size = nan is not a finite number"),
    "eps-in-params": (b'[[attack]]\nname = "pgd"\neps = 0.1\nparams = { eps = 0.3 }\n',
                      r"attack #1: 'eps' is a field of the entry, not a parameter"),
    "corruption-scale": (b'[[corruption]]\nname = "fog"\nseverity = 1\nparams = { scale = -1 }\n',
                         r"corruption #1: corruption 'fog': scale = -1 is out of range"),
    "smoothing-alpha": (b"[[smoothing]]\nparams = { alpha = 0.7 }\n",
                        r"smoothing #1: certifier 'smoothing-l2': alpha = 0.7 is out of range"),
    "calibration-bins": (b"[calibration]\nbins = 0\n", r"\[calibration\]: bins = 0 is out of range"),
}  # fmt: skip


class CountingModel(torch.nn.Module):
    """A digits MLP that counts its forward passes (a bad suite must fail before the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


@pytest.mark.parametrize(("key", "row"), SUITE_ROWS.items(), ids=list(SUITE_ROWS))
def test_bad_suite_fails_before_any_work(key: str, row: tuple[bytes, str], tmp_path: Path) -> None:
    from harness.api import evaluate

    text, match = row
    path = tmp_path / f"{key}.toml"
    path.write_bytes(text)
    model = CountingModel()
    with pytest.raises(UsageError, match=match) as exc:
        evaluate(model, "digits", str(path), out=tmp_path / "runs", name="x", device="cpu", progress=False)
    assert "\n" not in str(exc.value) and exc.value.hint
    assert model.calls == 0, "the suite was not checked before the model ran"
    assert not (tmp_path / "runs").exists()


def test_a_suite_path_may_be_a_path_object(tmp_path: Path) -> None:
    from harness.suites import load_suite

    (tmp_path / "s.toml").write_text('[[attack]]\nname = "fgsm"\neps = 0.1\n')
    assert [e.key for e in load_suite(tmp_path / "s.toml").resolve()] == ["fgsm@linf-0.1"]
    with pytest.raises(UsageError, match=r"a suite is a preset name or a \.toml path, not 5"):
        load_suite(5)  # type: ignore[arg-type]


def test_dataset_spec_text_goes_through_the_declarations() -> None:
    from harness.api import load_dataset

    d = load_dataset("synthetic:n=8,size=4,channels=1,noise=0.5")
    assert tuple(d.x.shape) == (8, 1, 4, 4)
    with pytest.raises(UsageError, match=r"dataset 'synthetic': size = 100000 is out of range"):
        load_dataset("synthetic:size=100000")
    with pytest.raises(UsageError, match=r"n = 'many' is a string; allowed: integer"):
        load_dataset("synthetic:n=many")
    from harness.api import train

    with pytest.raises(UsageError, match=r"dataset 'synthetic': size = 100000 is out of range"):
        train("ce", "mlp", "synthetic:size=100000", epochs=1, progress=False, device="cpu")
    # A baseline's recorded dataset spec is loaded through the same path (gate.dataset_spec_of).
    from harness.gate import dataset_spec_of

    spec = dataset_spec_of({"name": "synthetic", "split": "test", "info": {"n": 4, "shape": [1, 4, 4], "seed": 0}})
    assert len(load_dataset(spec)) == 4
    with pytest.raises(UsageError, match="size = 100000 is out of range"):
        load_dataset(spec + ",size=100000")


# ---- the command line in a real process ------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_ws(tmp_path_factory) -> Path:
    from harness.api import load_dataset
    from harness.models import create_model
    from harness.models.checkpoint import CheckpointMeta, save_checkpoint

    root = tmp_path_factory.mktemp("params-cli")
    torch.manual_seed(0)
    meta = CheckpointMeta("mlp", {"num_classes": 10, "hidden": [8]}, "digits", 10, [1, 8, 8])
    save_checkpoint(root / "m", create_model("mlp", load_dataset("digits"), hidden=[8]), meta)
    for key, (text, _) in SUITE_ROWS.items():
        (root / f"{key}.toml").write_bytes(text)
    return root


def _evaluate_suite(key: str) -> list[str]:
    return ["evaluate", "{root}/m.safetensors", "--suite", f"{{root}}/{key}.toml", "--out", "{root}/runs"]


CLI_ROWS = {
    "attack": (_evaluate_suite("steps-negative"), r"attack 'pgd': steps = -5 is out of range"),
    "corruption": (_evaluate_suite("corruption-scale"), r"corruption 'fog': scale = -1 is out of range"),
    "certifier": (_evaluate_suite("smoothing-alpha"), r"certifier 'smoothing-l2': alpha = 0.7 is out of range"),
    "suite-non-utf8": (_evaluate_suite("non-utf8"), r"not UTF-8 text"),
    "suite-attack-ints": (_evaluate_suite("attack-ints"), r"attack #1 must be a table"),
    "objective": (["train", "-p", "label_smoothing=abc", "--out", "{root}/t", "--epochs", "1"],
                  r"objective 'ce': label_smoothing = 'abc' is a string; allowed: number in \[0, 1\]"),
    "model": (["train", "--model", "mlp", "--model-arg", "hidden=-5", "--out", "{root}/t", "--epochs", "1"],
              r"model 'mlp': hidden\[0\] = -5 is out of range"),
    "dataset": (["evaluate", "{root}/m.safetensors", "--dataset", "synthetic:size=100000", "--out", "{root}/runs"],
                r"dataset 'synthetic': size = 100000 is out of range; allowed: integer in \[1, 1024\]"),
}  # fmt: skip


# In a real process by default: one row per path (suite file, -p, --dataset); every row under -m slow.
REAL_PROCESS = ("attack", "objective", "dataset")


def _args(key: str, root: Path) -> list[str]:
    return [a.format(root=root) for a in CLI_ROWS[key][0]] + ["--device", "cpu", "--no-progress"]


def _check_line(key: str, code: int, stderr: str, root: Path) -> None:
    import re

    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and " — hint: " in lines[0], lines[0]
    assert re.search(CLI_ROWS[key][1], lines[0]), (CLI_ROWS[key][1], lines[0])
    assert not (root / "runs").exists() and not (root / "t.safetensors").exists()


@pytest.mark.parametrize("key", list(CLI_ROWS))
def test_cli_bad_parameter_exits_2_with_one_line(key: str, cli_ws: Path, capsys) -> None:
    """``harness.cli.main``, the entry point ``python -m harness`` calls, in this process."""
    from harness.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(_args(key, cli_ws))
    _check_line(key, exc.value.code, capsys.readouterr().err, cli_ws)


@pytest.fixture(scope="module")
def cli_results(cli_ws: Path, request) -> dict:
    """The real-process rows, a few processes at a time (interpreter start-up dominates)."""
    name = "test_cli_bad_parameter_in_a_real_process"
    keys = [i.callspec.params["key"] for i in request.session.items if getattr(i, "originalname", "") == name]
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {k: pool.submit(cli, *_args(k, cli_ws)) for k in keys}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize(
    "key", [pytest.param(k, marks=() if k in REAL_PROCESS else pytest.mark.slow) for k in CLI_ROWS]
)
def test_cli_bad_parameter_in_a_real_process(key: str, cli_results: dict, cli_ws: Path) -> None:
    p = cli_results[key]
    _check_line(key, p.returncode, p.stderr, cli_ws)


def test_cli_lists_an_entrys_parameters(capsys, monkeypatch) -> None:
    from harness.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main(["list", "attacks", "apgd-t"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for text in ("n_target_classes", "integer in [1, ∞)", "one of 'logits', 'malt'", "reference budget",
                 "n_target_classes >= 9"):  # fmt: skip
        assert text in out, (text, out)


def test_unknown_entry_still_suggests(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'pgd'"):
        ATTACKS.validate("pgdd")
    with pytest.raises(HarnessError, match="name must be a string"):
        ATTACKS.get(["fgsm"])  # type: ignore[arg-type]
