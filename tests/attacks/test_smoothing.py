"""Randomized smoothing: the closed-form radius of a linear classifier, Clopper-Pearson, engine entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from attacks.smoothing import SmoothingL2, cp_lower, cp_upper
from harness.engine import EvalConfig, evaluate
from harness.suites import parse_suite
from harness.ties import TIE_RTOL

SIGMA = 0.5


class TwoClassLinear(torch.nn.Module):
    """Logits (0, w.x + b): class 1 iff w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def test_clopper_pearson_matches_the_beta_quantiles():
    from scipy.stats import beta

    assert cp_lower(70, 100, 0.05) == pytest.approx(beta.ppf(0.05, 70, 31))
    assert cp_upper(70, 100, 0.05) == pytest.approx(beta.ppf(0.95, 71, 30))
    assert cp_lower(0, 100, 0.05) == 0.0 and cp_upper(100, 100, 0.05) == 1.0
    # Exact coverage: P(k >= ...) arguments of the one-sided bound, checked by the binomial tail.
    from scipy.stats import binom

    lo = float(cp_lower(80, 100, 0.01))
    assert binom.sf(79, 100, lo) == pytest.approx(0.01, rel=1e-6)


def _linear_case(seed: int, n_points: int, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64).float()
    b = float(torch.randn(1, generator=g))
    u = torch.rand(n_points, generator=g) * 0.39 + 0.6  # p_A in [0.6, 0.99]
    dist = SIGMA * torch.from_numpy(norm.ppf(u.numpy())).float()
    x0 = torch.rand(n_points, d, generator=g)
    wn = w.norm()
    # Move x0 along w so that its signed distance to the boundary is exactly dist (class 1 side).
    x = x0 - (((x0 @ w + b) / wn) - dist)[:, None] * (w / wn)[None]
    return TwoClassLinear(w, b), x.view(n_points, 1, 4, 4), dist.numpy()


def test_certify_radius_approaches_the_closed_form_from_below():
    n, alpha = 3000, 0.001
    cert = SmoothingL2(sigma=SIGMA, n0=100, n=n, alpha=alpha, radii=[0.0])
    gaps, ratios = [], []
    for seed in range(10):  # 10 random linear models x 3 points
        model, x, dist = _linear_case(seed, 3)
        y = torch.ones(len(x), dtype=torch.int64)
        out = cert.run(model, x, y, index=torch.arange(len(x)) + 100 * seed, seed=seed, num_classes=2)
        assert (out["pred"] == 1).all()
        r = out["radius"].astype(np.float64)
        p_a = norm.cdf(dist / SIGMA)
        # Below the truth (the certificate holds) ...
        assert (r <= dist + 1e-6).all(), (r, dist)
        # ... and no further below than the Clopper-Pearson slack at a count 4 sd under its mean.
        k_low = np.floor(n * p_a - 4 * np.sqrt(n * p_a * (1 - p_a)))
        floor = SIGMA * norm.ppf(cp_lower(k_low, n, alpha))
        assert (r >= floor - 1e-6).all(), (r, floor)
        gaps.append(dist - r)
        ratios.append(r / dist)
    assert np.mean(ratios) > 0.8
    # More draws: closer to the closed form.
    model, x, dist = _linear_case(0, 4)
    y = torch.ones(4, dtype=torch.int64)
    big = SmoothingL2(sigma=SIGMA, n0=100, n=4 * n, alpha=alpha, radii=[0.0])
    r_big = big.run(model, x, y, index=torch.arange(4), seed=0, num_classes=2)["radius"]
    assert np.mean(dist - r_big) < np.mean(gaps[0])
    assert (r_big <= dist + 1e-6).all()


def test_predict_abstains_near_the_boundary():
    cert = SmoothingL2(sigma=SIGMA, n=1000, alpha=0.001)
    counts = torch.tensor([[510, 490], [900, 100]])
    assert cert.predict(counts).tolist() == [-1, 0]


