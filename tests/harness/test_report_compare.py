"""`compare_runs`: exact McNemar on per-sample records built by hand, pairing rules, Holm correction."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from harness.atomic import write_json
from harness.records import RecordStore
from harness.reporting import compare_runs
from harness.reporting.compare import sample_bits
from harness.results import Accuracy, GroupResult, Result

ENTRIES = [  # two attacks in one threat model, then one corruption
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
    {"key": "noise-1", "kind": "corruption", "name": "noise", "params": {}, "severity": 1, "group": "noise-1"},
]


def write_run(root: Path, name: str, clean_ok, s0, s1, s2, ids=None, sha="d" * 64) -> Path:
    """A run folder whose record says: clean right/wrong, and per-entry status (1 robust, 0 broken, -1 skipped)."""
    n = len(clean_ok)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    label = np.zeros(n, np.int64)
    pred = np.where(np.asarray(clean_ok, bool), 0, 1).astype(np.int16)
    d = root / name
    store = RecordStore(d / "records", "h" * 16, chunk_size=7, n_total=n)
    for cid in range(store.n_chunks):
        a, b = store.chunk_range(cid)
        store.write(
            cid,
            {
                "id": ids[a:b],
                "label": label[a:b],
                "clean_pred": pred[a:b],
                "clean_margin": np.zeros(b - a, np.float32),
                **{f"s{k}": np.asarray(s, np.int8)[a:b] for k, s in enumerate((s0, s1, s2))},
            },
        )
    write_json(
        d / "records" / "index.json", {"config_hash": "h" * 16, "chunk_size": 7, "n_total": n, "entries": ENTRIES}
    )
    ok = np.asarray(clean_ok, bool)
    rob = ok & (np.asarray(s0) == 1) & (np.asarray(s1) == 1)
    cor = np.asarray(s2) == 1
    Result(
        name=name,
        model={"name": name},
        dataset={"name": "t", "split": "test", "n": n, "sha256": sha},
        suite={"name": "s"},
        config={"seed": 0},
        environment={},
        clean=Accuracy.of(int(ok.sum()), n),
        groups=[
            GroupResult("linf-0.1", "attack", Accuracy.of(int(rob.sum()), n), "linf", 0.1),
            GroupResult("noise-1", "corruption", Accuracy.of(int(cor.sum()), n), corruption="noise", severity=1),
        ],
        record={"path": "records", "config_hash": "h" * 16},
    ).save(d / "result.json")
    return d


def statuses(ok, broken_by_fgsm, broken_by_pgd):
    """Engine semantics: wrong-when-clean samples are not attacked (-1); fgsm-broken ones skip pgd."""
    s0 = np.where(~ok, -1, np.where(broken_by_fgsm, 0, 1))
    s1 = np.where((~ok) | broken_by_fgsm, -1, np.where(broken_by_pgd, 0, 1))
    return s0, s1


@pytest.fixture()
def pair(tmp_path):
    n = 30
    ok_a = np.ones(n, bool)
    ok_a[:2] = False  # A wrong on 0, 1
    ok_b = np.ones(n, bool)
    ok_b[2:11] = False  # B wrong on 2..10 (9 samples)
    ok_b[0] = False  # both wrong on 0; B right on 1 where A is wrong
    # clean: only-A-right = 9 (2..10), only-B-right = 1 (sample 1)
    fa, pa = np.zeros(n, bool), np.zeros(n, bool)
    fa[20:25] = True  # A: fgsm breaks 20..24
    pa[25] = True  # A: pgd breaks 25
    fb, pb = np.zeros(n, bool), np.zeros(n, bool)
    fb[11:13] = True  # B: fgsm breaks 11, 12
    s0a, s1a = statuses(ok_a, fa, pa)
    s0b, s1b = statuses(ok_b, fb, pb)
    corr_a = np.ones(n, np.int8)
    corr_b = np.ones(n, np.int8)
    corr_b[:3] = 0
    a = write_run(tmp_path, "A", ok_a, s0a, s1a, corr_a)
    b = write_run(tmp_path, "B", ok_b, s0b, s1b, corr_b)
    return a, b


def test_sample_bits_follow_the_record(pair):
    bits = sample_bits(pair[0] / "records")
    rob = bits.groups["linf-0.1"]
    # A robust: clean right (not 0, 1) and not broken by fgsm (20..24) nor pgd (25)
    want = np.ones(30, bool)
    want[[0, 1, 20, 21, 22, 23, 24, 25]] = False
    assert np.array_equal(rob, want) and bits.clean.sum() == 28 and bits.groups["noise-1"].all()


def test_mcnemar_counts_and_exact_p(pair):
    cmp = compare_runs(list(pair))
    t = cmp.test("clean", "B")
    assert (t.only_baseline_right, t.only_other_right) == (9, 1)
    # exact two-sided: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * (1 + 10) / 1024
    assert t.p_value == pytest.approx(22 / 1024, rel=1e-12)
    r = cmp.test("linf-0.1", "B")
    # A robust on 2..19 and 26..29 (22); B robust on 1, 13..29 (18). Only A: 2..10, 11, 12 (11); only B: 1, 20..25 (7)
    assert (r.only_baseline_right, r.only_other_right) == (11, 7)
    # 2 * P(X <= 7), X ~ Bin(18, 1/2) = 2 * 63004 / 262144
    assert r.p_value == pytest.approx(2 * 63004 / 262144, rel=1e-12)
    c = cmp.test("noise-1", "B")
    assert (c.only_baseline_right, c.only_other_right) == (3, 0) and c.p_value == pytest.approx(0.25)
    # Holm over the three p-values (0.0215, 0.25, 0.481): 3 * 0.0215, then max(prev, 2 * 0.25), then max(prev, 0.481)
    assert t.p_holm == pytest.approx(3 * 22 / 1024)
    assert c.p_holm == pytest.approx(0.5) and r.p_holm == pytest.approx(0.5)
    # raw p < 0.05 on clean, but not after correcting for three looks
    assert not t.significant and not r.significant and not c.significant
    assert compare_runs(list(pair), alpha=0.1).test("clean", "B").significant
    md = cmp.to_markdown()
    assert "McNemar p = 0.0215 (Holm 0.0645): not significant at α = 0.05" in md


def test_pairing_by_ids_and_refusals(tmp_path, pair):
    a, b = pair
    # same samples in another order: aligned by id, same counts
    data = json.loads((b / "result.json").read_text())
    perm = np.arange(30)[::-1]
    bits = sample_bits(b / "records")
    rec = RecordStore(b / "records", "h" * 16, 7, 30)
    cols = {k: np.concatenate([c[k] for c in rec.iter_chunks()]) for k in ("clean_pred", "s0", "s1", "s2")}
    c = write_run(
        tmp_path, "C", cols["clean_pred"][perm] == 0, cols["s0"][perm], cols["s1"][perm], cols["s2"][perm], ids=perm
    )
    assert bits.clean.sum() == data["clean"]["correct"]
    t = compare_runs([a, c]).test("clean", "C")
    assert (t.only_baseline_right, t.only_other_right) == (9, 1)
    # different data: no test, and the reason is given
    d = write_run(tmp_path, "D", np.ones(30, bool), *([np.ones(30, np.int8)] * 3), sha="e" * 64)
    t = compare_runs([a, d]).test("clean", "D")
    assert t.p_value is None and "dataset sha256" in t.note
    # a record that contradicts result.json is not trusted
    bad = json.loads((b / "result.json").read_text())
    # (a self-consistent clean accuracy, so result.json itself loads: only the record contradicts it)
    bad["clean"] = asdict(Accuracy.of(bad["clean"]["correct"] + 1, bad["clean"]["n"]))
    (b / "result.json").write_text(json.dumps(bad))
    cmp = compare_runs([a, b])
    assert cmp.test("clean", "B").p_value is None and any("does not reproduce" in n for n in cmp.notes)
