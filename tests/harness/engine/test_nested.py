"""Nested eps (harness.engine.nested): groups of a norm run in ascending eps; a sample broken at a smaller
eps keeps its verdict-confirmed point at every larger one (``h{k}`` names the entry that found it); the
opt-out attacks every eps independently; records stay a function of their chunk (resume, 2 ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import __version__
from harness.api import evaluate
from harness.engine import EvalConfig, config_hash
from harness.engine.gallery import GalleryCollector
from harness.engine.nested import NestedPlan, Witnesses, evaluation_order, inherit
from harness.engine.runners import AttackRunner, Batch
from harness.errors import UsageError
from harness.records import chunk_files
from harness.records import schema as col
from harness.suites import Suite, parse_suite
from tests.harness.dist_helpers import assert_same_record, tiny_checkpoint, torchrun

N, CHUNK, BATCH = 96, 48, 32


def _attack(name: str, norm: str, eps: object, nested: bool | None = None, **params: object) -> str:
    lines = ["[[attack]]", f'name = "{name}"', f'norm = "{norm}"', f"eps = {json.dumps(eps)}"]
    if params:
        lines.append("params = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items()) + " }")
    if nested is not None:
        lines.append(f"nested = {'true' if nested else 'false'}")
    return "\n".join(lines) + "\n"


PGD = {"steps": 10, "restarts": 1, "loss": "ce"}
# Three suites: the digits L-inf grid (as `quick`), a descending eps list over two norms, and an entry
# that opts out (FGSM) before one that takes part (PGD).
SUITES = {
    "grid": [("fgsm", "linf", "dataset", {}), ("pgd", "linf", "dataset", PGD)],
    "descending-two-norms": [("pgd", "linf", [0.2, 0.05, 0.1], PGD), ("pgd", "l2", [1.5, 0.5, 1.0], PGD)],
    "fgsm-opts-out": [("fgsm", "linf", [0.05, 0.1, 0.2], {"nested": False}), ("pgd", "linf", [0.05, 0.1, 0.2], PGD)],
}


def _suite(name: str, opt_out: bool = False) -> str:
    text = f'summary = "nested-eps test: {name}"\n'
    for attack, norm, eps, params in SUITES[name]:
        p = dict(params)
        nested = p.pop("nested", None)
        text += _attack(attack, norm, eps, False if opt_out else nested, **p)
    return text


def _record(run: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(index entries, every column concatenated over the chunks in order)."""
    entries = json.loads((run / "records" / "index.json").read_text())["entries"]
    chunks = chunk_files(run / "records")
    cols = {c: np.concatenate([chunks[n][c] for n in sorted(chunks)]) for c in chunks[sorted(chunks)[0]]}
    return entries, cols


def _groups(entries: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for k, e in enumerate(entries):
        out.setdefault(e["group"], []).append(k)
    return out


def _robust(cols: dict[str, np.ndarray], members: list[int]) -> np.ndarray:
    alive = cols[col.CLEAN_PRED] == cols[col.LABEL]
    for k in members:
        alive &= cols[col.status(k)] == col.ROBUST
    return alive


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("nested") / "mlp")