class Recording(torch.nn.Module):
    """``model`` that keeps every input batch (to recompute its decisions in float64)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def test_counts_do_not_depend_on_how_samples_are_batched():
    model, x, _ = _linear_case(5, 6)
    a = SmoothingL2(sigma=SIGMA, n=600, max_images=250 * 6)
    b = SmoothingL2(sigma=SIGMA, n=600, max_images=250)  # one sample per forward
    ids = torch.arange(6) + 11
    rec = Recording(model)
    full = a.counts(rec, x, ids, 600, 3, 2)
    # The noise is keyed per sample, so both batchings classify the same points; a count can move
    # only where a draw's decision w.x + b is a float-level tie (within 1024 float32 ulps of the sum
    # of |w_i x_i|, harness/ties.py), one count per tied draw between the two classes.
    xs = torch.cat(rec.inputs).flatten(1).double()
    w = model.w.double()
    ties = int(((xs @ w + model.b).abs() <= TIE_RTOL * (xs.abs() @ w.abs())).sum())
    one_by_one = b.counts(model, x, ids, 600, 3, 2)
    middle = a.counts(model, x[2:4], ids[2:4], 600, 3, 2)
    assert int((full - one_by_one).abs().sum()) <= 2 * ties
    assert int((full[2:4] - middle).abs().sum()) <= 2 * ties


SUITE = """
summary = "t"
[[smoothing]]
params = { sigma = 0.25, n0 = 20, n = 300, alpha = 0.01, radii = [0.0, 0.3], attack_steps = 3, eot_samples = 2, \
           n_verdict = 100 }
"""


def _digits_linear():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():  # a crude class-mean classifier: good enough to certify some points
        from harness.api import load_dataset

        ds = load_dataset("digits:split=train")
        x, y = ds.batch(slice(0, len(ds)))
        mu = torch.stack([x[y == c].flatten(1).mean(0) for c in range(10)])
        m[1].weight.copy_(8 * mu)
        m[1].bias.copy_(-4 * (mu * mu).sum(1))
    return m


def test_engine_smoothing_entry_certified_below_empirical(tmp_path):
    from harness.api import load_dataset

    model, ds = _digits_linear(), load_dataset("digits")
    cfg = EvalConfig(max_samples=24, progress=False, chunk_size=12, batch_size=12)
    r = evaluate(model, ds, parse_suite(SUITE, "t"), out=tmp_path, name="s", config=cfg)
    cert = r.extra["certified"]["smoothing-l2-0.25"]
    g = r.group("smoothing-l2-0.25")
    assert g.kind == "smoothing" and g.accuracy.correct == cert["smoothed_accuracy"]["correct"] > 0
    t0, t1 = cert["table"]
    assert t0["radius"] == 0.0 and t0["certified"]["correct"] == g.accuracy.correct
    assert t1["certified"]["correct"] <= t1["empirical"]["correct"]
    assert not [f for f in r.findings if f.check == "certified-above-empirical" and f.severity == "error"]
    # Resume: a second run over the finished record recomputes nothing and agrees.
    r2 = evaluate(model, ds, parse_suite(SUITE, "t"), out=tmp_path, name="s", config=cfg)
    assert r2.extra["certified"] == r.extra["certified"]


@pytest.mark.slow
def test_engine_smoothing_batch_size_independent(tmp_path):
    from harness.api import load_dataset

    model, ds = _digits_linear(), load_dataset("digits")
    cfg = EvalConfig(max_samples=24, progress=False, chunk_size=12, batch_size=12)
    cert = evaluate(model, ds, parse_suite(SUITE, "t"), config=cfg).extra["certified"]["smoothing-l2-0.25"]
    cfg3 = EvalConfig(max_samples=24, progress=False, chunk_size=12, batch_size=5)
    r3 = evaluate(model, ds, parse_suite(SUITE, "t"), out=tmp_path, name="s3", config=cfg3)
    assert r3.extra["certified"]["smoothing-l2-0.25"]["table"] == cert["table"]


def test_a_false_certificate_is_flagged(tmp_path, monkeypatch):
    """A certifier that overstates radii must trip the certified-above-empirical error."""
    from harness.api import load_dataset

    real = SmoothingL2.run

    def inflated(self, *a, **k):
        out = real(self, *a, **k)
        # Recompute the violation flags as if every correct prediction were certified at radius 10.
        out["radius"] = np.where(out["pred"] >= 0, 10.0, np.nan).astype(np.float32)
        return out

    monkeypatch.setattr(SmoothingL2, "run", inflated)
    model, ds = _digits_linear(), load_dataset("digits")
    suite = SUITE.replace("radii = [0.0, 0.3]", "radii = [0.0, 2.0]")
    r = evaluate(model, ds, parse_suite(suite, "t"), config=EvalConfig(max_samples=24, progress=False))
    flagged = [f for f in r.findings if f.check == "certified-above-empirical"]
    assert flagged and flagged[0].data["radius"] == 2.0
