"""mCE / relative mCE against hand-computed values, and the corruption block in result.json / report.md."""

from __future__ import annotations

import re

import pytest
import torch

from harness.corruption_metrics import attach, corruption_errors, corruption_summary
from harness.reporting.markdown import render_markdown
from harness.results import Accuracy, GroupResult, Result


def make(name: str, clean: int, accs: dict[tuple[str, int], int], n: int = 100) -> Result:
    groups = [
        GroupResult(f"{c}-{s}", "corruption", Accuracy.of(k, n), corruption=c, severity=s) for (c, s), k in accs.items()
    ]
    ds = {"name": "digits", "split": "test", "n": n, "sha256": "0" * 64}
    return Result(
        name, {"name": name}, ds, {"name": "natural"}, {"seed": 0, "device": "cpu"}, {}, Accuracy.of(clean, n), groups
    )


@pytest.fixture
def pair():
    model = make("robust", 90, {("fog", 1): 80, ("fog", 2): 60, ("snow", 1): 70, ("snow", 2): 50})
    ref = make("ce", 95, {("fog", 1): 75, ("fog", 2): 45, ("snow", 1): 55, ("snow", 2): 35})
    return model, ref


def test_ce_and_relative_ce_hand_computed(pair):
    model, ref = pair
    ce = corruption_errors(model, ref)
    # fog: errors 0.2 + 0.4 = 0.6 vs 0.25 + 0.55 = 0.8; relative: (0.1 + 0.3) / (0.2 + 0.5)
    assert ce["fog"]["ce"] == pytest.approx(0.6 / 0.8)
    assert ce["fog"]["relative_ce"] == pytest.approx(0.4 / 0.7)
    # snow: 0.3 + 0.5 = 0.8 vs 0.45 + 0.65 = 1.1; relative: (0.2 + 0.4) / (0.4 + 0.6)
    assert ce["snow"]["ce"] == pytest.approx(0.8 / 1.1)
    assert ce["snow"]["relative_ce"] == pytest.approx(0.6 / 1.0)
    s = corruption_summary(model, ref)
    assert s["mce"] == pytest.approx((0.75 + 0.8 / 1.1) / 2)
    assert s["relative_mce"] == pytest.approx((0.4 / 0.7 + 0.6) / 2)
    assert s["mean_accuracy"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.5) / 4)
    assert s["reference"] == "ce" and s["accuracy"]["fog"] == {"1": 0.8, "2": 0.6}
    # the reference against itself has mCE 1 by definition
    assert corruption_summary(ref, ref)["mce"] == pytest.approx(1.0)


def test_reference_without_error_is_left_out(pair):
    model, _ = pair
    perfect = make("perfect", 100, {("fog", 1): 100, ("fog", 2): 100, ("snow", 1): 50, ("snow", 2): 50})
    s = corruption_summary(model, perfect)
    assert s["ce"]["fog"]["ce"] is None and "fog" in s["note"]
    assert s["mce"] == pytest.approx(0.8 / 1.0)


def test_report_names_reference_and_lists_severities(pair):
    model, ref = pair
    attach(model, ref)
    attach(ref, ref)
    md = render_markdown([ref, model])
    assert "## Common corruptions" in md and "reference model ce" in md
    assert "| robust | 65.0 | 0.739 | 0.586 |" in md
    # per-severity cells carry their 95 % interval: "| fog | 80.0 [lo, hi] | 60.0 [lo, hi] |"
    assert re.search(r"\| fog \| 80\.0 \[[^]]*\] \| 60\.0 \[[^]]*\] \|", md)
    back = Result.from_dict(model.to_dict())
    assert back.extra["corruptions"]["mce"] == pytest.approx(model.extra["corruptions"]["mce"])


def test_engine_writes_corruption_block(tmp_path):
    from harness.api import load_dataset
    from harness.engine import EvalConfig, evaluate
    from harness.models import create_model
    from harness.suites import parse_suite

    digits_test = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("cnn", digits_test)
    suite = parse_suite('[[corruption]]\nname = "contrast"\nseverity = [1, 5]\n', "tiny")
    r = evaluate(model, digits_test, suite, out=tmp_path, name="c", config=EvalConfig(max_samples=40, progress=False))
    block = Result.load(tmp_path / "c").extra["corruptions"]
    assert set(block["accuracy"]["contrast"]) == {"1", "5"}
    assert block["mean_accuracy"] == pytest.approx(sum(g.accuracy.accuracy for g in r.corruptions) / 2)
    assert "Accuracy (%) per corruption and severity" in (tmp_path / "c" / "report.md").read_text()