@pytest.fixture(scope="module")
def runs(ckpt, tmp_path_factory) -> dict[tuple[str, bool], Path]:
    """Each suite run nested and opted out (every entry ``nested = false``), one thread, the same batch plan."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in SUITES:
            for opt_out in (False, True):
                path = root / f"{name}-{'indep' if opt_out else 'nested'}.toml"
                path.write_text(_suite(name, opt_out))
                run = f"{name}-{'indep' if opt_out else 'nested'}"
                kw = dict(out=root, name=run, chunk_size=CHUNK, batch_size=BATCH, max_samples=N, progress=False)
                evaluate(ckpt, "digits", path, **kw)
                out[(name, opt_out)] = root / run
    finally:
        torch.set_num_threads(n)
    return out


# ---- the order and the plan --------------------------------------------------------------------------
def test_groups_of_a_norm_run_in_ascending_eps_in_their_own_slots():
    suite = parse_suite(_suite("descending-two-norms"), "t")
    entries = suite.resolve()
    order = [key for key, _ in evaluation_order(entries)]
    assert order == ["linf-0.05", "linf-0.1", "linf-0.2", "l2-0.5", "l2-1", "l2-1.5"]
    # The record and result.json keep suite order; only the work is reordered.
    assert [e.group for e in entries][:3] == ["linf-0.2", "linf-0.05", "linf-0.1"]


def test_plan_takes_at_the_first_nested_entry_of_each_larger_eps():
    entries = parse_suite(_suite("fgsm-opts-out"), "t").resolve()  # fgsm x3 (opted out), then pgd x3
    plan = NestedPlan.of(entries)
    assert plan.givers == {3, 4, 5}
    assert plan.takers == {4, 5}  # pgd at 0.1 and 0.2; 0.05 is the smallest eps: nothing to take
    assert NestedPlan.of(entries, skipped={4: "when"}).takers == {5}
    single = parse_suite(_attack("pgd", "linf", 0.1) + _attack("fgsm", "l2", 0.5), "t").resolve()
    assert not NestedPlan.of(single).applies
    assert not NestedPlan.of(parse_suite(_suite("grid", opt_out=True), "t").resolve({"linf": (0.1, 0.2)})).applies


def test_opt_out_is_validated_and_in_describe_only_when_not_the_default():
    entries = parse_suite(_suite("fgsm-opts-out"), "t").resolve()
    assert entries[0].describe()["nested"] is False and "nested" not in entries[3].describe()
    with pytest.raises(UsageError, match="field 'nested' must be true or false, not 'no'"):
        parse_suite(_attack("pgd", "linf", 0.1) + 'nested = "no"\n', "t")


def test_config_hash_changes_only_where_nested_eps_applies():
    def h(entries, nested):
        return config_hash(
            EvalConfig(), model_sha="m", data_hash="d", entries=entries, version=__version__, nested=nested
        )

    single = Suite("s", attacks=[{"name": "pgd", "norm": "linf", "eps": 0.1}]).resolve()
    described = [e.describe() for e in single]
    assert "nested" not in described[0]
    assert h(described, NestedPlan.of(single).applies) == h(described, False)
    grid = Suite("g", attacks=[{"name": "pgd", "norm": "linf", "eps": [0.1, 0.2]}]).resolve()
    assert NestedPlan.of(grid).applies and h([e.describe() for e in grid], True) != h(
        [e.describe() for e in grid], False
    )


# ---- what the records say ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["grid", "descending-two-norms"])
def test_robust_accuracy_is_monotone_in_eps_per_sample(runs, name):
    entries, cols = _record(runs[(name, False)])
    groups = _groups(entries)
    taken = 0
    for norm in {e["norm"] for e in entries}:
        keys = sorted({e["group"] for e in entries if e["norm"] == norm}, key=lambda g: entries[groups[g][0]]["eps"])
        for small, large in zip(keys, keys[1:]):
            # Robust at the larger eps implies robust at the smaller one, sample by sample.
            assert not (_robust(cols, groups[large]) & ~_robust(cols, groups[small])).any(), (small, large)
        taken += sum(
            int((cols[col.inherited(k)] >= 0).sum()) for g in keys for k in groups[g] if col.inherited(k) in cols
        )
    assert taken > 0  # the suites exercise inheritance


@pytest.mark.parametrize("name", list(SUITES))
def test_survivors_are_attacked_as_in_the_independent_run_and_accuracy_is_never_higher(runs, name):
    entries, nested = _record(runs[(name, False)])
    entries_i, indep = _record(runs[(name, True)])
    assert [e["key"] for e in entries] == [e["key"] for e in entries_i]
    assert not any(c.startswith("h") for c in indep)  # the opted-out run takes nothing
    for members in _groups(entries).values():
        taker = next((k for k in members if col.inherited(k) in nested), None)
        took = nested[col.inherited(taker)] >= 0 if taker is not None else np.zeros(N, bool)
        for k in members:
            same = ~took
            np.testing.assert_array_equal(nested[col.status(k)][same], indep[col.status(k)][same], err_msg=str(k))
        if taker is not None:
            assert (nested[col.status(taker)][took] == col.BROKEN).all()
            later = [k for k in members if k > taker]
            assert all((nested[col.status(k)][took] == col.NOT_RUN).all() for k in later)
        assert _robust(nested, members).sum() <= _robust(indep, members).sum()
        assert not (_robust(nested, members) & ~_robust(indep, members)).any()


@pytest.mark.parametrize("name", list(SUITES))
def test_inherited_column_names_the_entry_whose_point_decided(runs, name):
    entries, cols = _record(runs[(name, False)])
    for k, e in enumerate(entries):
        h = cols.get(col.inherited(k))
        if h is None:
            continue
        for j in np.unique(h[h >= 0]):
            rows = h == j
            src = entries[j]
            assert src["norm"] == e["norm"] and src["eps"] < e["eps"] and "nested" not in src
            assert (cols[col.status(j)][rows] == col.BROKEN).all()  # the source entry broke it there
            # The same point, re-scored: the same prediction, the margin up to float sums.
            np.testing.assert_array_equal(cols[col.pred(k)][rows], cols[col.pred(j)][rows])
            np.testing.assert_allclose(cols[col.margin(k)][rows], cols[col.margin(j)][rows], rtol=1e-4, atol=1e-5)


def test_result_counts_inherited_verdicts_and_does_not_call_them_attacked(runs):
    run = runs[("grid", False)]
    entries, cols = _record(run)
    result = json.loads((run / "result.json").read_text())
    rows = {e["key"]: e for g in result["groups"] for e in g["entries"]}
    counted = 0
    for k, e in enumerate(entries):
        row = rows[e["key"]]
        if col.inherited(k) in cols:
            took = int((cols[col.inherited(k)] >= 0).sum())
            assert row["inherited"] == took
            assert row["attacked"] == int((cols[col.status(k)] >= 0).sum()) - took
            counted += took
        else:
            assert "inherited" not in row
    assert counted > 0
    indep = json.loads((runs[("grid", True)] / "result.json").read_text())
    assert not any("inherited" in e for g in indep["groups"] for e in g["entries"])


# ---- resume and ranks ------------------------------------------------------------------------------------
class _Interrupt(BaseException):
    pass


def test_resume_mid_chunk_gives_the_uninterrupted_record(runs, ckpt, tmp_path, monkeypatch):
    import harness.engine.evaluation

    suite = tmp_path / "grid.toml"
    suite.write_text(_suite("grid"))
    hits = []

    def interrupt(point: str) -> None:
        hits.append(point)
        if point == "eval:attack" and len([p for p in hits if p == "eval:attack"]) == 8 * 3 + 5:
            raise _Interrupt  # in chunk 1, second batch, partway through the grid

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    kw = dict(out=tmp_path, name="grid-nested", chunk_size=CHUNK, batch_size=BATCH, max_samples=N, progress=False)
    try:
        monkeypatch.setattr(harness.engine.evaluation, "kill_point", interrupt)
        with pytest.raises(_Interrupt):
            evaluate(ckpt, "digits", suite, **kw)
        assert len(list((tmp_path / "grid-nested" / "records").glob("chunk-*.json"))) == 1
        monkeypatch.undo()
        evaluate(ckpt, "digits", suite, **kw)
    finally:
        torch.set_num_threads(n)
    assert_same_record(tmp_path / "grid-nested", runs[("grid", False)])


def test_two_ranks_give_the_single_process_record(runs, ckpt, tmp_path):
    suite = tmp_path / "two.toml"
    suite.write_text(_suite("descending-two-norms"))
    args = ["evaluate", str(ckpt), "--out", str(tmp_path), "--name", "two", "--suite", str(suite)]
    args += ["--chunk-size", str(CHUNK), "--batch-size", str(BATCH), "--max-samples", str(N), "--no-progress"]
    p = torchrun(2, args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_record(tmp_path / "two", runs[("descending-two-norms", False)])


# ---- the runner with a verdict that does not confirm the witness ----------------------------------------
class _StubEngine:
    """Just what `AttackRunner` uses: one pgd entry at linf 0.2 that takes witnesses, a stub verdict."""

    def __init__(self, confirm: bool) -> None:
        self.entries = Suite("s", attacks=[{"name": "fgsm", "norm": "linf", "eps": 0.2}]).resolve()
        self.confirm = confirm
        self.calls: list[int] = []
        self.attackers = [self._attack]
        self.skipped: dict[int, str] = {}
        self.nesting = NestedPlan(givers=frozenset({0}), takers=frozenset({0}))
        self.cal_width = 3
        self.reduced_precision = False
        # No gallery: a collector that is off (GalleryHooks).
        self.gallery = GalleryCollector(torch.arange(4), 0, self.entries, (1, 2, 2), enabled=False)

    def _attack(self, model, x, y, index, seed):
        self.calls.extend(index.tolist())
        return (x + 0.2).clamp(0, 1)  # the attack's points: at the corner of the ball

    def attack_model(self, k, eager=False):
        return None

    def entry_seed(self, k):
        return 0

    def score(self, x_adv, y, logits=None):
        """Broken exactly where the point is a witness (x + 0.05) and ``confirm``, or an attack point (x + 0.2)."""
        witness = (x_adv - self.x[: len(x_adv)]).abs().amax((1, 2, 3)) < 0.1  # positions are aligned by the test
        broken = torch.where(witness, torch.tensor(self.confirm), torch.tensor(True))
        n = len(x_adv)
        return (
            (~broken).to(torch.int8),
            torch.full((n,), -1.0),
            y.to(torch.int16),
            torch.zeros(n, 3),
            torch.zeros(n, dtype=torch.int8),
        )


@pytest.mark.parametrize("confirm", [True, False])
def test_a_witness_the_verdict_does_not_confirm_counts_for_nothing(confirm):
    eng = _StubEngine(confirm)
    x = torch.full((4, 1, 2, 2), 0.5)
    y, ids = torch.arange(4), torch.arange(4) + 100
    eng.x = x  # the stub's score compares with the clean points (witnesses are taken in position order)
    w = Witnesses(x)
    w.offer("linf", torch.tensor([0, 1]), x[:2] + 0.05, k=7)
    cols = AttackRunner().columns(eng, 0, 4)
    batch = Batch(x, y, ids, slice(0, 4), torch.ones(4, dtype=torch.bool), cols, w)
    AttackRunner().run(eng, 0, batch)
    h = cols[col.inherited(0)]
    assert (cols[col.status(0)] == col.BROKEN).all()
    if confirm:
        assert h.tolist() == [7, 7, -1, -1] and eng.calls == [102, 103]  # witnessed samples not attacked
    else:
        assert h.tolist() == [-1, -1, -1, -1] and eng.calls == [100, 101, 102, 103]  # attacked as usual
    # Every broken sample now holds the point that broke it: the witness where taken, else the attack's.
    assert torch.equal(w.source["linf"], torch.tensor([7, 7, 0, 0]) if confirm else torch.zeros(4, dtype=torch.long))


def test_inherit_without_witnesses_takes_nothing():
    eng = _StubEngine(True)
    x = torch.zeros(2, 1, 2, 2)
    batch = Batch(
        x, torch.zeros(2, dtype=torch.long), torch.arange(2), slice(0, 2), torch.ones(2, dtype=torch.bool), {}
    )
    assert inherit(eng, 0, batch) is None
    assert inherit(eng, 0, Batch(batch.x, batch.y, batch.ids, batch.sl, batch.alive, {}, Witnesses(x))) is None
    assert batch.alive.all()
