"""Attack capabilities are read from the classes the registry holds, never from attack names.

Every registered attack's declarations are checked against its own parameters; an attack registered
here (with a name the checks and the export have never seen) declaring the same properties as a
built-in is treated as that built-in by the masking check and by the RobustBench export.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from attacks.base import Attack
from harness.capabilities import ensembles_run, loss_of, sees_through_saturation, softmax_ascent
from harness.checks import postcheck
from harness.losses import LOSSES, TARGETED_LOSSES
from harness.registry import ATTACKS
from harness.reporting.export import model_info
from harness.results import Accuracy, GroupResult, Result
from tests.harness.report_helpers import make_result

ASCENT = "test-caps-ascent"  # a fixed-step ascent whose loss parameter is called "objective"
SHARP = "test-caps-sharp"  # declares strong
ENSEMBLE = "test-caps-ensemble"  # declares itself AutoAttack


class _Noop(Attack):
    def perturb(self, model, x, y, *, index=None, seed=0):
        return x


if ASCENT not in ATTACKS:

    @ATTACKS.register(ASCENT)
    class Ascent(_Noop):
        """Fixed-step ascent with a loss choice (test helper)."""

        loss_param: ClassVar[str | None] = "objective"
        fixed_step_ascent: ClassVar[bool] = True

        def __init__(self, norm: str = "linf", eps: float = 0.1, objective: str = "ce") -> None:
            super().__init__(norm, eps)
            self.objective = objective

    @ATTACKS.register(SHARP)
    class Sharp(_Noop):
        """An attack declared strong (test helper)."""

        strong: ClassVar[bool] = True

    @ATTACKS.register(ENSEMBLE)
    class Ensemble(_Noop):
        """An ensemble declaring itself AutoAttack (test helper)."""

        ensemble: ClassVar[str | None] = "autoattack"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_declarations_name_the_attacks_own_parameters(name):
    """loss_param / logit_scale_param name a recorded config key; ensemble cores name registered attacks."""
    cls = ATTACKS.get(name).factory
    config = ATTACKS.create(name).config()
    for attr in ("loss_param", "logit_scale_param"):
        param = getattr(cls, attr)
        assert param is None or param in config, (name, attr, param)
    if cls.loss_param is not None:  # the default loss is one of the one loss table's
        assert config[cls.loss_param] in {*LOSSES, *TARGETED_LOSSES}
        assert loss_of(name, config) == config[cls.loss_param]
    for core in cls.ensemble_cores:
        assert core and all(n in ATTACKS for n in core), (name, core)
    # No default configuration is both the masking baseline and an attack that sees through it.
    assert not (softmax_ascent(name, config) and sees_through_saturation(name, config)), name


def test_built_in_declarations():
    assert softmax_ascent("pgd", {"loss": "ce", "logit_scale": 1.0}) and softmax_ascent("fgsm", {"loss": "ce"})
    assert not softmax_ascent("pgd", {"loss": "ce", "logit_scale": 1000.0})
    assert sees_through_saturation("pgd", {"loss": "ce", "logit_scale": 1000.0})
    for loss in ("margin", "cw", "dlr"):
        assert sees_through_saturation("pgd", {"loss": loss}) and not softmax_ascent("pgd", {"loss": loss})
    for name in ("apgd-ce", "apgd-t", "autoattack", "fab", "cw-l2"):
        assert sees_through_saturation(name, {}) and not softmax_ascent(name, {})
    assert not softmax_ascent("no-such-attack", {"loss": "ce"})
    assert ensembles_run(["apgd-ce", "apgd-t"]) == {"autoattack"} == ensembles_run(["autoattack"])
    assert ensembles_run(["apgd-ce", "pgd"]) == set() == ensembles_run(["apgd-ce", "apgd-dlr"])


def _masking_result(baseline: str, base_cfg: dict, stronger: str, strong_cfg: dict) -> Result:
    """CE baseline leaves 50/100 robust, the later attack breaks 20 of those (40 % of its survivors)."""
    entries = [
        {"key": f"{baseline}@g", "name": baseline, "config": base_cfg, "cumulative": {"correct": 50}},
        {"key": f"{stronger}@g", "name": stronger, "config": strong_cfg, "cumulative": {"correct": 30}},
    ]
    entries[0]["broken_first"], entries[1]["broken_first"] = 40, 20
    group = GroupResult("linf-0.1", "attack", Accuracy.of(30, 100), "linf", 0.1, entries=entries)
    dataset = {"num_classes": 10, "shape": [1, 8, 8]}
    return Result("r", {}, dataset, {}, {}, {}, clean=Accuracy.of(90, 100), groups=[group])


def _masking(res: Result) -> list:
    return [f for f in postcheck(res) if f.check == "masking"]


def test_a_new_attack_declaring_the_properties_gets_the_masking_check():
    built_in = _masking(_masking_result("pgd", {"loss": "ce", "logit_scale": 1.0}, "pgd", {"loss": "margin"}))
    new = _masking(_masking_result(ASCENT, {"objective": "ce"}, SHARP, {}))
    assert len(built_in) == len(new) == 1
    assert built_in[0].data == new[0].data == {
        "ce_pgd_robust": 0.5, "broken_by_stronger": 20, "fraction_of_survivors": 0.4, "n": 100,
    }  # fmt: skip
    # The same attack with a loss outside the softmax is no baseline; the strong one as black box is no strong one.
    assert not _masking(_masking_result(ASCENT, {"objective": "margin"}, SHARP, {}))
    black = _masking_result(ASCENT, {"objective": "ce"}, SHARP, {})
    black.threat_models[0].entries[1]["black_box"] = True
    assert not _masking(black)


def test_a_new_ensemble_declaring_autoattack_is_exported_as_autoattack():
    r = make_result("m", 181, {8 / 255: 101})
    assert "(not AutoAttack)" in model_info(r, "Linf")["footnote"]
    for names in ([ENSEMBLE], ["autoattack"], ["apgd-ce", "apgd-t", "fab-t"]):
        entries = r.threat_models[0].entries
        entries[:] = [{**entries[0], "name": n, "key": f"{n}@x"} for n in names]
        assert "(AutoAttack)" in model_info(r, "Linf")["footnote"], names
