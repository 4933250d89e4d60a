import pytest

from harness.errors import UnknownNameError, UsageError
from harness.registry import ATTACKS, DATASETS, MODELS, OBJECTIVES, SUITES, Registry


def test_every_builtin_kind_is_populated():
    for reg, name in (
        (DATASETS, "digits"),
        (MODELS, "cnn"),
        (ATTACKS, "pgd"),
        (OBJECTIVES, "pgd-at"),
        (SUITES, "quick"),
    ):
        assert name in reg
        assert reg.get(name).summary, f"{name} has no one-line summary"


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownNameError, match="pgd"):
        ATTACKS.get("pdg")


def test_duplicate_registration_is_an_error():
    r = Registry("thing")
    r.add("a", lambda: 1)
    with pytest.raises(ValueError, match="duplicate"):
        r.add("a", lambda: 2)


def test_create_rejects_unknown_parameters_with_suggestion():
    with pytest.raises(UsageError, match="steps"):
        ATTACKS.create("pgd", norm="linf", eps=0.1, step=3)


def test_wildcard_listing():
    assert "pgd" in ATTACKS.names("p*") and "fgsm" not in ATTACKS.names("p*")


def test_list_registry_api_and_unknown_kind():
    from harness.api import list_registry

    names = [n for n, _ in list_registry("models")]
    assert {"mlp", "cnn", "preact-resnet18", "wrn"} <= set(names)
    with pytest.raises(UsageError, match="attacks"):
        list_registry("atacks")


def test_eps_grid_override_parses_and_rejects_garbage():
    from harness.suites import parse_eps_grid

    assert parse_eps_grid(["linf=0.1,0.2", "L2=1"]) == {"linf": (0.1, 0.2), "l2": (1.0,)}
    assert parse_eps_grid([]) is None
    for bad in ("linf", "linf=", "linf=abc", "l3=0.1"):
        with pytest.raises(UsageError):
            parse_eps_grid([bad])


def test_run_objectives_default_covers_every_family_and_all_skips_inapplicable():
    from harness.api import resolve_objectives

    default = resolve_objectives("default")
    assert default == ["ce", "mixup", "pgd-at", "odnl"]  # loss, augmentation, adversarial, auxiliary data
    everything = resolve_objectives("all", "digits")
    assert set(everything) == set(OBJECTIVES.names()) - {"hcot"}  # digits has no class hierarchy
    assert resolve_objectives("trades, mart") == ["trades", "mart"]
    with pytest.raises(UnknownNameError, match="pgd-at"):
        resolve_objectives("pgd_at")
    with pytest.raises(UsageError, match="no objectives"):
        resolve_objectives(" , ")
