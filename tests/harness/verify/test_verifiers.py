"""Verifier verdicts, radii and parameters; and no contradiction with attacks on a trained digits MLP."""

from __future__ import annotations

import pytest
import torch

from harness.errors import UsageError
from harness.registry import ATTACKS, VERIFIERS
from harness.verify import OPEN, VERIFIED

from .test_milp import tiny_mlp


def test_registered_and_listed():
    from harness.api import list_registry

    names = [n for n, _ in list_registry("verifiers")]
    assert {"ibp", "crown", "alpha-crown", "milp"} <= set(names)
    for name in names:
        assert VERIFIERS.get(name).summary


@pytest.mark.parametrize("name", ["ibp", "crown", "alpha-crown"])
def test_radius_is_proven_and_never_above_the_exact_radius(name):
    model = tiny_mlp(3, (4, 4))
    x = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # a misclassified point: radius 0, never verified
    v = VERIFIERS.create(name, eps=0.05)
    r = v.radius(model, x, y, steps=12)
    assert float(r[0]) == 0.0 and int(v.verify(model, x, y).status[0]) == OPEN
    exact = VERIFIERS.create("milp", eps=0.05).minimal_radius(model, x, y, t_max=1.0)
    assert (r <= exact.lower + 1e-9).all(), (r, exact.lower)
    for i in range(1, 6):  # each proven radius verifies when asked directly
        if float(r[i]) > 0:
            assert (
                int(VERIFIERS.create(name, eps=float(r[i])).verify(model, x[i : i + 1], y[i : i + 1]).status[0])
                == VERIFIED
            )


def test_verdict_seconds_and_names():
    model = tiny_mlp(1)
    x = torch.rand(3, 1, 2, 2)
    v = VERIFIERS.create("crown", eps=0.01).verify(model, x, model(x).argmax(1))
    assert v.status.dtype == torch.int8 and v.seconds is not None and (v.seconds >= 0).all()
    assert set(v.names()) <= {"verified", "open"}


@pytest.mark.parametrize(
    "name, params",
    [
        ("crown", {"intermediate": "lp"}),
        ("crown", {"dtype": "float16"}),
        ("ibp", {"tol": -1.0}),
        ("alpha-crown", {"iterations": -1}),
        ("alpha-crown", {"lr": 0.0}),
        ("ibp", {"norm": "l1"}),
        ("ibp", {"eps": float("nan")}),
    ],
)
def test_bad_parameters_are_usage_errors(name, params):
    with pytest.raises(UsageError):
        VERIFIERS.create(name, **params)


def test_no_point_is_both_verified_and_broken_on_digits():
    """A digits MLP: CROWN-verified points at eps survive PGD (CE and margin) and FMN at that eps."""
    from harness.api import load_dataset, train

    torch.manual_seed(0)
    model = train("ce", "mlp", "digits", epochs=3, progress=False, eval_samples=0, seed=0).model.eval()
    x, y = load_dataset("digits").batch(slice(0, 64))
    eps = 0.02
    verdict = VERIFIERS.create("crown", eps=eps).verify(model, x, y)
    verified = verdict.verified
    broken = torch.zeros(len(x), dtype=torch.bool)
    ids = torch.arange(len(x))
    for name, params in (("pgd", {"loss": "ce"}), ("pgd", {"loss": "margin"}), ("fmn", {"steps": 50})):
        xa = ATTACKS.create(name, norm="linf", eps=eps, **params)(model, x, y, index=ids, seed=0)
        with torch.no_grad():
            broken |= model(xa).argmax(1) != y
    assert verified.any() and broken.any()  # the eps separates something
    assert not (verified & broken).any()
