"""Every sanity check is tripped by a model (or suite) built to trip it; a normal model trips none."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import Attack
from harness.api import load_dataset
from harness.checks import postcheck, precheck, unbounded_check
from harness.engine import EvalConfig, evaluate
from harness.errors import UsageError
from harness.logits import margin
from harness.registry import ATTACKS
from harness.results import Accuracy, GroupResult, Result
from harness.rng import keyed_uniform, stream_seed
from harness.suites import parse_suite
from harness.threat import clip_box
from tests.harness._digits_models import ce_model

RANDOM = "test-random-corners"

if RANDOM not in ATTACKS:

    @ATTACKS.register(RANDOM)
    class RandomCorners(Attack):
        """Black-box random search over the corners of the L-inf ball (test helper)."""

        black_box = True

        def __init__(self, norm: str = "linf", eps: float = 0.1, queries: int = 40) -> None:
            if norm != "linf":  # corners of the L-inf ball only
                raise UsageError(f"{RANDOM} supports norm 'linf' only, not {norm!r}")
            super().__init__(norm, eps)
            self.queries = queries

        def perturb(self, model, x, y, *, index=None, seed=0):
            best = x.clone()
            with torch.no_grad():
                bm = margin(model(x), y)
                for q in range(self.queries):
                    u = keyed_uniform(stream_seed(seed, q), index, tuple(x.shape[1:])).to(x.device)
                    xa = x + clip_box(x, self.eps * torch.sign(u - 0.5))
                    m = margin(model(xa), y)
                    better = m < bm
                    bm = torch.where(better, m, bm)
                    best = torch.where(better.view(-1, 1, 1, 1), xa, best)
            return best


class Wrap(nn.Module):
    def __init__(self, inner: nn.Module, fn) -> None:
        super().__init__()
        self.inner, self.fn = inner, fn

    def forward(self, x):
        return self.fn(self.inner, x)


def quantised(m):  # non-differentiable input quantisation: zero input gradients everywhere
    return Wrap(m, lambda f, x: f(torch.round(x * 4) / 4))


def reversed_gradients(m):  # the model's values, the negated gradient: deceptive, but finite and non-zero
    return Wrap(m, lambda f, x: (lambda z: 2 * z.detach() - z)(f(x)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ce_model()


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("digits")
    x, y = ds.batch(slice(0, 64))
    return ds, x, y


def checks_of(findings, severities=("warning", "error")):
    return {f.check for f in findings if f.severity in severities}


def run(model, suite_text, n=120, **cfg):
    ds = load_dataset("digits")
    suite = parse_suite(suite_text, "t")
    return evaluate(model, ds, suite, config=EvalConfig(max_samples=n, progress=False, batch_size=128, **cfg))


def test_precheck_trips(model, data):
    _, x, y = data
    cases = {
        "stochastic": Wrap(model, lambda f, x: f(F.dropout(x, 0.3, training=True))),
        "probabilities": nn.Sequential(model, nn.Softmax(1)),
        "gradients": quantised(model),
        "saturation": Wrap(model, lambda f, x: 1000 * f(x)),
    }
    for check, m in cases.items():
        assert check in checks_of(precheck(m, x, y, 10, False)), check
    nonfinite = precheck(Wrap(model, lambda f, x: f(torch.sqrt(x))), x, y, 10, False)
    assert any(f.check == "gradients" and f.severity == "error" for f in nonfinite)
    assert "train-mode" in checks_of(precheck(model, x, y, 10, True))
    assert checks_of(precheck(model, x, y, 10, False)) == set()


def test_unbounded_check(model, data):
    _, x, y = data
    f = unbounded_check(quantised(model), x, y, 10)
    assert f is not None and f.data["accuracy"] > 0.5
    assert unbounded_check(model, x, y, 10) is None


def test_train_mode_flagged_by_engine(model):
    model.train()
    try:
        res = run(model, '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.05\n', n=32)
    finally:
        model.eval()
    assert "train-mode" in checks_of(res.findings)


def test_black_box_beats_white_box(model):
    suite = (
        '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.1\nparams = { steps = 10 }\n'
        f'[[attack]]\nname = "{RANDOM}"\nnorm = "linf"\neps = 0.1\n'
    )
    # Deceptive (reversed) gradients: PGD fails, random corners do not. A quantised model would do
    # too, but its obfuscated gradients add Square at the reference budget (slow here).
    res = run(reversed_gradients(model), suite)
    f = [f for f in res.findings if f.check == "black-box-beats-white-box"]
    assert f and f[0].data["broken_only_by_black_box"] >= 2
    e = res.group("linf-0.1").entries
    assert e[1]["black_box"] and e[1]["broken_first"] == f[0].data["broken_only_by_black_box"]


def test_masking_and_saturation_with_huge_logit_scale(model):
    """x1000 logits: CE gradients underflow, margin-loss PGD still works -> masking finding with numbers."""
    suite = (
        '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.1\nparams = { steps = 10 }\n'
        '[[attack]]\nname = "pgd"\nlabel = "pgd-margin"\nnorm = "linf"\neps = 0.1\n'
        'params = { steps = 10, loss = "margin" }\n'
    )
    res = run(Wrap(model, lambda f, x: 1000 * f(x)), suite)
    assert "saturation" in checks_of(res.findings)
    f = [f for f in res.findings if f.check == "masking"]
    assert f and f[0].data["fraction_of_survivors"] > 0.1
    assert "pgd@linf-0.1" in f[0].message and "pgd-margin@linf-0.1" in f[0].message


def test_eps_monotonic_and_large_eps(model):
    # A crippled attack at the larger eps (one tiny step, no random start) -> accuracy rises with eps
    # (with nested eps off: otherwise the larger eps inherits the smaller one's points and cannot rise);
    # eps 0.5 on a model whose gradients point the wrong way (not obfuscated: no Square is added),
    # a gradient attack from x -> accuracy stays above chance.
    suite = (
        '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.05\nparams = { steps = 10 }\n'
        '[[attack]]\nname = "pgd"\nlabel = "weak"\nnorm = "linf"\neps = 0.2\nnested = false\n'
        "params = { steps = 1, step_size = 0.0001, random_start = false }\n"
    )
    res = run(model, suite)
    assert "eps-monotonic" in checks_of(res.findings)
    # Nested (the default), the same weak attack cannot make accuracy rise with eps.
    nested = run(model, suite.replace("nested = false\n", ""))
    assert "eps-monotonic" not in checks_of(nested.findings)
    assert nested.group("linf-0.2").accuracy.correct <= nested.group("linf-0.05").accuracy.correct
    suite = '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.5\nparams = { steps = 5, random_start = false }\n'
    assert "large-eps" in checks_of(run(reversed_gradients(model), suite, n=40).findings)
    assert "large-eps" not in checks_of(run(model, suite, n=40).findings)


def test_robust_above_clean_postcheck():
    """The engine only attacks clean-correct samples, so this can only come from an edited/merged result."""
    res = Result(
        "r",
        {},
        {"num_classes": 10, "shape": [1, 8, 8]},
        {},
        {},
        {},
        clean=Accuracy.of(50, 100),
        groups=[GroupResult("linf-0.1", "attack", Accuracy.of(60, 100), "linf", 0.1)],
    )
    assert "robust-above-clean" in checks_of(postcheck(res))


def test_normal_model_trips_nothing(model):
    """A CE digits model under a sound suite (PGD at its reference 20 steps), full checks (unbounded attack +
    attack unit test)."""
    suite = (
        '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = [0.05, 0.5]\nparams = { steps = 20 }\n'
        '[[attack]]\nname = "pgd"\nlabel = "pgd-margin"\nnorm = "linf"\neps = [0.05, 0.5]\n'
        'params = { steps = 20, loss = "margin" }\n'
        f'[[attack]]\nname = "{RANDOM}"\nnorm = "linf"\neps = [0.05, 0.5]\n'
    )
    res = run(model, suite, n=150, checks="full")
    assert checks_of(res.findings) == set(), [f.message for f in res.findings]
    ut = res.extra["unit_test"]["threats"]
    assert all(t["fraction"] >= 0.95 and t["valid"] >= 30 for t in ut)
