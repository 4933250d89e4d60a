"""The [[radius]] suite table: defaults, the preset, and one clear line for every bad field."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.suites import load_suite, parse_suite

GRID = {"linf": (0.05, 0.1, 0.2, 0.3), "l2": (0.5, 1.0, 2.0)}


def _entries(text: str):
    return parse_suite(text, "r").resolve(GRID)


def test_defaults_fmn_and_crown_up_to_the_largest_grid_eps():
    (e,) = _entries("[[radius]]")
    assert (e.kind, e.key, e.group, e.norm, e.eps) == ("radius", "radius-linf", "radius-linf", "linf", None)
    p = e.describe()["params"]
    assert p == {
        "attack": "fmn",
        "attack_params": {},
        "max_eps": 0.3,
        "steps": 12,
        "verifier": "crown",
        "verifier_params": {},
    }
    search = e.build()
    (attack,) = search.attacks
    assert type(attack).__name__ == "FMN" and type(search.verifier).__name__ == "CROWNVerifier"
    assert attack.norm == "linf" and search.verifier.norm == "linf" and search.max_eps == 0.3


def test_fields_are_passed_on_and_min_norm_mode_is_chosen_for_fab():
    text = """
[[radius]]
label = "fab-l2"
norm = "L2"
max_eps = "1/2"
attack = "fab"
attack_params = { restarts = 2 }
verifier = "ibp"
steps = 8
[[radius]]
max_eps = 0.2
verifier = "milp"
verifier_params = { time_limit = 3 }
[[radius]]
norm = "l2"
verifier = "none"
"""
    a, b, c = _entries(text)
    assert a.key == "fab-l2" and a.norm == "l2" and a.describe()["params"]["max_eps"] == 0.5
    assert a.describe()["params"]["attack_params"] == {"restarts": 2, "mode": "min-norm"}
    sa = a.build()
    assert sa.attacks[0].mode == "min-norm" and sa.steps == 8
    sb = b.build()
    assert type(sb.verifier).__name__ == "MILPVerifier" and sb.verifier.time_limit == 3
    assert c.build().verifier is None and c.describe()["params"]["max_eps"] == 2.0


def test_several_attacks_each_with_its_parameters():
    (e,) = _entries("[[radius]]\nattack = ['fmn', 'fab']\nattack_params = { fmn = { restarts = 3 } }")
    p = e.describe()["params"]
    assert p["attack"] == ["fmn", "fab"]
    assert p["attack_params"] == {"fmn": {"restarts": 3}, "fab": {"mode": "min-norm"}}
    fmn, fab = e.build().attacks
    assert fmn.restarts == 3 and fab.mode == "min-norm"
    assert e.build().config()["attack_params"] == p["attack_params"]


def test_the_preset_covers_linf_and_l2():
    s = load_suite("radius")
    s.check()
    keys = [e.key for e in s.resolve(GRID)]
    assert keys == ["radius-linf", "radius-l2"]


BAD = {
    "[[radius]]\nnorm = 'l1'": "unknown norm",
    "[[radius]]\nmax_eps = 0": "max_eps: eps must be a positive number",
    "[[radius]]\nmax_eps = -0.1": "max_eps: eps must be a positive number",
    "[[radius]]\nmax_eps = 1.5": "max_eps: L-inf eps 1.5 exceeds 1",
    "[[radius]]\nmax_eps = true": "field 'max_eps'",
    "[[radius]]\nmax_eps = 'lots'": "max_eps",
    "[[radius]]\nmax_eps = nan": "max_eps",
    "[[radius]]\nsteps = 0": "steps",
    "[[radius]]\nsteps = 1000": "steps",
    "[[radius]]\nsteps = 2.5": "field 'steps' must be an integer",
    "[[radius]]\nattack = 'pgd'": "attack 'pgd' has no minimum-norm search",
    "[[radius]]\nattack = 'fnm'": "unknown attack 'fnm'",
    "[[radius]]\nattack = 3": "field 'attack'",
    "[[radius]]\nattack = 'fab'\nattack_params = { mode = 'fixed' }": "needs mode 'min-norm'",
    "[[radius]]\nattack_params = { stepz = 3 }": "has no parameter 'stepz'",
    "[[radius]]\nattack_params = { steps = -3 }": "steps",
    "[[radius]]\nattack_params = { eps = 0.1 }": "attack_params sets 'eps'",
    "[[radius]]\nattack_params = 3": "field 'attack_params' must be a table",
    "[[radius]]\nverifier = 'crwon'": "unknown verifier 'crwon'",
    "[[radius]]\nnorm = 'l2'\nverifier = 'milp'": "L-inf radii only",
    "[[radius]]\nverifier = 'none'\nverifier_params = { tol = 0 }": "verifier_params given",
    "[[radius]]\nverifier_params = { tol = -1 }": "tol",
    "[[radius]]\nverifier_params = { norm = 'l2' }": "verifier_params sets 'norm'",
    "[[radius]]\neps = 0.1": "unknown field",
    "[[radius]]\nlabel = 4": "field 'label'",
    "radius = 3": "'radius' must be an array of tables",
    "[[radius]]\n[[radius]]": "duplicate entries",
    "[[radius]]\nattack = []": "lists no attack",
    "[[radius]]\nattack = ['fmn', 'fmn']": "lists no attack or one twice",
    "[[radius]]\nattack = ['fmn', 'pgd']": "attack 'pgd' has no minimum-norm search",
    "[[radius]]\nattack = ['fmn', 'fab']\nattack_params = { steps = 3 }": "a table per attack",
    "[[radius]]\nattack = ['fmn', 'fab']\nattack_params = { cw-l2 = { } }": "not 'cw-l2'",
    "[[radius]]\nattack = ['fmn', 'fab']\nattack_params = { fab = { mode = 'fixed' } }": "needs mode 'min-norm'",
    "[[radius]]\nattack = ['fmn', 'fab']\nattack_params = { fmn = { stepz = 1 } }": "no parameter 'stepz'",
}


@pytest.mark.parametrize("text", BAD)
def test_a_bad_field_is_one_clear_line(text):
    with pytest.raises(UsageError, match=BAD[text]) as e:
        _entries(text)
    assert "\n" not in str(e.value)
    assert "\n" not in (e.value.hint or "")


def test_dataset_max_eps_needs_a_grid_of_the_norm():
    with pytest.raises(UsageError, match="defines no l2 eps grid"):
        parse_suite("[[radius]]\nnorm = 'l2'", "r").resolve({"linf": (0.1,)})


def test_the_plan_counts_the_attacks_passes_and_says_the_verifier_is_not_counted():
    from harness.plan import plan_evaluation

    plan = plan_evaluation("digits", "radius", max_samples=10, batch_size=10)
    rows = {r.key: r for r in plan.rows}
    assert set(rows) == {"radius-linf", "radius-l2"}
    for r in rows.values():
        assert r.cost is not None and r.cost.forward > 100 * 10  # FMN-100 per image, plus the verdict
        assert "verifier" in r.note and "fmn+fab / crown" in r.text
