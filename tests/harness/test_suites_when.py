"""Suite entries with ``when``: run only on a precheck finding (the fast suite's Square)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness import api
from harness.checks import precheck
from harness.errors import UsageError
from harness.suites import load_suite, parse_suite
from tests.harness._digits_models import ce_model

SUITE = """
[[attack]]
name = "pgd"
eps = 0.3
params = { steps = 5 }
[[attack]]
name = "square"
eps = 0.3
params = { n_queries = 50 }
when = ["gradients"]
"""


class Quantised(nn.Module):
    """Rounds the input to quarters: a non-differentiable model (zero input gradients)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


class Scaled(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1000 * self.inner(x)


def _run(model, tmp_path, name):
    return api.evaluate(
        model, "digits", parse_suite(SUITE, "w"), max_samples=40, progress=False, out=tmp_path, name=name
    )


def test_a_when_entry_is_skipped_without_its_finding_and_says_so(tmp_path):
    res = _run(ce_model(), tmp_path, "plain")
    pgd, square = res.groups[0].entries
    assert square["attacked"] == 0 and "gradients" in square["skipped"]
    # not run: the threat model's accuracy is the one after PGD
    assert square["cumulative"]["correct"] == pgd["cumulative"]["correct"] == res.groups[0].accuracy.correct
    assert "| L∞ 0.3 | square (not run" in (tmp_path / "plain" / "report.md").read_text()


def test_a_when_entry_runs_on_its_finding(tmp_path):
    res = _run(Quantised(ce_model()), tmp_path, "quantised")
    assert "gradients" in {f.check for f in res.findings}
    # The suite's Square has fewer than the reference 5000 queries, so the obfuscated-gradients
    # finding adds the reference one after it (tests/harness/test_hostile_models.py).
    pgd, square, auto = res.groups[0].entries
    assert "skipped" not in square and square["attacked"] == pgd["cumulative"]["correct"] > 0
    assert square["broken_first"] > 0
    assert auto["key"] == "square-auto@linf-0.3" and auto["attacked"] == square["cumulative"]["correct"]


def test_saturated_softmax_is_not_reported_as_zero_gradients():
    x, y = api.load_dataset("digits").batch(slice(0, 64))
    checks = {f.check for f in precheck(Scaled(ce_model()), x, y, 10, False)}
    assert "saturation" in checks and "gradients" not in checks


@pytest.mark.parametrize("when", ['"typo"', "3", '["gradients", "nope"]'])
def test_when_must_name_precheck_findings(when):
    with pytest.raises(UsageError, match="when"):
        parse_suite(f'[[attack]]\nname = "pgd"\neps = 0.1\nwhen = {when}\n', "bad").resolve()


def test_the_fast_suite_composition():
    entries = load_suite("fast").resolve({"linf": (0.1,)})
    assert [e.name for e in entries] == ["apgd-ce", "apgd-t", "square"]
    assert dict(entries[1].params)["target_order"] == "malt" and entries[2].when == ("gradients", "unbounded")
    assert not entries[0].when and not entries[1].when
