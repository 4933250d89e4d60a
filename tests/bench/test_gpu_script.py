"""bench/gpu.sh, the one-command GPU benchmark (issue 23 §3), kept from rotting by its CPU tiny mode.

The default run covers every code path once (the first model's four AutoAttack backends, the rank
comparison, CERTIFY and corruption throughput); the slow test runs the whole tiny plan. The time budget
and missing packages are checked in-process, where they cost nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FIRST = "preact-resnet18"
FIRST_PARTS = [f"aa:{FIRST}:{b}" for b in ("native", "pyautoattack", "native-bf16", "torchattacks")]
ALL_PARTS = {
    *FIRST_PARTS,
    "rank",
    "certify",
    "corruptions",
    *(f"aa:wrn-28-10:{b}" for b in ("native", "pyautoattack", "native-bf16", "torchattacks")),
}
STATUS_PREFIXES = ("ran", "skipped: time budget", "skipped: not requested", "not available: ", "failed: ")
STAGES = ["apgd-ce", "apgd-t", "fab-t", "square"]


def run_tiny(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    cmd = ["bash", str(ROOT / "bench" / "gpu.sh"), "--device", "cpu", "--tiny"]
    cmd += ["--out", str(out), "--work", str(tmp_path / "work"), *extra]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "part" in p.stdout and "goals" in p.stdout  # the printed table
    return json.loads(out.read_text())


def check_document(doc: dict, ran: set[str]) -> None:
    """The JSON's structure; every part either ran or says why not; every part in ``ran`` ran."""
    assert doc["schema"] == "bench-gpu/1" and doc["profile"] == "tiny"
    assert doc["device"].startswith("cpu") and doc["elapsed_s"] > 0
    assert {r["part"] for r in doc["parts"]} == ALL_PARTS
    for row in doc["parts"]:
        assert row["status"].startswith(STATUS_PREFIXES), row
        if row["part"] in ran:
            assert row["status"] == "ran", row
            assert row["wall_s"] >= 0 and row["estimate_s"] > 0
    parts = {r["part"]: r for r in doc["parts"]}
    for name in ran:
        r = parts[name]["result"]
        if name.startswith("aa:"):
            assert [s["stage"] for s in r["stages"]] == STAGES
            for s in r["stages"]:
                assert s["attacked"] >= s["broken"] >= 0 and 0 <= s["robust_acc_after"] <= 1
                assert s["fwd_bwd_images"] + s["fwd_images"] > 0 or s["attacked"] == 0
            assert r["robust_acc"] == r["stages"][-1]["robust_acc_after"]
            if not name.endswith(":native"):
                assert 0 <= r["agreement_vs_native"] <= 1
        elif name == "rank":
            assert r["single"]["robust"] == r["rank1"]["robust"] and r["single"]["clean"] == r["rank1"]["clean"]
            assert r["identical_records"]["status_and_predictions"] is True
            assert isinstance(r["identical_records"]["all_columns"], bool)
            assert r["process_group"]  # gloo, or why there was none
        elif name == "certify":
            assert r["images_per_s"] > 0 and r["n"] == 500 and r["images"] == 2
        elif name == "corruptions":
            assert r["ours_images_per_s"] > 0 and len(r["rows"]) == r["corruptions"] == 19
            assert r.get("imagecorruptions_images_per_s", 0) > 0 or r["imagecorruptions"].startswith("not available")
    model = doc["models"][FIRST]
    assert 0 <= model["clean_acc"] <= 1 and model["eps_linf"] > 0
    assert model["pass_seconds_by_batch"]["sizes"][-1] == 12
    if {f"aa:{FIRST}:native", f"aa:{FIRST}:native-bf16"} <= ran:
        gate = doc["goals"][FIRST]["bf16_gate"]
        assert isinstance(gate["pass"], bool) and gate["limit_pp"] == 0.2
        assert gate["pass"] == (abs(gate["delta_pp"]) <= 0.2)


def test_tiny_cpu_run_covers_every_code_path(tmp_path):
    ran = {*FIRST_PARTS, "rank", "certify", "corruptions"}
    doc = run_tiny(tmp_path, "--parts", ",".join(sorted(ran)))
    check_document(doc, ran)
    skipped = [r for r in doc["parts"] if r["part"] not in ran]
    assert skipped and all(r["status"].startswith("skipped: not requested") for r in skipped)


@pytest.mark.slow
def test_tiny_cpu_run_whole_plan(tmp_path):
    doc = run_tiny(tmp_path)
    check_document(doc, ALL_PARTS)
    assert set(doc["goals"]) == {FIRST, "wrn-28-10"}


def load_gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_budget_and_missing_packages_are_recorded_not_fatal(tmp_path, monkeypatch):
    gpu = load_gpu_module()
    real = importlib.util.find_spec
    hidden = {"pyautoattack", "autoattack"}
    fake = lambda name, *a, **k: None if name in hidden else real(name, *a, **k)
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    threads = torch.get_num_threads()
    out = tmp_path / "gpu.json"
    try:
        gpu.main(["--device", "cpu", "--tiny", "--budget-s", "0", "--out", str(out), "--work", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    doc = json.loads(out.read_text())
    status = {r["part"]: r["status"] for r in doc["parts"]}
    assert set(status) == ALL_PARTS
    for part, s in status.items():
        if part.endswith(":pyautoattack"):
            assert s.startswith("not available: pyautoattack is not installed")
        else:
            assert s == "skipped: time budget"
    assert doc["goals"] == {} and doc["models"] == {}


def test_unknown_part_is_one_clear_error(tmp_path):
    gpu = load_gpu_module()
    with pytest.raises(SystemExit, match="unknown part"):
        gpu.main(["--device", "cpu", "--tiny", "--parts", "aa:nope", "--out", str(tmp_path / "x.json")])
