"""Calibration metrics: hand-built cases, scikit-learn's binning, temperature scaling, engine columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve

from harness.calibration import bootstrap, ece, fit_temperature, metrics, prob_stats, reliability
from harness.engine import EvalConfig, evaluate
from harness.errors import UsageError
from harness.suites import parse_suite


def test_perfectly_calibrated_ece_is_near_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 200_000)
    correct = rng.uniform(size=conf.size) < conf  # P(correct | conf) = conf
    assert ece(conf, correct) < 0.005
    assert ece(conf, correct, adaptive=True) < 0.005


def test_known_miscalibration():
    # Every prediction at confidence 0.9, 60 % of them right: ECE = |0.9 - 0.6| = 0.3 exactly.
    conf = np.full(1000, 0.9)
    correct = np.arange(1000) < 600
    assert ece(conf, correct) == pytest.approx(0.3, abs=1e-12)
    assert ece(conf, correct, adaptive=True) == pytest.approx(0.3, abs=1e-12)
    # Two bins: 0.95 right 70 % (gap .25, weight .5), 0.55 right 55 % (gap 0): ECE = 0.125.
    conf = np.r_[np.full(100, 0.95), np.full(100, 0.55)]
    correct = np.r_[np.arange(100) < 70, np.arange(100) < 55]
    assert ece(conf, correct) == pytest.approx(0.125, abs=1e-12)


def _sklearn_ece(conf, correct, n_bins, strategy):
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=n_bins, strategy=strategy)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.percentile(conf, np.linspace(0, 100, n_bins + 1))
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(conf) * np.abs(prob_true - prob_pred)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_calibration_curve(seed):
    rng = np.random.default_rng(seed)
    conf = rng.beta(5, 1.5, 3000)
    correct = rng.uniform(size=conf.size) < conf**1.7
    assert ece(conf, correct) == pytest.approx(_sklearn_ece(conf, correct, 15, "uniform"), abs=1e-6)
    assert ece(conf, correct, adaptive=True) == pytest.approx(_sklearn_ece(conf, correct, 15, "quantile"), abs=1e-6)
    rel = reliability(conf, correct)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=15)
    got = np.asarray(rel["accuracy"])
    np.testing.assert_allclose(got[~np.isnan(got)], prob_true, atol=1e-9)
    got = np.asarray(rel["confidence"])
    np.testing.assert_allclose(got[~np.isnan(got)], prob_pred, atol=1e-9)


def test_nll_brier_conf_errors_from_their_formulas():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 0])
    st = prob_stats(logits, y).double().numpy()
    e2 = np.exp(2.0)
    p0 = np.array([e2, 1, 1]) / (e2 + 2)
    p1 = np.array([1, np.e, 1]) / (np.e + 2)
    np.testing.assert_allclose(st[:, 0], [p0.max(), p1.max()], rtol=1e-6)
    np.testing.assert_allclose(st[:, 1], np.log([p0[0], p1[0]]), rtol=1e-6)
    correct = np.array([True, False])
    m = metrics(st[:, 0], correct, st[:, 1], st[:, 2])
    brier = np.mean([((p0 - [1, 0, 0]) ** 2).sum(), ((p1 - [1, 0, 0]) ** 2).sum()])
    assert m["brier"] == pytest.approx(brier, rel=1e-6)
    assert m["nll"] == pytest.approx(-np.mean(np.log([p0[0], p1[0]])), rel=1e-6)
    assert m["conf_errors"] == pytest.approx(p1.max(), rel=1e-6)
    assert m["accuracy"] == 0.5


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1, 500)
    correct = rng.uniform(size=500) < 0.8
    lp, sq = np.log(np.full(500, 0.7)), np.full(500, 0.5)
    a = bootstrap(conf, correct, lp, sq, seed=7, n_boot=50)
    b = bootstrap(conf, correct, lp, sq, seed=7, n_boot=50)
    assert a == b
    lo, hi = a["ece"]
    assert lo < ece(conf, correct) < hi


def test_fit_temperature_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 5, generator=g) * 3
    y = torch.multinomial(torch.softmax(z / 2.0, 1), 1, generator=g).squeeze(1)  # labels drawn at T = 2
    assert fit_temperature(z, y) == pytest.approx(2.0, rel=0.05)


class Linear(torch.nn.Module):
    def __init__(self, d: int = 64, k: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(d, k)

    def forward(self, x):
        return self.fc(x.flatten(1) * 4)


SUITE = """
summary = "t"
[[attack]]
name = "fgsm"
norm = "linf"
eps = [0.05]
[[attack]]
name = "pgd"
norm = "linf"
eps = [0.05]
params = { steps = 3 }
[calibration]
bootstrap = 20
temperature = "train"
"""


def test_engine_records_calibration_and_temperature_scaling(tmp_path):
    from harness.api import load_dataset

    ds = load_dataset("digits")
    model = Linear()
    cfg = dict(max_samples=96, progress=False, chunk_size=32)
    r = evaluate(model, ds, parse_suite(SUITE, "t"), out=tmp_path, name="a", config=EvalConfig(batch_size=64, **cfg))
    cal = r.extra["calibration"]
    assert cal["temperature"]["split"] == "train" and cal["temperature"]["value"] > 0
    clean, adv = cal["groups"]["clean"], cal["groups"]["linf-0.05"]
    assert clean["n"] == adv["n"] == 96
    assert clean["accuracy"] == pytest.approx(r.clean.accuracy)
    assert adv["accuracy"] == pytest.approx(r.group("linf-0.05").accuracy.accuracy)
    assert adv["confidence"] != clean["confidence"]
    assert "scaled" in clean and clean["scaled"]["accuracy"] == clean["accuracy"]
    # Same numbers with another batch size (keyed randomness, per-sample statistics).
    r2 = evaluate(model, ds, parse_suite(SUITE, "t"), out=tmp_path, name="b", config=EvalConfig(batch_size=7, **cfg))
    # Another batch plan: the verdicts (accuracies, n) are promised equal (docs/reliability.md); the
    # confidences move by a few float32 ulps, so bin counts and the statistics over bins agree exactly
    # and to 1e-5 as long as no confidence is within rounding of a fixed bin edge k/15 (the adaptive
    # edges are sample confidences themselves, so they move with them).
    if _near_bin_edges(tmp_path / "a") + _near_bin_edges(tmp_path / "b") == 0:
        _assert_close(r2.extra["calibration"], cal)
    for g, d in cal["groups"].items():
        got = r2.extra["calibration"]["groups"][g]
        assert (got["n"], got["accuracy"]) == (d["n"], d["accuracy"])
    # The gate: ECE may not rise more than the tolerance over the baseline's.
    from harness.gate import compare, make_baseline, read_run

    base = make_baseline(tmp_path / "a", dataset="digits")
    assert base.calibration["clean"] == pytest.approx(clean["ece"])
    out = read_run(tmp_path / "b")
    assert compare(out, base, max_ece_rise=0.01).passed
    out.calibration["clean"] = base.calibration["clean"] + 0.05
    rep = compare(out, base, max_ece_rise=0.01)
    assert not rep.passed and "clean: ECE rose" in rep.ece_reasons()[0]
    assert compare(out, base, max_ece_rise=0.06).passed


def _near_bin_edges(run, n_bins: int = 15, tol: float = 1e-5) -> int:
    """Confidences (raw and temperature-scaled, clean and per entry) within ``tol`` of a bin edge."""
    from harness.records import open_record

    store = open_record(run / "records")
    edges = np.arange(1, n_bins) / n_bins
    near = 0
    for chunk in store.iter_chunks():
        for col, v in chunk.items():
            if col == "clean_cal" or (col[0] == "c" and col[1:].isdigit()):
                conf = v[:, [0, 3]].ravel() if v.shape[1] > 3 else v[:, 0]
                conf = conf[np.isfinite(conf)]
                near += int((np.abs(conf[:, None] - edges[None]) <= tol).any(1).sum())
    return near


def _assert_close(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_close(u, v)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5)
    else:
        assert a == b


def test_temperature_on_the_evaluated_split_is_refused(tmp_path):
    from harness.api import load_dataset

    ds = load_dataset("digits:split=train")
    with pytest.raises(UsageError, match="held-out"):
        evaluate(Linear(), ds, parse_suite(SUITE, "t"), config=EvalConfig(max_samples=8, progress=False))


# ---- how scores become probabilities (issue 24: square loss with simplex coding) ----------------------
def test_simplex_coding_probabilities_hand_computed():
    from harness.calibration import prob_stats, scores_to_probs

    # K = 3, v_k = sqrt(3/2) (e_k - 1/3); z = v_0 exactly (a perfect fit of class 0): eta = (1, 0, 0).
    v = math.sqrt(3 / 2) * (torch.eye(3) - 1 / 3)
    assert torch.allclose(scores_to_probs(v[:1], "simplex-coding"), torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)
    # z = 0.5 v_0: z.v_0 = 0.5, z.v_k = -0.25 -> eta = ((2 * 0.5 + 1) / 3, (2 * -0.25 + 1) / 3, same) = (2/3, 1/6, 1/6)
    p = scores_to_probs(0.5 * v[:1], "simplex-coding")
    assert torch.allclose(p, torch.tensor([[2 / 3, 1 / 6, 1 / 6]]), atol=1e-6)
    # z = 2 v_0: eta = (5/3, -1/3, -1/3) clipped to (1, 0, 0) then renormalised.
    assert torch.allclose(scores_to_probs(2 * v[:1], "simplex-coding"), torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)
    st = prob_stats(0.5 * v[:1], torch.tensor([1]), score_to_prob="simplex-coding")
    assert st[0, 0].item() == pytest.approx(2 / 3, rel=1e-6)
    assert st[0, 1].item() == pytest.approx(math.log(1 / 6), rel=1e-6)
    assert st[0, 2].item() == pytest.approx(4 / 9 + 2 / 36, rel=1e-6)


def test_score_to_prob_read_from_the_sidecar():
    from harness.calibration import score_to_prob_of
    from harness.errors import CheckpointError

    assert score_to_prob_of({}) == "softmax"
    assert score_to_prob_of({"train_config": {"score_to_prob": "simplex-coding"}}) == "simplex-coding"
    with pytest.raises(CheckpointError, match="score_to_prob"):
        score_to_prob_of({"train_config": {"score_to_prob": "sigmoid"}})


def test_square_loss_model_is_scored_with_its_coding(tmp_path):
    """A square-loss checkpoint records simplex-coding; the engine's calibration statistics use it, and
    its temperature-scaled statistics use the T fitted on the NLL of that readout (held-out train split)."""
    from harness.api import evaluate as api_evaluate
    from harness.api import load_dataset, train

    res = train("square", "mlp", "digits", epochs=2, eval_samples=0, progress=False, out=tmp_path / "sq")
    assert res.meta.train_config["score_to_prob"] == "simplex-coding"
    suite = parse_suite(SUITE, "t")  # temperature fitted on the train split
    r = api_evaluate(tmp_path / "sq", "digits:split=test", suite, progress=False, device="cpu", max_samples=64)
    x, y = load_dataset("digits:split=test").batch(slice(0, 64))
    held_x, held_y = load_dataset("digits:split=train").batch(slice(None))
    with torch.no_grad():
        z, zh = res.model(x), res.model(held_x)
    want = prob_stats(z, y, score_to_prob="simplex-coding")[:, 0].mean().item()
    soft = prob_stats(z, y)[:, 0].mean().item()
    assert abs(want - soft) > 0.01  # the two readouts differ on this model
    clean = r.extra["calibration"]["groups"]["clean"]
    assert clean["confidence"] == pytest.approx(want, abs=1e-5)
    t_simplex = fit_temperature(zh, held_y, "simplex-coding")
    assert abs(t_simplex - fit_temperature(zh, held_y, "softmax")) > 0.01  # the maps' temperatures differ
    scaled = prob_stats(z, y, t_simplex, score_to_prob="simplex-coding")[:, 0].mean().item()
    assert clean["scaled"]["confidence"] == pytest.approx(scaled, abs=1e-4)
    # The recorded temperature is the one the scaled statistics used (the simplex fit, not softmax's).
    assert r.extra["calibration"]["temperature"]["value"] == pytest.approx(t_simplex, rel=1e-5)


# ---- temperature scaling on the model's own probability map (square loss: simplex coding) -------------
# K = 2, every sample's scores z = (sqrt(2)/2, -sqrt(2)/2), labels 0, 0, 0, 1. Simplex readout:
# z.v_0 = sqrt(2) (z_0 - mean z) = 1, so eta_0(T) = (1 + 1/T) / 2 (unclipped for T >= 1), and the NLL
# -(3 log eta_0 + log(1 - eta_0)) / 4 is smallest where eta_0 = 3/4: T = 2. Softmax: p_0 = sigmoid(sqrt(2)/T)
# = 3/4 at T = sqrt(2) / ln 3 = 1.2872.
Z2 = torch.tensor([[math.sqrt(2) / 2, -math.sqrt(2) / 2]] * 4)
Y2 = torch.tensor([0, 0, 0, 1])


def test_simplex_temperature_minimises_the_simplex_nll_hand_computed():
    from harness.calibration import scores_to_probs, temperature_nll

    t = fit_temperature(Z2, Y2, "simplex-coding")
    assert t == pytest.approx(2.0, rel=1e-4)
    assert scores_to_probs(Z2[:1], "simplex-coding", t)[0, 0].item() == pytest.approx(0.75, rel=1e-4)
    assert fit_temperature(Z2, Y2, "softmax") == pytest.approx(math.sqrt(2) / math.log(3), rel=1e-4)
    # The NLL it minimises, by hand: -(3 log 0.75 + log 0.25) / 4 at T = 2.
    assert temperature_nll(Z2, Y2, 2.0, "simplex-coding") == pytest.approx(-(3 * math.log(0.75) + math.log(0.25)) / 4)


def test_simplex_temperature_is_the_grid_minimum_with_clipping():
    """K = 5, scores that clip at small T: the fit is no worse than a dense grid over [0.01, 100]."""
    from harness.calibration import temperature_nll

    g = torch.Generator().manual_seed(3)
    z = torch.randn(300, 5, generator=g) * 2
    y = torch.where(torch.rand(300, generator=g) < 0.7, z.argmax(1), torch.randint(0, 5, (300,), generator=g))
    t = fit_temperature(z, y, "simplex-coding")
    grid = [10 ** (-2 + 4 * i / 400) for i in range(401)]
    best = min(temperature_nll(z, y, s, "simplex-coding") for s in grid)
    assert temperature_nll(z, y, t, "simplex-coding") <= best + 1e-9
    assert abs(t - fit_temperature(z, y, "softmax")) > 0.05  # the two maps give different temperatures


def test_fitted_temperature_gives_each_map_its_own_fit_and_ce_is_unchanged():
    """What the engine gets (no map named): the softmax T bit for bit, and the simplex T where applied."""
    import pickle

    from harness.calibration import FittedTemperature

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 5, generator=g) * 3
    y = torch.multinomial(torch.softmax(z / 2.0, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, y)
    assert isinstance(t, FittedTemperature)
    # Bit-identical to the softmax fit (and to the code before the map was taken into account).
    from scipy.optimize import minimize_scalar

    zd = z.double()
    old = minimize_scalar(
        lambda lt: float(torch.nn.functional.cross_entropy(zd / math.exp(lt), y)),
        bounds=(math.log(0.01), math.log(100.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    assert float(t) == math.exp(old.x) == fit_temperature(z, y, "softmax")
    assert torch.equal(prob_stats(z, y, t), prob_stats(z, y, float(t)))  # CE models: same statistics
    # The hand-computed case through the same object: the simplex readout gets T = 2.
    t2 = fit_temperature(Z2, Y2)
    assert float(t2) == pytest.approx(math.sqrt(2) / math.log(3), rel=1e-4)
    assert t2.for_map("simplex-coding") == pytest.approx(2.0, rel=1e-4)
    st = prob_stats(Z2, Y2, t2, score_to_prob="simplex-coding")
    assert torch.allclose(st, prob_stats(Z2, Y2, t2.for_map("simplex-coding"), score_to_prob="simplex-coding"))
    assert st[0, 0].item() == pytest.approx(0.75, rel=1e-4)
    back = pickle.loads(pickle.dumps(t2))  # crosses process boundaries (distributed ranks) intact
    assert float(back) == float(t2) and back.for_map("simplex-coding") == t2.for_map("simplex-coding")
