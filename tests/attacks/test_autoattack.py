"""AutoAttack composition: versions, missing components, only-robust samples, reference backends."""

from __future__ import annotations

import pytest
import torch

from harness.errors import UsageError
from harness.registry import ATTACKS

torch.set_num_threads(1)


def test_standard_lists_missing_components_or_builds():
    missing = [n for n in ("fab-t", "square") if n not in ATTACKS]
    if not missing:
        a = ATTACKS.create("autoattack", norm="linf", eps=0.1)
        assert a.components == ["apgd-ce", "apgd-t", "fab-t", "square"]
        return
    with pytest.raises(UsageError) as e:
        ATTACKS.create("autoattack", norm="linf", eps=0.1)
    for n in missing:
        assert n in str(e.value)


def test_bad_configurations():
    with pytest.raises(UsageError):
        ATTACKS.create("autoattack", version="standard", components=["apgd-ce"])
    with pytest.raises(UsageError):
        ATTACKS.create("autoattack", version="custom")
    with pytest.raises(UsageError):
        ATTACKS.create("autoattack", version="fast")
    with pytest.raises(UsageError):
        ATTACKS.create("autoattack", version="custom", components=["apgd-ce"], backend="foolbox")
    with pytest.raises(UsageError):
        ATTACKS.create("autoattack", version="custom", components=["apgd-ce"], component_params={"square": {}})


def test_rand_version_budget():
    a = ATTACKS.create("autoattack", norm="l2", eps=0.5, version="rand")
    assert a.components == ["apgd-ce", "apgd-dlr"]
    assert all(att.eot_iter == 20 and att.restarts == 1 for att in a._attacks)


def test_custom_only_attacks_robust_and_matches_reference(digits_cnn):
    from harness import api

    x, y = api.load_dataset("digits").batch(slice(0, 40))
    comps = {"components": ["apgd-ce", "apgd-t"], "component_params": {"apgd-t": {"n_target_classes": 2}}}
    native = ATTACKS.create("autoattack", norm="linf", eps=0.1, version="custom", **comps)
    xn = native(digits_cnn, x, y, seed=1)
    runs = native.last_run
    assert runs[0]["component"] == "apgd-ce" and runs[1]["attacked"] == runs[0]["robust_after"]
    ref = ATTACKS.create("autoattack", norm="linf", eps=0.1, version="custom", backend="pyautoattack", **comps)
    xr = ref(digits_cnn, x, y, seed=1)
    assert (xr - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        rn, rr = digits_cnn(xn).argmax(1) == y, digits_cnn(xr).argmax(1) == y
    assert rn.sum() <= rr.sum() + 1
    assert (rn == rr).float().mean() >= 0.95


def test_torchattacks_backend_without_the_package_is_one_usage_error(monkeypatch):
    """backend='torchattacks' is the user's choice: a missing package is a UsageError with a hint."""
    import sys

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import fails as if not installed
    attack = ATTACKS.create("autoattack", norm="linf", eps=0.1, backend="torchattacks")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(UsageError, match="torchattacks package") as e:
        attack(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
    assert "backend='native'" in e.value.hint
