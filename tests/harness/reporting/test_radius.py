"""The band in `harness compare` (a radius run beside a fixed-eps run of the same model) and
`harness evaluate --suite radius` end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.api import load_dataset
from harness.engine import EvalConfig, Evaluation
from harness.records import schema as col
from harness.records.store import open_record
from harness.reporting import compare_runs
from harness.reporting.compare import radius_uppers
from harness.results import Result
from harness.suites import parse_suite
from tests.harness._digits_models import ce_model
from tests.harness.cli_helpers import cli_inprocess

N = 20


def _run(tmp_path, name: str, text: str) -> Result:
    ds = load_dataset("digits").subset(slice(0, N))
    cfg = EvalConfig(batch_size=20, chunk_size=20, progress=False)
    return Evaluation(ce_model(), ds, parse_suite(text, name), out=tmp_path, name=name, config=cfg).run()


def test_compare_shows_the_band_and_counts_disagreements_per_sample(tmp_path):
    _run(tmp_path, "rad", '[[radius]]\nmax_eps = 0.2\nverifier = "none"\nattack_params = { steps = 30 }')
    fixed = _run(tmp_path, "fix", '[[attack]]\nname = "pgd"\neps = [0.05, 0.1]\nparams = { steps = 10 }')
    cmp = compare_runs([tmp_path / "rad", tmp_path / "fix"])
    md = cmp.to_markdown()
    assert "## Robustness band (%): [verified, attacked]" in md and "| radius-linf @ 0.1 |" in md
    ids, upper = radius_uppers(tmp_path / "rad" / "records")["radius-linf"]
    rows = {a["group"]: a for a in cmp.agreement}
    assert set(rows) == {"linf-0.05", "linf-0.1"}
    for g in fixed.threat_models:
        a = rows[g.key]
        assert a["fixed"] == pytest.approx(g.accuracy.accuracy)
        assert a["attacked"] == pytest.approx(float((upper > g.eps).mean()))
        # the fixed-eps record's broken samples that the radius run leaves beyond eps
        chunk = next(open_record(tmp_path / "fix" / "records").iter_chunks())
        k = [e.key for e in fixed.groups].index(g.key)
        robust = (chunk[col.CLEAN_PRED] == chunk[col.LABEL]) & (chunk[col.status(k)] == col.ROBUST)
        assert np.array_equal(chunk[col.ID], ids)
        assert a["disagreements"] == int((~robust & (upper > g.eps)).sum())
    assert json.loads(json.dumps(cmp.to_dict()))["agreement"] == cmp.agreement
    assert any("Band against the fixed-eps attacks" in line for line in cmp.band_lines())


@pytest.mark.slow  # the preset: FMN-100 and CROWN under L-inf and L2 (about 10 s on one loaded core)
def test_evaluate_suite_radius_on_the_cli(tmp_path, capsys):
    from harness.models.checkpoint import CheckpointMeta, save_checkpoint

    meta = CheckpointMeta("mlp", {"num_classes": 10, "hidden": [128]}, "digits", 10, [1, 8, 8])  # ce_model's shape
    ckpt = save_checkpoint(tmp_path / "m", ce_model(), meta)
    args = ["evaluate", ckpt, "--suite", "radius", "--out", tmp_path, "--name", "r", "--max-samples", N]
    code, _, err = cli_inprocess(*args, "--device", "cpu", "--no-progress", capsys=capsys)
    assert code == 0, err
    res = Result.load(tmp_path / "r")
    assert set(res.extra["radius"]) == {"radius-linf", "radius-l2"}
    for summary in res.extra["radius"].values():
        assert summary["counts"]["violations"] == 0
        assert [t["eps"] for t in summary["table"]] == list(load_dataset("digits").eps_grid[summary["config"]["norm"]])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Robustness band" in md
