"""import_autoattack makes the reference package importable under the name RobustBench uses."""

import importlib
import sys


def test_autoattack_alias():
    from harness.compat import import_autoattack

    pkg = import_autoattack()
    import autoattack
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState

    assert pkg is importlib.import_module("pyautoattack")
    assert autoattack is pkg and AutoAttack is pkg.AutoAttack
    assert EvaluationState is sys.modules["pyautoattack.state"].EvaluationState
    assert import_autoattack() is pkg  # idempotent
