"""`harness evaluate CKPT --suite calibration|certified` from the CLI, and the report built from it."""

from __future__ import annotations

import pytest
import torch

from harness.cli import main
from harness.models import CheckpointMeta, create_model, save_checkpoint
from harness.results import Result


def _ckpt(tmp_path):
    torch.manual_seed(0)
    m = create_model("mlp", num_classes=10, in_channels=1, input_size=8)
    save_checkpoint(tmp_path / "m", m, CheckpointMeta("mlp", {}, "digits", 10, [1, 8, 8]))
    return str(tmp_path / "m.safetensors")


def _cli(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_cli_calibration_suite_and_report(tmp_path):
    ck = _ckpt(tmp_path)
    args = ["evaluate", ck, "--suite", "calibration", "--out", str(tmp_path), "--name", "cal"]
    assert _cli([*args, "--max-samples", "16", "--no-progress"]) == 0
    r = Result.load(tmp_path / "cal")
    cal = r.extra["calibration"]
    assert cal["temperature"]["split"] == "train" and cal["bootstrap"] == 200
    assert {"clean", *(g.key for g in r.threat_models)} <= set(cal["groups"])
    assert _cli(["report", str(tmp_path / "cal"), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Calibration —" in page and "ECE (T-scaled)" in page
    # The compare view lists every group's ECE per run.
    from harness.reporting.compare import compare_runs

    cmp = compare_runs([tmp_path / "cal", tmp_path / "cal"])
    assert cmp.beyond[0]["ece"]["clean"] == cal["groups"]["clean"]["ece"]
    assert "## Calibration (ECE, 15 bins)" in cmp.to_markdown()


@pytest.mark.slow
def test_cli_certified_suite_with_paper_defaults(tmp_path):
    ck = _ckpt(tmp_path)
    args = ["evaluate", ck, "--suite", "certified", "--out", str(tmp_path), "--name", "cert", "--max-samples", "4"]
    assert _cli([*args, "--no-progress"]) == 0
    cert = Result.load(tmp_path / "cert").extra["certified"]["smoothing-l2-0.25"]
    assert cert["config"]["n"] == 100_000 and cert["config"]["n0"] == 100 and cert["config"]["alpha"] == 0.001
