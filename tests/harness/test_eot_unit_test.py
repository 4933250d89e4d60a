"""EOT for randomised models, and the attack unit test (Zimmermann et al. 2022) on digits models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.pgd import PGD
from harness.api import attack_unit_test, load_dataset
from harness.engine import EvalConfig, Evaluation, evaluate
from harness.registry import ATTACKS
from harness.reporting.markdown import render_markdown
from harness.suites import parse_suite
from tests.harness._digits_models import ce_model, pgd_at_model


class NoisyInput(nn.Module):
    """Randomised defence: Gaussian noise on the input at every forward pass."""

    def __init__(self, inner: nn.Module, sigma: float) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        return self.inner(x + self.sigma * torch.randn_like(x))


def majority_acc(model, x, y, draws=25):
    with torch.no_grad():
        return float(
            (torch.stack([model(x).argmax(1) == y for _ in range(draws)]).float().mean(0) >= 0.5).float().mean()
        )


def test_eot_pgd_beats_plain_pgd_on_noise_defence():
    torch.manual_seed(0)
    model = NoisyInput(pgd_at_model(), 0.3)
    # 300 samples and 20 steps: the gap was 16 points with 1 torch thread and 10 with 2 (the cached
    # model's training differs in float rounding between the two); 150 samples and 10 steps gave 4.7-9.
    x, y = load_dataset("digits").batch(slice(0, 300))
    plain = PGD("linf", 0.1, steps=20, loss="ce")
    eot = PGD("linf", 0.1, steps=20, loss="ce", eot_samples=10)
    ids = torch.arange(len(x))
    torch.manual_seed(1)
    acc_plain = majority_acc(model, plain(model, x, y, index=ids), y)
    acc_eot = majority_acc(model, eot(model, x, y, index=ids), y)
    assert acc_eot < acc_plain - 0.05, (acc_plain, acc_eot)


def test_engine_uses_eot_for_stochastic_model():
    torch.manual_seed(0)
    model = NoisyInput(ce_model(), 0.3)
    suite = parse_suite('[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.05\nparams = { steps = 5 }\n', "t")
    res = evaluate(model, load_dataset("digits"), suite, config=EvalConfig(max_samples=48, progress=False))
    assert res.config["eot_samples_used"] == 10
    assert {"stochastic", "eot"} <= {f.check for f in res.findings}
    assert res.group("linf-0.05").entries[0]["config"]["eot_samples"] == 10
    assert "results use EOT" in render_markdown([res])
    det = evaluate(ce_model(), load_dataset("digits"), suite, config=EvalConfig(max_samples=16, progress=False))
    assert det.config["eot_samples_used"] == 1


def test_attack_unit_test_passes_on_ce_and_pgd_at_models():
    for m in (ce_model(), pgd_at_model()):
        r = attack_unit_test(m, "digits", "quick", n_samples=24)
        assert len(r.threats) == 4
        for t in r.threats:
            assert t.valid >= 20 and t.fraction >= 0.95, t
        assert not r.too_weak()


def test_attack_unit_test_calls_suite_too_weak_on_masked_model():
    """Quantised input: zero gradients, so FGSM/PGD cannot find the planted example that exists."""

    class Quantised(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(torch.round(x * 4) / 4)

    r = attack_unit_test(Quantised(ce_model()), "digits", "quick", n_samples=16)
    assert r.too_weak()
    weak = [f for f in r.findings() if f.severity == "error"]
    assert weak and "too weak" in weak[0].message


def test_engine_gives_apgd_and_autoattack_eot_draws():
    # APGD's EOT knob is `eot_iter` (the reference's name); the engine reads the declared `eot_param`,
    # so on a stochastic model APGD (and AutoAttack's APGD components) average over the EOT draws.
    torch.manual_seed(0)
    model = NoisyInput(ce_model(), 0.3)
    text = (
        '[[attack]]\nname = "apgd-ce"\nnorm = "linf"\neps = 0.05\nparams = { steps = 5 }\n\n'
        '[[attack]]\nname = "autoattack"\nnorm = "linf"\neps = 0.05\n'
        'params = { version = "custom", components = ["apgd-ce", "square"], '
        "component_params = { apgd-ce = { steps = 5 }, square = { n_queries = 20 } } }\n"
    )
    suite = parse_suite(text, "t")
    ev = Evaluation(model, load_dataset("digits"), suite, config=EvalConfig(max_samples=24, progress=False))
    res = ev.run()
    assert res.config["eot_samples_used"] == 10
    apgd = res.group("linf-0.05").entries[0]
    assert apgd["config"]["eot_iter"] == 10
    assert ev.attackers[1].set_eot(10) == ["square"]  # the component without EOT support, by name
    (eot,) = [f for f in res.findings if f.check == "eot"]
    assert "apgd-ce@" not in eot.message
    assert "autoattack@linf-0.05 (square)" in eot.message


@pytest.mark.parametrize("name", ATTACKS.names())
def test_set_eot_follows_the_declared_parameter(name):
    attack = ATTACKS.create(name, norm="l2" if name == "cw-l2" else "linf", eps=0.1)
    single = attack.set_eot(7)
    if type(attack).eot_param is not None:
        assert single == [] and getattr(attack, type(attack).eot_param) == 7
    elif name != "autoattack":
        assert single == [name]
