"""Property-based tests of every registered attack and corruption (hypothesis).

Random tiny models (linear or one-hidden-layer MLP with random weights), shapes, class counts, eps,
norms and seeds. Examples are bounded by the profile in tests/conftest.py (``fast`` by default,
``HYPOTHESIS_PROFILE=ci`` for a deeper run). Attack step counts are cut to keep examples cheap:
the properties hold for any step count.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import UsageError
from harness.registry import ATTACKS, CORRUPTIONS
from harness.threat import TOLERANCE, lp_norm

CHEAP = {"steps": 4, "restarts": 1, "binary_search_steps": 2, "n_queries": 40, "n_target_classes": 2}
CHEAP["component_params"] = {  # autoattack standard, with each component as cheap as above
    "apgd-ce": {"steps": 4},
    "apgd-t": {"steps": 4, "n_target_classes": 2},
    "fab-t": {"steps": 4, "n_target_classes": 2},
    "square": {"n_queries": 40},
}
EPS = {"linf": st.floats(1 / 255, 0.3), "l2": st.floats(0.05, 2.0)}


@dataclass
class Case:
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor
    num_classes: int


@st.composite
def cases(draw) -> Case:
    """A random tiny classifier and a batch of images in [0, 1] (a few of them exactly at 0 or 1)."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(2, 5))
    c, h = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    hidden = draw(st.sampled_from([0, 4, 8]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    d = c * h * h
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    if hidden:
        layers += [torch.nn.Linear(d, hidden), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(hidden or d, k))
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)
    x = torch.rand(n, c, h, h, generator=g)
    x[torch.rand(x.shape, generator=g) < 0.1] = 0.0
    x[torch.rand(x.shape, generator=g) < 0.1] = 1.0
    y = torch.randint(0, k, (n,), generator=g)
    ids = torch.randint(0, 10**6, (n,), generator=g).unique()[:n]
    x, y = x[: len(ids)], y[: len(ids)]
    return Case(model.eval(), x, y, ids, k)


def build(name: str, norm: str, eps: float):
    """The attack with cheap settings, or None when it does not support ``norm``."""
    accepted = ATTACKS.get(name).parameters()
    try:
        return ATTACKS.create(name, norm=norm, eps=eps, **{k: v for k, v in CHEAP.items() if k in accepted})
    except UsageError:
        return None


@pytest.mark.parametrize("name", ATTACKS.names())
@given(case=cases(), norm=st.sampled_from(["linf", "l2"]), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_attack_output_properties(name: str, case: Case, norm: str, data, seed: int) -> None:
    eps = data.draw(EPS[norm])
    attack = build(name, norm, eps)
    if attack is None:
        return  # this attack does not support the norm (e.g. cw-l2 with linf)
    if case.num_classes < attack.min_classes:  # e.g. the DLR loss on 2 classes: a clear error, not garbage
        with pytest.raises(UsageError, match="at least"):
            attack(case.model, case.x, case.y, index=case.ids, seed=seed)
        return
    xa = attack(case.model, case.x, case.y, index=case.ids, seed=seed)
    assert xa.shape == case.x.shape and xa.dtype == case.x.dtype and xa.device == case.x.device
    assert torch.isfinite(xa).all()
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(lp_norm(xa - case.x, norm).max()) <= eps + TOLERANCE
    again = build(name, norm, eps)(case.model, case.x, case.y, index=case.ids, seed=seed)
    assert torch.equal(xa, again), "same seed, different output"


@given(case=cases(), norm=st.sampled_from(["linf", "l2"]), data=st.data(), seed=st.integers(0, 1000))
def test_engine_worst_case_never_calls_a_broken_sample_robust(case: Case, norm: str, data, seed: int, tmp_path_factory):
    """Every attack run alone on the whole batch: a sample any of them breaks is not robust in the engine."""
    from harness.data.base import ImageDataset
    from harness.engine import EvalConfig, evaluate
    from harness.rng import stream_seed
    from harness.suites import Suite

    eps = data.draw(EPS[norm])
    built = {n: build(n, norm, eps) for n in ATTACKS.names()}
    names = [n for n, a in built.items() if a is not None and case.num_classes >= a.min_classes]
    suite = Suite(
        "all",
        attacks=[
            {
                "name": n,
                "norm": norm,
                "eps": eps,
                "params": {k: v for k, v in CHEAP.items() if k in ATTACKS.get(n).parameters()},
            }
            for n in names
        ],
    )
    ds = ImageDataset("tiny", case.x, case.y, case.num_classes, ids=case.ids)
    cfg = EvalConfig(seed=seed, device="cpu", progress=False, batch_size=4, chunk_size=4)
    res = evaluate(case.model, ds, suite, out=tmp_path_factory.mktemp("prop"), name="p", config=cfg)
    (group,) = res.groups
    with torch.no_grad():
        clean_ok = case.model(case.x).argmax(1) == case.y
    broken = torch.zeros(len(case.x), dtype=torch.bool)
    for entry in suite.resolve({}):
        attack = entry.build()
        xa = attack(case.model, case.x, case.y, index=case.ids, seed=stream_seed(seed, entry.key))
        with torch.no_grad():
            broken |= case.model(xa).argmax(1) != case.y
    # Attacks are keyed by sample id, so running them alone on the whole batch gives the same verdicts
    # as in the engine (which skips samples already broken): the worst case is exactly the AND.
    assert group.accuracy.correct == int((clean_ok & ~broken).sum())
    assert group.accuracy.correct <= res.clean.correct
    for e in group.entries:
        assert e["cumulative"]["correct"] <= res.clean.correct


# Reference parameter tables (Hendrycks & Dietterich) whose severities are not ordered by distance:
# elastic_transform's displacement amplitude falls from severity 2 on, saturate's factor is
# 0.3, 0.1, 2, 5, 20 (severity 1 desaturates more than 3 saturates). Their trend is not checked.
UNORDERED = {"elastic_transform", "saturate"}


@st.composite
def photos(draw) -> tuple[torch.Tensor, torch.Tensor]:
    """A few smooth images (bilinear upsampling of a coarse random grid), the scale corruptions are made for."""
    n, c, size = draw(st.integers(2, 6)), draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([24, 32]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    coarse = torch.rand(n, c, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1), torch.randperm(10**6, generator=g)[:n]


@pytest.mark.parametrize(
    "name", CORRUPTIONS.names() or [pytest.param(None, marks=pytest.mark.skip(reason="no corruption registered yet"))]
)
@given(photo=photos(), seed=st.integers(0, 1000))
def test_corruption_properties(name: str, photo: tuple[torch.Tensor, torch.Tensor], seed: int) -> None:
    x, ids = photo
    if x.shape[1] not in (1, 3):  # corruptions are defined for grey and RGB images only
        with pytest.raises(UsageError, match="C = 1 or 3"):
            CORRUPTIONS.create(name, severity=1)(x, index=ids, seed=seed)
        return
    dist = []
    for sev in (1, 2, 3, 4, 5):
        xc = CORRUPTIONS.create(name, severity=sev)(x, index=ids, seed=seed)
        assert xc.shape == x.shape and xc.dtype == x.dtype and torch.isfinite(xc).all()
        assert float(xc.min()) >= 0.0 and float(xc.max()) <= 1.0
        assert torch.equal(xc, CORRUPTIONS.create(name, severity=sev)(x, index=ids, seed=seed))
        dist.append(float((xc - x).abs().mean()))
    if name == "saturate" and x.shape[1] == 1:
        assert max(dist) == 0  # saturating a grey image changes nothing (docs/corruptions.md)
        return
    assert dist[4] > 0, f"severity 5 leaves the images unchanged: {dist}"
    if name not in UNORDERED:
        # The trend, not strict order: per-image draws (frost crops, noise) make adjacent severities overlap.
        assert sum(dist[2:]) / 3 > dist[0], dist
