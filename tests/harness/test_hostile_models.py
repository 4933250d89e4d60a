"""The hostile-model zoo: each model that fights the evaluation gets its true verdict or its finding.

The zoo (tests/harness/_hostile_models.py) wraps a CE digits MLP that keeps its clean predictions
(digits pixels lie on the 1/16 grid) and misbehaves on perturbed inputs. At L-inf eps 0.3 the
wrapped model has 0 % robust accuracy, so "fooled into robustness" shows as a number above 0.
"""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

from harness import api
from harness.checks import gradient_probe, precheck
from harness.cli.common import results_table
from harness.engine import EvalConfig, evaluate
from harness.errors import ModelError, UsageError
from harness.logits import margin, misclassified
from harness.registry import ATTACKS
from harness.reporting.html import render_html
from harness.suites import parse_suite
from tests.harness import _hostile_models as zoo
from tests.harness._digits_models import ce_model
from tests.harness.cli_helpers import cli

EPS = 0.3
SUITE = parse_suite(
    f'[[attack]]\nname = "fgsm"\neps = {EPS}\n[[attack]]\nname = "pgd"\neps = {EPS}\nparams = {{ steps = 10 }}\n', "zoo"
)
N = 40
# Smaller budgets where an attack has no early stop (the bookkeeping under test is the same).
FAST = {"cw-l2": {"steps": 10, "binary_search_steps": 2}, "fab": {"restarts": 1, "steps": 20}}


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return ce_model()


@pytest.fixture(scope="module")
def batch():
    x, y = api.load_dataset("digits").batch(slice(0, 64))
    return x, y


def run(model, suite=SUITE, n=N, **kw):
    return api.evaluate(model, "digits", suite, max_samples=n, progress=False, batch_size=64, **kw)


def checks(res_or_findings, severities=("warning", "error")):
    fs = getattr(res_or_findings, "findings", res_or_findings)
    return {f.check for f in fs if f.severity in severities}


