"""Reference budgets as data: an attack below its declared reference budget gets a ``weaker-than-reference``
finding beside its number; the presets at reference budget (autoattack, full, quick, standard) get none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.registry import ATTACKS, SUITES
from harness.suites import load_suite, parse_suite

GRID = {"linf": (0.1,), "l2": (0.5,)}


def _below(entry_key_suite: str) -> dict[str, list[str]]:
    """Per attack entry of a preset: the budget parameters below reference."""
    out = {}
    for e in load_suite(entry_key_suite).resolve(GRID):
        if e.kind == "attack":
            short = e.build().reference_shortfalls()
            if short:
                out[e.key] = [s["param"] for s in short]
    return out


@pytest.mark.parametrize("suite", SUITES.names())
def test_presets_run_at_reference_budget_except_the_documented_fast_targets(suite: str) -> None:
    expected = {"fast": {"apgd-t@linf-0.1": ["n_target_classes"]}}  # 3 MALT-ranked targets, reference 9
    assert _below(suite) == expected.get(suite, {})


@pytest.mark.parametrize(
    ("name", "params", "below"),
    [
        ("apgd-ce", {"steps": 10}, ["steps"]),
        ("apgd-t", {"n_target_classes": 3, "steps": 100}, ["n_target_classes"]),
        ("fab-t", {"steps": 20}, ["steps"]),
        ("fab", {"restarts": 1}, ["restarts"]),
        ("square", {"n_queries": 1000}, ["n_queries"]),
        ("pgd", {"steps": 10}, ["steps"]),
        ("pgd", {"steps": 20, "step_size": 1e-4}, ["step_size"]),  # 20 steps of 1e-4 cannot leave a 0.1-ball's centre
        ("pgd", {"steps": 50, "restarts": 2, "loss": "margin"}, []),
        ("fgsm", {}, []),  # one step by definition: no reference budget
        ("cw-l2", {"norm": "l2", "eps": 0.5}, ["steps", "binary_search_steps"]),  # Carlini's 10000 x 9
        ("autoattack", {}, []),
        ("autoattack", {"version": "plus"}, []),
        ("autoattack", {"backend": "pyautoattack"}, []),
        ("autoattack", {"backend": "torchattacks", "torchattacks_steps": 10}, ["apgd-ce.steps", "apgd-t.steps",
                                                                               "fab-t.steps"]),
        ("autoattack", {"version": "custom", "components": ["apgd-ce", "square"],
                        "component_params": {"square": {"n_queries": 100}}}, ["square.n_queries"]),
    ],
)  # fmt: skip
def test_shortfalls_of_one_attack(name: str, params: dict, below: list[str]) -> None:
    a = ATTACKS.create(name, **{"eps": 0.1, **params})
    assert [s["param"] for s in a.reference_shortfalls()] == below


def test_every_reference_names_its_source() -> None:
    for e in ATTACKS.entries():
        ref = getattr(e.factory, "REFERENCE", None)
        if ref is not None:
            assert ref.source and ref.budget and set(ref.budget) <= set(e.params), e.name


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_weak_entry_gets_the_finding_beside_its_number(tmp_path: Path) -> None:
    from harness.api import evaluate

    suite = parse_suite(
        '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = 0.1\nparams = { steps = 5 }\n'
        '[[attack]]\nname = "pgd"\nlabel = "pgd-20"\nnorm = "linf"\neps = 0.2\n',
        "weak",
    )
    res = evaluate(_model(), "digits", suite, out=tmp_path, name="weak", device="cpu", progress=False, max_samples=16)
    found = [f for f in res.findings if f.check == "weaker-than-reference"]
    assert len(found) == 1, [f.message for f in res.findings]
    f = found[0]
    assert f.severity == "warning" and f.related == "linf-0.1"
    assert "pgd@linf-0.1 ran below its reference budget (steps 5 < 20" in f.message
    short = f.data["shortfalls"][0]
    assert (short["param"], short["value"], short["reference"]) == ("steps", 5, 20) and "Madry" in short["source"]
    entry = res.threat_models[0].entries[0]
    assert entry["below_reference"][0]["param"] == "steps"  # recorded in result.json beside the number
    assert "weaker-than-reference" in (tmp_path / "weak" / "report.md").read_text()


def test_reference_budget_presets_raise_no_finding(tmp_path: Path) -> None:
    from harness.api import evaluate

    res = evaluate(_model(), "digits", "quick", out=tmp_path, name="q", device="cpu", progress=False, max_samples=16)
    assert not [f for f in res.findings if f.check == "weaker-than-reference"]
