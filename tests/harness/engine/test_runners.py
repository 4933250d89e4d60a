"""Each kind of suite entry has one runner, whose declared record columns match the record schema."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from harness import __version__
from harness.api import load_dataset
from harness.engine import EvalConfig, Evaluation, config_hash
from harness.engine.runners import RUNNERS, runner_for
from harness.errors import UsageError
from harness.records import schema
from harness.records.kinds import ENTRY_KINDS, entry_kind
from harness.suites import Suite

# One small suite with an entry of every kind.
EVERY_KIND = Suite(
    "every-kind",
    attacks=[{"name": "fgsm", "norm": "linf", "eps": 0.1}],
    corruptions=[{"name": "gaussian_noise", "severity": 1}],
    smoothing=[{"name": "smoothing-l2", "params": {"sigma": 0.25, "n0": 4, "n": 8, "radii": [0.0, 0.25]}}],
    verify=[{"name": "ibp", "norm": "linf", "eps": 0.1}],
    radius=[{"max_eps": 0.1, "attack_params": {"steps": 5}, "verifier": "ibp", "steps": 4}],
)


def _dtype_of(name: str) -> str:
    """The schema's dtype of a column name (``s3`` matches ``s{k}``)."""
    for c in schema.COLUMNS:
        if re.fullmatch(c.name.replace("{k}", r"\d+"), name):
            return c.dtype
    raise AssertionError(f"column {name} is not in the record schema")


def _linear(k: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, k))


@pytest.fixture(scope="module")
def evaluation():
    ds = load_dataset("digits").subset(slice(0, 12))
    return Evaluation(_linear(), ds, EVERY_KIND, config=EvalConfig(batch_size=5, chunk_size=12, progress=False))


def test_every_declared_kind_has_exactly_one_runner():
    assert set(RUNNERS) == set(ENTRY_KINDS)
    for kind, runner in RUNNERS.items():
        assert runner.kind == kind and runner_for(kind) is runner


def test_an_unknown_kind_is_one_clear_error():
    with pytest.raises(UsageError, match="no runner for suite entry kind 'verifyy'"):
        runner_for("verifyy")
    with pytest.raises(Exception, match="unknown suite entry kind 'verifyy'"):
        entry_kind("verifyy")


def test_each_runner_declares_schema_columns_of_the_schema_dtype(evaluation):
    assert {e.kind for e in evaluation.entries} == set(ENTRY_KINDS)
    for k, e in enumerate(evaluation.entries):
        cols = runner_for(e.kind).columns(evaluation, k, 7)
        assert {schema.status(k), schema.margin(k), schema.pred(k), schema.tie(k)} <= set(cols)
        assert (schema.calib(k) in cols) == entry_kind(e.kind).calibrated
        for name, arr in cols.items():
            assert name.endswith(str(k)) and len(arr) == 7
            assert arr.dtype == np.dtype(_dtype_of(name)), name
        assert (cols[schema.status(k)] == schema.NOT_RUN).all()  # 'not run' until the runner writes it


def test_a_run_over_every_kind_fills_each_runners_result_fields(evaluation):
    result = evaluation.run()
    kinds = {g.kind for g in result.groups}
    # A verifier belongs to its threat model's group (no group of its own): the interval's lower end.
    assert kinds == {k for k, ek in ENTRY_KINDS.items() if not ek.lower_bound}
    corr = [g for g in result.groups if g.kind == "corruption"]
    assert corr[0].corruption == "gaussian_noise"
    att = next(g for g in result.groups if g.kind == "attack")
    assert att.label is not None and att.entries[0]["gradients"] == "model"
    assert att.verified is not None and att.entries[-1]["kind"] == "verify" and "verified" in att.entries[-1]


def test_config_hash_is_a_pure_function_of_what_decides_the_numbers(evaluation):
    ev = evaluation
    args = {
        "model_sha": ev.model_info["sha256_state"],
        "data_hash": ev.dataset.content_hash(),
        "entries": [e.describe() for e in ev.entries],
        "version": __version__,
        "calibration": ev.cal,
        "surrogate": ev.surrogate_info,
    }
    h = config_hash(ev.config, **args)
    assert h == ev.config_hash == config_hash(ev.config, **args)
    # Not the batch size, device or thread-dependent settings: verdicts do not depend on them.
    assert config_hash(replace(ev.config, batch_size=64, device="cpu"), **args) == h
    assert config_hash(replace(ev.config, seed=1), **args) != h
    assert config_hash(replace(ev.config, chunk_size=7), **args) != h
    assert config_hash(ev.config, **{**args, "model_sha": "0" * 64}) != h
    assert config_hash(ev.config, **{**args, "entries": args["entries"][:1]}) != h
