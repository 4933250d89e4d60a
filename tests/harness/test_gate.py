"""The CI robustness gate: baselines, paired McNemar decisions, exit codes, JUnit/Markdown, assert_robust.

End-to-end cases use the committed dogfood checkpoint (an MLP trained with PGD-AT on digits) and
its committed baseline; the weakened model is the same architecture trained with plain CE.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from harness.errors import UsageError
from harness.gate import (
    Baseline,
    Outcome,
    compare,
    decode_ids,
    encode_ids,
    pack_bits,
    parse_floors,
    read_run,
    unpack_bits,
)
from harness.stats import mcnemar_one_sided

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
GATE = ROOT / "tests" / "data" / "gate"
CKPT = GATE / "pgd_at_digits.safetensors"
BASELINE = GATE / "baseline.json"


def cli(args: list[str], capsys) -> tuple[int, str]:
    """Run the real entry point in-process; returns (exit code, stdout + stderr)."""
    from harness.cli.app import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out + out.err


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch):
    """Keep tests from appending to a real GitHub step summary when the suite itself runs in Actions."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(scope="module")
def weak_ckpt(tmp_path_factory) -> Path:
    """The deliberately weakened model: same MLP, plain cross-entropy instead of PGD-AT (under 1 s)."""
    from harness.api import train

    out = tmp_path_factory.mktemp("weak") / "ce_digits"
    train("ce", "mlp", "digits", out=out, epochs=5, progress=False, model_args={"hidden": [64]}, eval_samples=0)
    return out.with_name("ce_digits.safetensors")


# ---- encodings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 539, 4096 + 3])
def test_bit_packing_round_trip(n):
    rng = np.random.default_rng(n)
    bits = rng.random(n) < 0.7
    text = pack_bits(bits)
    assert len(text) == 4 * math.ceil(math.ceil(n / 8) / 3)  # base64 of ceil(n/8) bytes
    assert np.array_equal(unpack_bits(text, n), bits)
    with pytest.raises(Exception, match="bits hold"):
        unpack_bits(text, n + 8)


def test_id_encoding_round_trip():
    rng = np.random.default_rng(0)
    for ids in (
        np.sort(rng.choice(1797, 539, replace=False)),
        rng.permutation(1000),  # unsorted: deltas go negative
        np.arange(512) + (1 << 30),  # synthetic train ids
        np.array([], dtype=np.int64),
    ):
        assert np.array_equal(decode_ids(encode_ids(ids), len(ids)), ids)


def test_parse_floors():
    assert parse_floors(["linf-0.1=0.85", "clean=0.9,linf-0.05=0.5"]) == {
        "linf-0.1": 0.85,
        "clean": 0.9,
        "linf-0.05": 0.5,
    }
    with pytest.raises(UsageError):
        parse_floors(["linf-0.1"])
    with pytest.raises(UsageError):
        parse_floors(["linf-0.1=high"])


# ---- statistics and decisions -----------------------------------------------------------------------


@pytest.mark.parametrize("gained,lost", [(0, 0), (0, 1), (0, 10), (3, 20), (6, 101), (10, 13), (13, 10), (40, 60)])
def test_mcnemar_one_sided_matches_scipy(gained, lost):
    """p = P(X >= lost), X ~ Bin(lost + gained, 1/2): the evidence that the new model lost more than it gained."""
    n = gained + lost
    want = 1.0 if n == 0 else binomtest(lost, n, 0.5, alternative="greater").pvalue
    assert mcnemar_one_sided(gained, lost) == pytest.approx(want, rel=1e-9)
    # Hand value: all 10 discordant pairs lost -> (1/2)^10.
    assert mcnemar_one_sided(0, 10) == pytest.approx(0.5**10)


def _pair(ref: np.ndarray, cur: np.ndarray, key: str = "linf-0.1", **baseline_kw) -> tuple[Outcome, Baseline]:
    n = len(ref)
    ids = np.arange(n, dtype=np.int64)
    entries = [{"key": f"pgd@{key}", "kind": "attack", "name": "pgd", "params": {}, "group": key}]
    metrics = [{"key": key, "kind": "attack"}]
    out = Outcome(ids, metrics, {key: cur.astype(bool)}, entries, {"sha256": "h"}, {"name": "s"}, 0, {"name": "m"})
    bm = [{**metrics[0], "correct": int(ref.sum()), "n": n, "accuracy": ref.mean(), "bits": pack_bits(ref)}]
    base = Baseline({}, {"sha256": "h", "spec": "d"}, {"name": "s", "entries": entries}, 0, ids, bm, **baseline_kw)
    return out, base


