"""Every registered objective not trained by its own test module trains one epoch of an MLP on digits."""

from __future__ import annotations

import math

import pytest
import torch

from harness.api import train
from harness.registry import OBJECTIVES

# Registered objectives trained by their own test modules (adversarial training: test_objectives_at.py;
# certified training: test_objectives_certified.py); every other one, including any newly registered
# objective, trains one epoch here.
TRAINED_ELSEWHERE = {"gairat", "lrat", "mart", "pgd-at", "srat", "trades", "ibp", "crown-ibp"}
NAMES = [n for n in OBJECTIVES.names() if n not in TRAINED_ELSEWHERE]
# digits has no class hierarchy: group the ten digits into three coarse classes for HCOT
PARAMS = {"hcot": {"hierarchy": [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]}}


def test_all_registered_with_summaries():
    assert TRAINED_ELSEWHERE <= set(OBJECTIVES.names())  # a renamed objective is not silently untested
    for name in OBJECTIVES.names():
        assert name in OBJECTIVES
        assert OBJECTIVES.get(name).summary


@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_on_digits(name):
    torch.manual_seed(0)
    res = train(name, "mlp", "digits", epochs=1, progress=False, objective_params=PARAMS.get(name))
    row = res.log[-1]
    assert math.isfinite(row["loss"])
    assert 0.0 <= row["test_clean"] <= 1.0
    assert res.meta.objective == name
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_dataset_hierarchy_used_by_hcot():
    """A dataset carrying CIFAR-100-style ``coarse_labels_of_fine`` needs no hcot parameter."""
    from defenses import train as train_model
    from harness.api import load_dataset

    data = load_dataset("synthetic:channels=1,size=8,num_classes=6,n=128,split=train")
    data.info["coarse_labels_of_fine"] = [0, 0, 0, 1, 1, 1]
    res = train_model("hcot", "mlp", data, None, config=_cfg())
    assert math.isfinite(res.log[-1]["loss"]) and "complement" in res.log[-1]


def _cfg():
    from defenses import TrainConfig

    return TrainConfig(epochs=1, progress=False, eval_samples=0)


def test_every_objective_has_a_claim_row():
    """docs/objectives.md's claim-coverage table names every registered objective (issue 24)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "objectives.md").read_text()
    table = text[text.index("### Claim coverage") :].split("\n\n")[2]
    cells = {c.strip() for line in table.splitlines()[2:] for c in line.split("|")[1].split(",")}
    missing = [n for n in OBJECTIVES.names() if n not in cells]
    assert not missing, f"no claim row for {missing}"
