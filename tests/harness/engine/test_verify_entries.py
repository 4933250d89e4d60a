"""[[verify]] entries (issue 22): robust accuracy as the interval [verified, attacked], end to end on digits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.api import evaluate, load_dataset
from harness.engine import EvalConfig, Evaluation
from harness.engine.verification import verification, verification_findings
from harness.errors import ModelError, UsageError
from harness.gate import decide, make_baseline, read_run
from harness.records import schema as col
from harness.records.outcome import read_bits, verified_key
from harness.records.store import open_record, read_index
from harness.registry import ATTACKS
from harness.reporting.build import build_report
from harness.results import Result
from harness.suites import parse_suite
from harness.verify import FALSIFIED, OPEN, Verdict

from .._digits_models import ce_model

N = 30
SUITE = """
summary = "pgd, then crown and the milp"
[[attack]]
name = "pgd"
eps = [0.05, 0.1]
params = { steps = 10 }
[[verify]]
name = "crown"
eps = [0.05, 0.1]
[[verify]]
name = "milp"
eps = 0.05
params = { time_limit = 2 }
"""


def _config(**kw) -> EvalConfig:
    return EvalConfig(batch_size=16, chunk_size=20, progress=False, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("verify")
    ds = load_dataset("digits").subset(slice(0, N))
    res = Evaluation(ce_model(), ds, parse_suite(SUITE, "vs"), out=out, name="a", config=_config()).run()
    return out / "a", res


def test_interval_statuses_partition_the_clean_correct_samples(run):
    d, res = run
    rb = read_bits(d / "records")
    for g in res.threat_models:
        assert g.verified is not None and g.verified.correct <= g.accuracy.correct  # verified <= attacked
        robust, ver = rb.groups[g.key], rb.verified[g.key]
        assert not (ver & ~robust).any()  # a verified point is never broken
        broken = rb.clean & ~robust
        open_ = robust & ~ver
        # broken / open / verified partition the clean-correct samples
        assert ((broken.astype(int) + open_ + ver) == rb.clean).all()
        assert int(ver.sum()) == g.verified.correct and int(robust.sum()) == g.accuracy.correct
    g5 = res.group("linf-0.05")
    crown, milp = (e for e in g5.entries if e["kind"] == "verify")
    assert [e["key"] for e in g5.entries][-2:] == ["crown@linf-0.05", "milp@linf-0.05"]  # verifiers run last
    # The MILP ran only on what CROWN left open; counts add up to the points each ran on.
    for e in (crown, milp):
        assert e["verified"] + e["open"] + e["broken"] == e["attacked"]
        assert e["timeouts"] + e["unconfirmed"] <= e["open"]
    assert milp["attacked"] == crown["open"]
    assert crown["verified"] + milp["verified"] == g5.verified.correct
    assert not [f for f in res.findings if f.check.startswith("verif")]


def test_no_point_verified_is_broken_by_a_stronger_attack(run):
    """No contradiction: what CROWN proves at eps 0.1, PGD-50 with restarts never breaks."""
    d, _ = run
    store = open_record(d / "records")
    k = next(i for i, e in enumerate(read_index(d / "records")["entries"]) if e["key"] == "crown@linf-0.1")
    chunks = list(store.iter_chunks())
    q, ids = np.concatenate([c[col.proof(k)] for c in chunks]), np.concatenate([c[col.ID] for c in chunks])
    ds = load_dataset("digits").subset(slice(0, N))
    x, y = ds.batch(slice(0, N))
    proved = torch.as_tensor(q == col.PROOF_VERIFIED)
    assert proved.any()
    pgd = ATTACKS.create("pgd", norm="linf", eps=0.1, steps=50, restarts=2)
    xa = pgd(ce_model(), x[proved], y[proved], index=torch.as_tensor(ids)[proved], seed=1)
    with torch.no_grad():
        assert (ce_model()(xa).argmax(1) == y[proved]).all()


def test_markdown_and_html_show_the_interval_and_the_stacked_bar(run, tmp_path):
    _, res = run
    rep = build_report([res], tmp_path)
    md, page = rep.markdown.read_text(), rep.html.read_text()
    g = res.group("linf-0.1")
    interval = f"[{g.verified.pct()}, {g.accuracy.pct()}]"
    assert "## Robust accuracy as an interval (verified, attacked)" in md and interval in md
    assert f"(verified {g.verified.pct()})" in md.split("## Trade-off")[0]  # beside the summary number
    assert "verified-0" in rep.figures and rep.figures["verified-0"].read_bytes()[:4] == b"\x89PNG"
    assert "![verified / open / broken per threat model](verified-0-" in md
    assert 'id="verified"' in page and interval in page
    section = page[page.index('id="verified"') :]
    assert 'alt="verified / open / broken per threat model" src="data:image/png;base64,' in section


def test_result_json_round_trips_and_refuses_verified_above_attacked(run):
    d, res = run
    again = Result.load(d)
    assert again.group("linf-0.1").verified == res.group("linf-0.1").verified
    raw = again.to_dict()
    g = next(g for g in raw["groups"] if g["key"] == "linf-0.1")
    g["verified"] = {**g["accuracy"]}
    g["verified"]["correct"] = g["accuracy"]["correct"] + 1
    g["verified"]["accuracy"] = g["verified"]["correct"] / g["verified"]["n"]
    from harness.stats import wilson

    g["verified"]["ci95"] = list(wilson(g["verified"]["correct"], g["verified"]["n"]))
    with pytest.raises(UsageError, match=r"verified .* above robust"):
        Result.from_dict(raw)


def test_resume_mid_run_gives_the_same_record(run, tmp_path):
    d, _ = run
    ds = load_dataset("digits").subset(slice(0, N))
    shutil.copytree(d, tmp_path / "a")
    for p in (tmp_path / "a" / "records").glob("chunk-000001.*"):
        p.unlink()
    (tmp_path / "a" / "result.json").unlink()
    Evaluation(ce_model(), ds, parse_suite(SUITE, "vs"), out=tmp_path, name="a", config=_config()).run()
    a, b = open_record(d / "records"), open_record(tmp_path / "a" / "records")
    for ca, cb in zip(a.iter_chunks(), b.iter_chunks(), strict=True):
        assert set(ca) == set(cb)
        for name in ca:
            np.testing.assert_array_equal(ca[name], cb[name], err_msg=name)


class FakeCounterexample:
    """A verifier stub: 'falsified' everywhere, returning ``move(x)`` as the counterexample."""

    def __init__(self, move) -> None:
        self.move = move

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Verdict:
        n = len(x)
        return Verdict(
            torch.full((n,), FALSIFIED, dtype=torch.int8),
            torch.full((n,), -1.0, dtype=torch.float64),
            self.move(model, x, y),
            torch.zeros(n, dtype=torch.float64),
        )

    def config(self) -> dict:
        return {"verifier": "stub"}


def _with_stub(tmp_path, move, name: str) -> Result:
    suite = parse_suite(
        '[[attack]]\nname = "fgsm"\neps = 0.1\n[[verify]]\nname = "milp"\neps = 0.1\nparams = { time_limit = 1 }',
        "stub",
    )
    ev = Evaluation(ce_model(), load_dataset("digits").subset(slice(0, N)), suite, out=tmp_path, name=name,
                    config=_config())  # fmt: skip
    k = next(i for i, e in enumerate(ev.entries) if e.kind == "verify")
    ev.attackers[k] = FakeCounterexample(move)
    return ev.run()


def test_a_counterexample_the_fp32_verdict_does_not_confirm_is_reported_never_counted(tmp_path):
    res = _with_stub(tmp_path, lambda m, x, y: x.clone(), "unconfirmed")  # the clean point: classified right
    g = res.group("linf-0.1")
    e = g.entries[-1]
    attacked = g.entries[0]["cumulative"]["correct"]
    assert g.accuracy.correct == attacked > 0  # nothing counted as broken
    assert e["unconfirmed"] == e["attacked"] == attacked and e["broken"] == 0 and g.verified.correct == 0
    f = [f for f in res.findings if f.check == "verifier-unconfirmed"]
    assert len(f) == 1 and f[0].data["samples"] == attacked and "never counted" in f[0].message


def test_a_confirmed_counterexample_breaks_the_sample_and_says_the_attacks_missed_it(tmp_path):
    def strong(model, x, y):  # what FGSM missed, found by PGD-50 (slightly outside the ball: projected back)
        pgd = ATTACKS.create("pgd", norm="linf", eps=0.1, steps=50)
        xa = pgd(model, x, y, index=torch.arange(len(x)), seed=0)
        return (x + (xa - x) * (1 + 1e-7)).clamp(0, 1)

    res = _with_stub(tmp_path, strong, "confirmed")
    g = res.group("linf-0.1")
    e = g.entries[-1]
    assert e["broken"] > 0 and e["broken"] + e["unconfirmed"] == e["attacked"]
    assert g.accuracy.correct == g.entries[0]["cumulative"]["correct"] - e["broken"]
    f = [f for f in res.findings if f.check == "verifier-broke"]
    assert len(f) == 1 and "attacks were too weak" in f[0].message


def test_a_contradiction_is_an_error_finding():
    """The soundness guard, on a record that claims a proof of a broken sample."""
    suite = parse_suite('[[attack]]\nname = "fgsm"\neps = 0.1\n[[verify]]\nname = "crown"\neps = 0.1', "c")
    entries = suite.resolve({})
    chunk = {
        col.ID: np.arange(4),
        col.LABEL: np.zeros(4, np.int64),
        col.CLEAN_PRED: np.array([0, 0, 0, 1], np.int16),
        col.status(0): np.array([1, 0, 1, -1], np.int8),
        col.status(1): np.array([1, -1, 1, -1], np.int8),
        col.proof(1): np.array([1, 1, 0, 1], np.int8),  # proofs of a broken and of a clean-wrong sample
    }

    class Store:
        def iter_chunks(self):
            yield chunk

    v = verification(Store(), entries)
    assert v.verified == {"linf-0.1": 1} and v.contradictions == {"linf-0.1": 2}
    f = verification_findings(v, entries)
    assert [x.severity for x in f if x.check == "verified-contradiction"] == ["error"]


def test_gate_verified_floor(run, tmp_path):
    d, _ = run
    base = make_baseline(d)
    key = verified_key("linf-0.1")
    assert key in base.metric_keys()
    base.save(tmp_path / "b.json")
    out = read_run(d)
    assert decide(out, base).passed
    # The verified share drops (the same attacked bits): the floor fails, with the gate's McNemar rule.
    worse = read_run(d)
    bits = worse.bits[verified_key("linf-0.05")]
    bits[np.flatnonzero(bits)[:20]] = False
    rep = decide(worse, base)
    failed = [c.key for c in rep.failures]
    assert failed == [verified_key("linf-0.05")] and rep.failures[0].regression
    # A baseline without verified metrics (written before this floor existed) has no floor.
    base.metrics = [m for m in base.metrics if m["kind"] != "verified"]
    rep = decide(worse, base)
    assert rep.passed and next(c for c in rep.checks if c.key == verified_key("linf-0.05")).baseline is None


def test_suite_errors_are_one_line():
    bad = {
        "[[verify]]\nname = 'milp'\nnorm = 'l2'\neps = 0.5\n[[attack]]\nname='pgd'\nnorm='l2'\neps=0.5": "'linf'",
        "[[attack]]\nname = 'pgd'\neps = 0.1\n[[verify]]\nname = 'crown'\neps = 0.2": "no \\[\\[attack\\]\\]",
        "[[verify]]\nname = 'crwon'\neps = 0.2": "unknown verifier",
        "[[verify]]\nname = 'crown'\nsteps = 3": "unknown field",
        "[[verify]]\nname = 'crown'\neps = true": "field 'eps'",
    }
    for text, match in bad.items():
        with pytest.raises(UsageError, match=match) as e:
            parse_suite(text, "bad").resolve({"linf": (0.1,), "l2": (0.5,)})
        assert "\n" not in str(e.value)


def test_an_unsupported_layer_is_one_model_error_naming_it(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    suite = parse_suite('[[attack]]\nname = "fgsm"\neps = 0.1\n[[verify]]\nname = "crown"\neps = 0.1', "u")
    ds = load_dataset("digits").subset(slice(0, 8))
    with pytest.raises(ModelError, match=r"crown@linf-0.1: the verifier cannot bound layer .*Tanh") as e:
        Evaluation(model, ds, suite, out=tmp_path, name="u", config=_config()).run()
    assert "\n" not in str(e.value)


@pytest.mark.slow  # APGD-T at the reference budget over four eps (about a minute on one idle core)
def test_verified_preset_runs_on_digits(tmp_path):
    res = evaluate(ce_model(), "digits", "verified", out=tmp_path, name="p", max_samples=8, progress=False)
    assert [g.key for g in res.threat_models] == ["linf-0.05", "linf-0.1", "linf-0.2", "linf-0.3"]
    assert all(g.verified is not None and g.verified.correct <= g.accuracy.correct for g in res.threat_models)
    assert OPEN == 0  # the verdict's open status is the proof column's open value