def _bits(n: int, right_both: int, lost: int, gained: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline/current bits with the given concordant-right count and discordant counts."""
    ref, cur = np.zeros(n, bool), np.zeros(n, bool)
    ref[:right_both] = cur[:right_both] = True
    ref[right_both : right_both + lost] = True
    cur[right_both + lost : right_both + lost + gained] = True
    return ref, cur


def test_decision_regression_when_large_and_significant():
    out, base = _pair(*_bits(500, 300, lost=20, gained=2))
    c = compare(out, base, tolerance=0.02, alpha=0.05).checks[0]
    # drop = 18/500 = 3.6 pp > 2 pp; p = P(Bin(22, .5) >= 20) = (C(22,20)+C(22,21)+C(22,22)) / 2^22
    assert (c.lost, c.gained) == (20, 2)
    assert c.p_value == pytest.approx((231 + 22 + 1) / 2**22)
    assert c.regression and c.failed and c.verdict == "REGRESSION"


def test_decision_large_but_not_significant_passes():
    # drop 2/50 = 4 pp > 2 pp, but two discordant pairs: p = 1/4 -> noise, not a regression.
    out, base = _pair(*_bits(50, 40, lost=2, gained=0))
    rep = compare(out, base, tolerance=0.02, alpha=0.05)
    c = rep.checks[0]
    assert c.drop_exceeds and c.p_value == pytest.approx(0.25) and not c.significant
    assert rep.passed and c.verdict == "ok (not significant)"


def test_decision_significant_but_within_tolerance_passes():
    # 10000 samples, 150 lost vs 100 gained: p ~ 0.001 but the drop is 0.5 pp <= 2 pp.
    out, base = _pair(*_bits(10000, 5000, lost=150, gained=100))
    rep = compare(out, base, tolerance=0.02, alpha=0.05)
    c = rep.checks[0]
    assert c.significant and not c.drop_exceeds and rep.passed
    assert c.verdict == "ok (within tolerance)"


def test_decision_improvement_is_flagged_not_failed():
    out, base = _pair(*_bits(500, 300, lost=2, gained=20))
    rep = compare(out, base)
    assert rep.passed and rep.checks[0].improved and rep.checks[0].verdict == "ok (improved)"
    assert "consider updating" in rep.markdown()


def test_decision_drop_exactly_at_tolerance_is_not_a_regression():
    out, base = _pair(*_bits(100, 50, lost=2, gained=0))  # drop exactly 2 pp
    assert not compare(out, base, tolerance=0.02, alpha=0.5).checks[0].drop_exceeds
    assert compare(out, base, tolerance=0.019, alpha=0.5).checks[0].regression


def test_decision_uses_baseline_thresholds_and_floors():
    ref, cur = _bits(100, 80, lost=0, gained=0)
    out, base = _pair(ref, cur, min_robust={"linf-0.1": 0.85})
    rep = compare(out, base)
    assert not rep.passed and rep.checks[0].below_floor and rep.checks[0].verdict == "BELOW FLOOR"
    assert compare(out, base, min_robust={"linf-0.1": 0.8}).passed  # CLI floors override the baseline's
    with pytest.raises(UsageError, match="unknown metric"):
        compare(out, base, min_robust={"linf-0.3": 0.1})
    with pytest.raises(UsageError):
        compare(out, base, tolerance=2.0)


def test_holm_correction():
    out, base = _pair(*_bits(200, 100, lost=10, gained=0))
    raw = compare(out, base).checks[0].p_value
    assert compare(out, base, correction="holm").checks[0].p_value == pytest.approx(raw)  # one metric: unchanged
    from harness.stats import holm as _holm

    # Holm: sorted p (0.01, 0.02, 0.04) -> (3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)).
    assert _holm([0.04, 0.01, None, 0.02]) == pytest.approx([0.04, 0.03, None, 0.04])


# ---- the committed dogfood baseline ---------------------------------------------------------------------


def test_committed_baseline_is_small_and_matches_checkpoint():
    assert BASELINE.stat().st_size < 8000 and CKPT.stat().st_size < 32000
    b = Baseline.load(BASELINE)
    sidecar = json.loads(CKPT.with_suffix(".json").read_text())
    assert b.model["weights_sha256"] == sidecar["weights_sha256"]
    assert b.dataset["spec"] == "digits:split=test" and b.n == len(b.ids) == b.dataset["n"]
    assert b.metric_keys() == ["clean", "linf-0.05", "linf-0.1", "linf-0.2", "linf-0.3"]
    for m in b.metrics:
        assert int(unpack_bits(m["bits"], b.n).sum()) == m["correct"]
    # Robust bits imply clean bits (a sample can only be robust if it is clean-correct).
    clean = b.bits("clean")
    for k in b.metric_keys()[1:]:
        assert not (b.bits(k) & ~clean).any()


def test_gate_passes_on_same_model_and_is_exact_with_the_same_seed(capsys):
    code, out = cli(["check", CKPT, "--baseline", BASELINE], capsys)
    assert code == 0, out
    assert "robustness gate: PASS" in out and "REGRESSION" not in out
    rep_lines = [ln for ln in out.splitlines() if ln.strip().startswith(("clean", "linf-"))]
    assert len(rep_lines) == 5 and all(" 0/0 " in ln for ln in rep_lines)  # bit-identical re-evaluation


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gate_passes_on_evaluation_noise(capsys, seed):
    """Another evaluation seed moves PGD's random starts: a few samples flip both ways; the gate must pass."""
    from harness.gate import check

    rep = check(CKPT, BASELINE, seed=seed)
    assert rep.passed, rep.text()
    assert rep.seed == seed
    assert sum(c.lost + c.gained for c in rep.checks) > 0  # the seed really changed something


def test_gate_fails_on_weakened_model(capsys, tmp_path, weak_ckpt, monkeypatch):
    junit, summary, step = tmp_path / "junit.xml", tmp_path / "summary.md", tmp_path / "step.md"
    step.write_text("earlier step output\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    code, out = cli(["check", weak_ckpt, "-b", BASELINE, "--junit", junit, "--summary", summary], capsys)
    assert code == 1, out
    assert "robustness gate: FAIL" in out and "REGRESSION" in out

    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["clean", "linf-0.05", "linf-0.1", "linf-0.2", "linf-0.3"]
    failed = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert "linf-0.1" in failed and failed["linf-0.1"].get("type") == "regression"
    assert int(suite.get("failures")) == len(failed) == int(suite.get("tests")) - (5 - len(failed))
    assert "McNemar p" in failed["linf-0.1"].get("message")
    assert "robustness gate: FAIL" in suite.find("system-out").text

    md = summary.read_text()
    assert md.startswith("### ❌ robustness gate: FAIL")
    assert "| metric | base % | now % | Δ pp | lost/gain | p | verdict |" in md
    assert "**REGRESSION**" in md
    assert step.read_text() == "earlier step output\n" + md + "\n"  # appended, not replaced


def test_floor_breach_fails_and_shows_floor(capsys, tmp_path):
    junit = tmp_path / "j.xml"
    code, out = cli(["check", CKPT, "-b", BASELINE, "--min-robust", "linf-0.1=0.95", "--junit", junit], capsys)
    assert code == 1 and "BELOW FLOOR" in out
    fail = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in fail] == ["linf-0.1"] and fail[0].find("failure").get("type") == "floor"
    code, out = cli(["check", CKPT, "-b", BASELINE, "--min-robust", "linf-0.1=0.5"], capsys)
    assert code == 0, out


# ---- usage errors: a mismatch is never a pass ------------------------------------------------------------


def test_mismatched_suite_is_usage_error(capsys, tmp_path):
    suite = tmp_path / "other.toml"
    suite.write_text(
        '[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = "dataset"\n\n'
        '[[attack]]\nname = "pgd"\nnorm = "linf"\neps = "dataset"\nparams = { steps = 5, restarts = 1, loss = "ce" }\n'
    )
    code, out = cli(["check", CKPT, "-b", BASELINE, "--suite", suite], capsys)
    assert code == 2 and "suite mismatch" in out
    code, out = cli(["check", CKPT, "-b", BASELINE, "--suite", "standard"], capsys)
    assert code == 2 and "suite mismatch" in out


def test_mismatched_dataset_is_usage_error(capsys):
    # Same ids, different pixels (upsampled to 16x16): the content hash differs.
    code, out = cli(["check", CKPT, "-b", BASELINE, "--dataset", "digits:size=16"], capsys)
    assert code == 2 and "dataset mismatch" in out
    # The train split does not hold the baseline's (test) ids.
    code, out = cli(["check", CKPT, "-b", BASELINE, "--dataset", "digits:split=train"], capsys)
    assert code == 2 and "sample ids are not in dataset" in out


def test_mismatched_run_samples_and_suite_are_usage_errors(capsys, tmp_path):
    from harness.api import evaluate

    evaluate(CKPT, "digits", "quick", out=tmp_path, name="part", max_samples=100, progress=False)
    code, out = cli(["check", tmp_path / "part", "-b", BASELINE], capsys)
    assert code == 2 and "sample mismatch" in out
    suite = tmp_path / "fgsm.toml"
    suite.write_text('[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = "dataset"\n')
    evaluate(CKPT, "digits", suite, out=tmp_path, name="fgsm", progress=False)
    code, out = cli(["check", tmp_path / "fgsm", "-b", BASELINE], capsys)
    assert code == 2 and "suite mismatch" in out


def test_bad_inputs_are_usage_errors(capsys, tmp_path):
    code, out = cli(["check", CKPT, "-b", tmp_path / "missing.json"], capsys)
    assert code == 2 and "no baseline" in out
    tampered = json.loads(BASELINE.read_text())
    tampered["metrics"][2]["correct"] += 1
    (tmp_path / "t.json").write_text(json.dumps(tampered))
    code, out = cli(["check", CKPT, "-b", tmp_path / "t.json"], capsys)
    assert code == 2 and "edited by hand" in out
    code, out = cli(["check", CKPT, "-b", BASELINE, "--min-robust", "pgd-linf-0.1=0.8"], capsys)
    assert code == 2 and "unknown metric" in out
    code, out = cli(["check", tmp_path / "nothing.safetensors", "-b", BASELINE], capsys)
    assert code == 2
    # Command-line mistakes caught by the option parser are usage errors too (not tracebacks).
    code, out = cli(["check", CKPT], capsys)
    assert code == 2 and "--baseline" in out
    code, out = cli(["check", CKPT, "-b", BASELINE, "--tolerance", "abc"], capsys)
    assert code == 2
    code, out = cli(["check", CKPT, "-b", BASELINE, "--correction", "bonferroni"], capsys)
    assert code == 2 and "unknown correction" in out


# ---- baseline from a run, checking a run ---------------------------------------------------------------


def test_baseline_from_run_and_check_of_run(capsys, tmp_path):
    from harness.api import evaluate

    res = evaluate(CKPT, "digits", "quick", out=tmp_path, name="full", progress=False)
    code, out = cli(
        ["baseline", tmp_path / "full", "--out", tmp_path / "b.json", "--min-robust", "linf-0.05=0.8"], capsys
    )
    assert code == 0, out
    b = Baseline.load(tmp_path / "b.json")
    accs = {"clean": res.clean.accuracy, **{g.key: g.accuracy.accuracy for g in res.groups}}
    assert {m["key"]: m["accuracy"] for m in b.metrics} == pytest.approx(accs, abs=1e-6)
    assert b.min_robust == {"linf-0.05": 0.8} and b.seed == 0
    # Same per-sample bits as the committed baseline (same checkpoint, same seed, same data).
    ref = Baseline.load(BASELINE)
    assert np.array_equal(b.ids, ref.ids)
    for k in ref.metric_keys():
        assert np.array_equal(b.bits(k), ref.bits(k))
    code, out = cli(["check", tmp_path / "full", "-b", BASELINE], capsys)
    assert code == 0 and "PASS" in out
    # Reading a run cannot be combined with evaluation options.
    code, out = cli(["check", tmp_path / "full", "-b", BASELINE, "--seed", "1"], capsys)
    assert code == 2
    # A spec that does not reproduce the run's data is refused at baseline time.
    code, out = cli(
        ["baseline", tmp_path / "full", "--out", tmp_path / "x.json", "--dataset", "digits:size=16"], capsys
    )
    assert code == 2 and "does not reproduce" in out and not (tmp_path / "x.json").exists()


def test_read_run_bits_follow_record_semantics(tmp_path):
    """Group bit = clean correct AND every attack of the threat model left the sample robust."""
    from harness.api import evaluate
    from harness.records import open_record

    evaluate(CKPT, "digits", "quick", out=tmp_path, name="r", max_samples=64, progress=False)
    o = read_run(tmp_path / "r")
    store = open_record(tmp_path / "r" / "records")
    clean = store.column("clean_pred") == store.column("label")
    entries = json.loads((tmp_path / "r" / "records" / "index.json").read_text())["entries"]
    assert np.array_equal(o.bits["clean"], clean)
    for g in ("linf-0.05", "linf-0.1"):
        ks = [k for k, e in enumerate(entries) if e["group"] == g]
        want = clean.copy()
        for k in ks:
            want &= store.column(f"s{k}") == 1
        assert np.array_equal(o.bits[g], want)


# ---- Python API --------------------------------------------------------------------------------------------


def test_assert_robust_passes_and_raises_with_table(weak_ckpt):
    from harness.api import load_model
    from harness.testing import assert_robust

    rep = assert_robust(CKPT, baseline=BASELINE)
    assert rep.passed
    weak, _ = load_model(weak_ckpt)
    with pytest.raises(AssertionError) as e:
        assert_robust(weak, baseline=BASELINE)
    msg = str(e.value)
    assert "robustness gate: FAIL" in msg and "REGRESSION" in msg
    assert "metric" in msg and "lost/gain" in msg and "linf-0.1" in msg
    # Floors alone, no baseline: the module is evaluated on the given data and suite.
    with pytest.raises(AssertionError, match="BELOW FLOOR"):
        assert_robust(weak, "digits", suite="quick", min_robust={"linf-0.1": 0.9}, max_samples=128)
    assert assert_robust(CKPT, "digits", min_robust={"clean": 0.5}, max_samples=128).passed
    with pytest.raises(UsageError):
        assert_robust(CKPT, "digits")


def test_ci_command_end_to_end_subprocess():
    """The exact command `.ci/run` uses, through a fresh interpreter (real exit code)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    cmd = [sys.executable, "-m", "harness", "check", str(CKPT), "--baseline", str(BASELINE)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "robustness gate: PASS" in p.stdout


def test_read_run_corruption_and_attack_semantics_on_constructed_record(tmp_path):
    """Hand-built record: attack groups AND clean with every entry; corruption groups use status alone."""
    from harness.atomic import write_json
    from harness.records import RecordStore
    from harness.results import Accuracy, GroupResult, Result

    entries = [
        {
            "key": "fgsm@linf-0.1",
            "kind": "attack",
            "name": "fgsm",
            "params": {},
            "norm": "linf",
            "eps": 0.1,
            "group": "linf-0.1",
        },
        {
            "key": "pgd@linf-0.1",
            "kind": "attack",
            "name": "pgd",
            "params": {},
            "norm": "linf",
            "eps": 0.1,
            "group": "linf-0.1",
        },
        {
            "key": "blur-2",
            "kind": "corruption",
            "name": "blur",
            "params": {"severity": 2},
            "severity": 2,
            "group": "blur-2",
        },
    ]
    label = np.array([0, 1, 2, 3, 4])
    clean_pred = np.array([0, 1, 2, 9, 4])  # sample 3 wrong when clean
    s0 = np.array([1, 1, 0, -1, 1], np.int8)  # fgsm breaks sample 2
    s1 = np.array([1, 0, -1, -1, 1], np.int8)  # pgd breaks sample 1; 2 and 3 skipped
    s2 = np.array([1, 0, 1, 1, 0], np.int8)  # corruption: evaluated on every sample, clean-wrong 3 survives it
    store = RecordStore(tmp_path / "run" / "records", "cfg", 4, 5)
    for cid in range(store.n_chunks):
        a, b = store.chunk_range(cid)
        store.write(
            cid,
            {
                "id": np.arange(a, b) + 100,
                "label": label[a:b],
                "clean_pred": clean_pred[a:b],
                "s0": s0[a:b],
                "s1": s1[a:b],
                "s2": s2[a:b],
            },
        )
    write_json(
        tmp_path / "run" / "records" / "index.json",
        {"config_hash": "cfg", "chunk_size": 4, "n_total": 5, "entries": entries},
    )
    Result(
        "r",
        {"name": "m"},
        {"name": "x", "sha256": "h"},
        {"name": "s"},
        {"seed": 3},
        {},
        Accuracy.of(4, 5),
        [GroupResult("linf-0.1", "attack", Accuracy.of(2, 5)), GroupResult("blur-2", "corruption", Accuracy.of(3, 5))],
        record={"config_hash": "cfg"},
    ).save(tmp_path / "run" / "result.json")
    o = read_run(tmp_path / "run")
    assert o.ids.tolist() == [100, 101, 102, 103, 104] and o.seed == 3
    assert o.bits["clean"].tolist() == [True, True, True, False, True]
    assert o.bits["linf-0.1"].tolist() == [True, False, False, False, True]
    assert o.bits["blur-2"].tolist() == [True, False, True, True, False]
    assert [m["key"] for m in o.metrics] == ["clean", "linf-0.1", "blur-2"]
    # A result.json that disagrees with its record is refused.
    Result(
        "r",
        {"name": "m"},
        {"name": "x", "sha256": "h"},
        {"name": "s"},
        {"seed": 3},
        {},
        Accuracy.of(4, 5),
        [GroupResult("linf-0.1", "attack", Accuracy.of(3, 5))],
        record={"config_hash": "cfg"},
    ).save(tmp_path / "run" / "result.json")
    with pytest.raises(Exception, match=r"disagree on linf-0\.1"):
        read_run(tmp_path / "run")