def test_margin_and_misclassified_on_non_finite_rows():
    """Hand-computed: a row with any NaN/Inf has margin -inf and is misclassified, whatever argmax says."""
    z = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 0.0, 0.0], [float("inf"), 0.0, 0.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([2, 1, 0, 2])
    assert margin(z, y).tolist() == [1.0, float("-inf"), float("-inf"), -4.0]
    assert misclassified(z, y).tolist() == [False, True, True, True]


def test_sign_of_nan_is_zero():
    """PGD's L-inf step relies on it to keep iterates finite without an extra kernel (attacks/pgd.py)."""
    assert torch.tensor([float("nan"), -float("inf"), 2.0]).sign_().tolist() == [0.0, -1.0, 1.0]


def test_nan_gradient_at_finite_logits_keeps_pgd_inside_the_ball(base, batch):
    """sqrt(x) has an infinite derivative at 0 (NaN after the chain rule), while its logits stay finite."""
    x, y = batch
    model = zoo.Wrapper(base)
    model.forward = lambda x: base(torch.sqrt(x))
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        xa = ATTACKS.create("pgd", norm=norm, eps=eps, steps=5)(model, x, y, index=torch.arange(len(x)), seed=0)
        assert torch.isfinite(xa).all()


@pytest.mark.parametrize("hostile", [zoo.NaNOffGrid, zoo.InfOffGrid], ids=["nan", "inf-on-top-class"])
@pytest.mark.parametrize("name", sorted(n for n in ATTACKS.names() if not n.startswith("test-")))
def test_every_attack_counts_non_finite_logits_as_success(name, hostile, base, batch):
    """A candidate with non-finite logits is the best candidate there is, in every registered attack."""
    x, y = batch
    x, y = x[:16], y[:16]
    model = hostile(base)
    try:
        attack = ATTACKS.create(name, norm="linf", eps=EPS, **FAST.get(name, {}))
        eps_ok = lambda d: d.abs().flatten(1).amax(1) <= EPS + 1e-6
    except UsageError:  # an L2-only attack
        attack = ATTACKS.create(name, norm="l2", eps=3.0, **FAST.get(name, {}))
        eps_ok = lambda d: d.flatten(1).norm(dim=1) <= 3.0 + 1e-5
    xa = attack(model, x, y, index=torch.arange(len(x)), seed=0)
    assert torch.isfinite(xa).all() and eps_ok(xa - x).all()
    with torch.no_grad():
        correct = ~misclassified(base(x), y)
        broken = misclassified(model(xa), y)
    assert broken[correct].all(), f"{name} returned {int((~broken[correct]).sum())} points with finite correct logits"


def test_nan_off_grid_is_broken_and_reported(base):
    res_base, res = run(base), run(zoo.NaNOffGrid(base))
    assert res_base.groups[0].accuracy.correct == 0
    assert res.clean.correct == res_base.clean.correct > 0
    assert res.groups[0].accuracy.correct == 0
    f = [f for f in res.findings if f.check == "nonfinite-logits"]
    assert f and f[0].data["entry"] == f"fgsm@linf-{EPS}" and f[0].data["samples"] == res.clean.correct
    assert "fgsm@linf-0.3" in f[0].message and f"{res.clean.correct} of {N}" in f[0].message
    assert res.groups[0].entries[0]["nonfinite"] == res.clean.correct


def test_inf_on_the_predicted_class_is_not_a_correct_prediction(base):
    """argmax of the Inf row is the true class, but non-finite logits predict nothing."""
    res = run(zoo.InfOffGrid(base))
    assert res.clean.correct > 0 and res.groups[0].accuracy.correct == 0
    assert "nonfinite-logits" in checks(res)


def test_constant_off_grid_gets_the_argmax_verdict(base):
    """Zeros off the grid: argmax is class 0, so every other class is broken; nothing is skipped."""
    ds = api.load_dataset("digits")
    res = run(zoo.ConstantOffGrid(base))
    _, y = ds.batch(slice(0, N))
    g = res.groups[0]
    assert g.accuracy.correct <= int((y == 0).sum())
    assert all("skipped" not in e for e in g.entries) and g.entries[0]["attacked"] == res.clean.correct


def test_non_finite_clean_logits_on_some_samples_are_wrong_with_a_finding(base):
    class NaNOnSome(zoo.Wrapper):
        def forward(self, x):
            z = self.inner(x)
            bad = x.flatten(1)[:, 3] > 0.5  # some digits have ink at that pixel
            return torch.where(bad[:, None], torch.full_like(z, float("nan")), z)

    x, _ = api.load_dataset("digits").batch(slice(0, N))
    n_bad = int((x.flatten(1)[:, 3] > 0.5).sum())
    assert 0 < n_bad < N
    res_base, res = run(base), run(NaNOnSome(base))
    assert res.clean.correct <= res_base.clean.correct - n_bad + 1  # the NaN samples count as wrong
    f = [f for f in res.findings if f.check == "nonfinite-logits" and f.data["entry"] == "clean"]
    assert f and f[0].severity == "error" and f[0].data["samples"] == n_bad


def test_all_nan_clean_output_is_a_model_error(base):
    class AllNaN(zoo.Wrapper):
        def forward(self, x):
            return self.inner(x) * float("nan")

    with pytest.raises(ModelError, match="NaN or Inf logits for all"):
        run(AllNaN(base))


@pytest.mark.parametrize("hostile", [zoo.NoGrad, zoo.Detach, zoo.NumpyRoundTrip], ids=["no_grad", "detach", "numpy"])
def test_no_input_gradient_skips_gradient_attacks_and_runs_square(hostile, base, tmp_path):
    res = run(hostile(base), out=tmp_path, name="r")
    assert {"gradients", "obfuscated-gradients"} <= checks(res)
    assert any(f.data.get("no_gradient") for f in res.findings if f.check == "gradients")
    g = res.groups[0]
    fgsm, pgd, square = g.entries
    for e in (fgsm, pgd):
        assert e["attacked"] == 0 and "needs input gradients" in e["skipped"]
    assert square["key"] == f"square-auto@linf-{EPS}" and square["when"] == ["obfuscated-gradients"]
    assert square["params"] == {"n_queries": 5000, "p_init": 0.8} and square["gradients"] == "none"
    assert square["attacked"] == res.clean.correct > 0 and g.accuracy.correct == 0
    assert g.attack_basis == "gradient-free"
    assert "black-box-beats-white-box" not in checks(res)  # the white-box attacks did not run
    md = (tmp_path / "r" / "report.md").read_text()
    assert "0.0 [" in md and "†" in md and "from gradient-free attacks only" in md
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    assert saved["groups"][0]["attack_basis"] == "gradient-free"
    html = render_html([res], {})
    assert "†" in html and "robust accuracy from gradient-free attacks only" in html
    console = Console(width=200, record=True)
    console.print(results_table([res]))
    table = " ".join(console.export_text().split())  # the legend is a caption, wrapped to the table's width
    assert "0.0†" in table and "† robust accuracy from gradient-free attacks only" in table


def test_full_checks_on_a_model_without_gradient(base):
    """The unbounded check needs gradients (skipped); the attack unit test runs and calls the suite too weak."""
    res = run(zoo.NoGrad(base), n=20, checks="full")
    assert "unbounded" not in checks(res) and res.groups[0].accuracy.correct == 0
    assert any(f.check == "attack-unit-test" and f.severity == "error" for f in res.findings)


def test_quantised_input_is_obfuscated_and_square_runs(base):
    res = run(zoo.Quantise(base))
    assert {"gradients", "obfuscated-gradients"} <= checks(res)
    fgsm, _, square = res.groups[0].entries
    assert "skipped" not in fgsm and fgsm["attacked"] == res.clean.correct  # zero gradients: run, but not trusted
    assert square["key"].startswith("square-auto") and square["attacked"] > 0 and square["broken_first"] > 0
    assert res.groups[0].accuracy.correct == 0 and res.groups[0].attack_basis == "gradient-free"


def test_a_suite_square_at_the_reference_budget_is_not_duplicated(base):
    suite = parse_suite(
        f'[[attack]]\nname = "fgsm"\neps = {EPS}\n[[attack]]\nname = "square"\neps = {EPS}\n'
        'params = { n_queries = 5000 }\nwhen = ["gradients"]\n',
        "own-square",
    )
    res = run(zoo.Quantise(base), suite)
    assert [e["key"] for e in res.groups[0].entries] == [f"fgsm@linf-{EPS}", f"square@linf-{EPS}"]


def test_random_noise_output(base):
    """No input gradient and randomised: EOT verdicts, Square runs, robust never above clean."""
    res = run(zoo.RandomNoise(), n=30)
    assert {"stochastic", "gradients", "obfuscated-gradients"} <= checks(res)
    assert res.config["eot_samples_used"] == 10
    assert res.groups[0].accuracy.correct <= res.clean.correct
    assert res.groups[0].entries[-1]["key"].startswith("square-auto")


def test_batch_dependent_outputs_are_found(base, batch):
    x, y = batch
    for hostile in (zoo.TrainModeBN(base), zoo.BatchCentred(base)):
        f = [f for f in precheck(hostile.eval(), x, y, 10, False) if f.check == "batch-dependent"]
        assert f and f[0].severity == "error" and f[0].data["max_logit_diff"] > f[0].data["tolerance"]
    assert "batch-dependent" not in checks(precheck(base, x, y, 10, False))
    res = run(zoo.BatchCentred(base), parse_suite(f'[[attack]]\nname = "fgsm"\neps = {EPS}\n', "f"))
    assert "batch-dependent" in checks(res)


def test_batchnorm_passed_in_train_mode_is_evaluated_in_eval_mode(base):
    torch.manual_seed(0)
    model = zoo.WithBN(base)
    model.bn.running_mean.normal_()
    expected = run(model.eval())
    ds = api.load_dataset("digits")
    cfg = EvalConfig(max_samples=N, progress=False, batch_size=64)
    res = evaluate(model.train(), ds, SUITE, config=cfg)  # the engine itself: load_model would call eval()
    assert "train-mode" in checks(res) and "batch-dependent" not in checks(res)
    assert res.clean.correct == expected.clean.correct
    assert res.groups[0].accuracy.correct == expected.groups[0].accuracy.correct


def test_logits_times_1e30(base):
    """Finite in float32, saturated softmax: CE gradients vanish, margin attacks still break it."""
    suite = parse_suite(
        '[[attack]]\nname = "pgd"\neps = 0.3\nparams = { steps = 10 }\n'
        '[[attack]]\nname = "pgd"\nlabel = "pgd-margin"\neps = 0.3\nparams = { steps = 10, loss = "margin" }\n',
        "scaled",
    )
    res = run(zoo.Scaled(base), suite)
    assert "saturation" in checks(res) and "nonfinite-logits" not in checks(res, ("info", "warning", "error"))
    ce, mg = res.groups[0].entries
    assert mg["broken_first"] > ce["broken_first"] and res.groups[0].accuracy.correct == 0
    assert res.groups[0].attack_basis == "white-box"


def test_log_probabilities_are_logits(base):
    """log_softmax is a per-row shift: no probabilities finding, the same verdicts (up to float ties)."""
    suite = parse_suite('[[attack]]\nname = "pgd"\neps = 0.1\nparams = { steps = 20 }\n', "lp")
    res_base, res = run(base, suite), run(zoo.LogProbs(base), suite)
    assert checks(res) == checks(res_base) == set()
    assert res.clean.correct == res_base.clean.correct
    assert abs(res.groups[0].accuracy.correct - res_base.groups[0].accuracy.correct) <= 1


def test_a_model_that_raises_only_during_the_attack(base):
    with pytest.raises(ModelError) as e:
        run(zoo.RaisesOffGrid(base))
    assert f"during fgsm@linf-{EPS}" in e.value.what and "RuntimeError: cannot handle this input" in e.value.what


def test_a_model_whose_backward_raises_during_the_attack(base):
    """The backward is not the forward: the exception comes out of autograd, and still ends as one ModelError."""
    suite = parse_suite('[[attack]]\nname = "pgd"\neps = 0.1\nparams = { steps = 5 }\n', "bw")
    with pytest.raises(ModelError) as e:
        run(zoo.BackwardRaisesOffGrid(base), suite)
    what = e.value.what
    assert "during pgd@linf-0.1" in what and "backward raised ValueError: no gradient off the grid" in what
    assert "_hostile_models.py" in what


def test_gradient_probe(base, batch):
    x, y = batch
    assert not gradient_probe(base, x, y).obfuscated
    for m in (zoo.NoGrad(base), zoo.Detach(base), zoo.NumpyRoundTrip(base), zoo.RandomNoise()):
        p = gradient_probe(m, x, y)
        assert not p.connected and p.obfuscated and p.reason
    q = gradient_probe(zoo.Quantise(base), x, y)
    assert q.connected and q.zero > 0.9 and q.obfuscated


@pytest.mark.parametrize("mode", ["bpda", "transfer"])
def test_surrogate_gradients_break_a_non_differentiable_model(mode, base):
    """no_grad + quantiser; the surrogate is the inner network: gradient attacks run on its gradients."""
    model = zoo.NoGrad(zoo.Quantise(base))
    res = run(model, surrogate=lambda m: m.inner.inner, surrogate_mode=mode)
    g = res.groups[0]
    fgsm, pgd, square = g.entries
    assert fgsm["gradients"] == pgd["gradients"] == f"surrogate-{mode}" and "skipped" not in fgsm
    assert fgsm["broken_first"] + pgd["broken_first"] == res.clean.correct  # before Square had a turn
    assert square["key"].startswith("square-auto") and square["attacked"] == 0
    assert g.accuracy.correct == 0 and g.attack_basis == "surrogate"
    assert res.config["surrogate"]["mode"] == mode
    info = [f for f in res.findings if f.check == "surrogate"]
    assert info and info[0].severity == "info" and info[0].data["agreement"] == 1.0


def test_surrogate_without_gradient_is_refused(base):
    with pytest.raises(UsageError, match=r"surrogate .*no input gradient"):
        run(base, surrogate=zoo.NoGrad(base))


def _weights(path, model):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_cli_surrogate_and_model_raising_mid_attack(tmp_path, base):
    w = _weights(tmp_path / "q.safetensors", zoo.NoGrad(zoo.Quantise(base)))
    common = ["--dataset", "digits", "--max-samples", "16", "--eps", "linf=0.3", "--out", tmp_path, "--no-progress"]
    r = cli(
        "evaluate", "--model", "tests.harness._hostile_models:nograd_quantised", "--weights", w,
        "--surrogate", "tests.harness._hostile_models:strip", "--name", "bpda", *common,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "bpda" / "result.json").read_text())
    assert saved["config"]["surrogate"]["source"] == "tests.harness._hostile_models:strip"
    assert saved["clean"]["correct"] > 10 and {g["attack_basis"] for g in saved["groups"]} == {"surrogate"}
    w2 = _weights(tmp_path / "r.safetensors", zoo.RaisesOffGrid(base))
    r = cli(
        "evaluate", "--model", "tests.harness._hostile_models:raises_off_grid", "--weights", w2, "--name", "raise",
        *common,
    )  # fmt: skip
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "during fgsm@linf-0.3" in lines[0]
    r = cli(
        "evaluate", "--model", "tests.harness._hostile_models:backward_raises_off_grid", "--weights", w2,
        "--name", "raise-bw", "--batch-size", "auto", *common,
    )  # fmt: skip
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and "the model's backward raised ValueError" in lines[0], r.stderr
