"""--precision bf16 and --compile: the search may change, the fp32 verdict may not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness import api
from harness.data.base import ImageDataset
from harness.engine import EvalConfig, Evaluation
from harness.engine.runners import attack as attack_runner
from harness.errors import UsageError
from harness.precision import SearchModel
from harness.results import Result
from harness.suites import parse_suite
from tests.harness._digits_models import ce_model

SUITE = parse_suite(
    """
[[attack]]
name = "pgd"
eps = 0.05
params = { steps = 10 }
[[attack]]
name = "apgd-ce"
eps = 0.05
params = { steps = 10 }
""",
    "two",
)


class KnifeEdge(nn.Module):
    """Two classes, z_1 - z_0 = 0.003 sum(x) - 0.1: above 0.03 in fp32 on the whole ball, but bf16
    rounds the weight 1.003 to 1, so under autocast z_1 - z_0 <= 0 and class 1 looks wrong everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 2)
        with torch.no_grad():
            self.lin.weight[0] = 1.0
            self.lin.weight[1] = 1.003
            self.lin.bias.copy_(torch.tensor([0.0, -0.1]))
        self.calls: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return self.lin(x.flatten(1))


def knife_edge_data(n: int = 40) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    x = 0.65 + 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    return ImageDataset("knife-edge", x, torch.ones(n, dtype=torch.long), 2, split="test")


def test_the_knife_edge_model_flips_under_bf16_only():
    m, ds = KnifeEdge().eval(), knife_edge_data()
    with torch.no_grad():
        assert (m(ds.x).argmax(1) == 1).all()
        assert (SearchModel(m, "bf16")(ds.x).argmax(1) != 1).all()


def test_a_bf16_artefact_never_counts_as_a_success(monkeypatch):
    m, ds = KnifeEdge().eval(), knife_edge_data()
    verdict_calls: list[tuple[bool, torch.dtype]] = []
    score = Evaluation.score

    def spy(self, x_adv, y, logits=None):
        verdict_calls.append((torch.is_autocast_enabled("cpu"), x_adv.dtype))
        return score(self, x_adv, y, logits)

    contract = attack_runner.enforce_contract

    def spy_contract(x, x_adv, threat, who="attack"):
        verdict_calls.append((torch.is_autocast_enabled("cpu"), x_adv.dtype))
        return contract(x, x_adv, threat, who)

    monkeypatch.setattr(Evaluation, "score", spy)
    monkeypatch.setattr(attack_runner, "enforce_contract", spy_contract)
    bf16 = api.evaluate(m, ds, SUITE, precision="bf16", progress=False)
    assert any(autocast for autocast, _ in m.calls)  # the search did run under autocast
    assert verdict_calls and all(not a and d == torch.float32 for a, d in verdict_calls)
    m.calls.clear()
    fp32 = api.evaluate(m, ds, SUITE, progress=False)
    assert not any(autocast for autocast, _ in m.calls)
    # fp32 finds every sample robust; bf16 "breaks" all of them, yet reports what fp32 reports.
    assert fp32.groups[0].accuracy.correct == len(ds)
    assert bf16.groups[0].accuracy.correct == len(ds)
    # the samples whose bf16 search stopped on an artefact were re-attacked in fp32
    assert bf16.config["precision"] == "bf16" and bf16.config["precision_reruns"] >= len(ds)
    assert fp32.config["precision"] == "fp32" and fp32.config["precision_reruns"] == 0


def test_search_gradients_and_logits_come_back_fp32():
    m = KnifeEdge().eval()
    x = knife_edge_data(4).x.clone().requires_grad_(True)
    out = SearchModel(m, "bf16")(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert m.calls[-1][0] and out.dtype == torch.float32 and g.dtype == torch.float32
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# 300 digits test images, L-inf 0.1, FGSM + PGD-20: bf16 and fp32 differ by at most this (3 samples).
AGREEMENT_PP = 1.0


def test_bf16_robust_accuracy_agrees_with_fp32_on_digits(tmp_path):
    m = ce_model()
    kw = dict(eps={"linf": (0.1,)}, max_samples=300, progress=False)
    fp32 = api.evaluate(m, "digits", "quick", **kw)
    bf16 = api.evaluate(m, "digits", "quick", precision="bf16", out=tmp_path, name="bf16", **kw)
    a, b = fp32.groups[0].accuracy.accuracy, bf16.groups[0].accuracy.accuracy
    assert 0.2 < a < 0.8  # a point where the attack matters
    assert abs(a - b) * 100 <= AGREEMENT_PP, (a, b)
    report = (tmp_path / "bf16" / "report.md").read_text()
    assert "precision bf16 search, fp32 verdicts" in report
    assert Result.load(tmp_path / "bf16" / "result.json").config["precision"] == "bf16"


def test_bad_precision_is_a_usage_error():
    with pytest.raises(UsageError, match="precision"):
        EvalConfig(precision="fp16")


def test_a_failed_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("inductor: no working C compiler\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    m = ce_model()
    kw = dict(eps={"linf": (0.1,)}, max_samples=100, progress=False)
    eager = api.evaluate(m, "digits", "quick", **kw)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        comp = api.evaluate(m, "digits", "quick", compile=True, **kw)
    assert [g.accuracy.correct for g in comp.groups] == [g.accuracy.correct for g in eager.groups]
    found = [f for f in comp.findings if f.check == "compile"]
    assert len(found) == 1 and found[0].severity == "warning" and "no working C compiler" in found[0].message
    assert comp.config["compile"] is True and comp.config["compiled_search"] is False


def _inductor_works() -> bool:
    try:
        f = torch.compile(lambda t: t * 2 + 1)
        return bool((f(torch.ones(2)) == 3).all())
    except Exception:
        return False


@pytest.mark.slow  # inductor compiles for about 20 s on 2 CPU cores (about 45 s with the model training)
def test_compiled_search_gives_the_same_verdicts_as_eager(tmp_path):
    if not _inductor_works():
        pytest.skip("torch.compile (inductor) does not work here")
    m = ce_model()
    kw = dict(eps={"linf": (0.1,)}, max_samples=100, progress=False)
    eager = api.evaluate(m, "digits", "quick", out=tmp_path, name="eager", **kw)
    comp = api.evaluate(m, "digits", "quick", compile=True, out=tmp_path, name="compiled", **kw)
    assert comp.config["compiled_search"] is True and not [f for f in comp.findings if f.check == "compile"]
    from harness.records import open_record

    s_eager, s_comp = (open_record(tmp_path / n / "records").column("s1") for n in ("eager", "compiled"))
    # kernels may differ in the last bits, so trajectories may too; the verdicts must agree on >= 99 %
    same = (s_eager == s_comp).mean()
    assert same >= 0.99, same
    assert abs(eager.groups[0].accuracy.correct - comp.groups[0].accuracy.correct) <= 1


def test_the_rerun_count_survives_a_resume(tmp_path):
    # The count lives in the per-sample record, so a run resumed from finished chunks reports it too.
    m, ds = KnifeEdge().eval(), knife_edge_data()
    first = api.evaluate(m, ds, SUITE, precision="bf16", progress=False, out=tmp_path, name="run")
    again = api.evaluate(m, ds, SUITE, precision="bf16", progress=False, out=tmp_path, name="run")
    assert first.config["precision_reruns"] >= len(ds)
    assert again.config["precision_reruns"] == first.config["precision_reruns"]
