"""robustbench 1.1.1's import problems (pkg_resources, autoattack vs pyautoattack), handled in harness.compat."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import sys

import pytest

from harness.compat import NetworkRefused, import_robustbench, no_network
from harness.errors import HarnessError


def _forget(monkeypatch, *roots: str) -> None:
    """Remove modules from sys.modules for this test only (monkeypatch restores them afterwards)."""
    for key in [k for k in sys.modules if k in roots or k.startswith(tuple(f"{r}." for r in roots))]:
        monkeypatch.delitem(sys.modules, key)


def test_missing_pkg_resources_gives_a_harness_error_naming_the_fix(monkeypatch):
    _forget(monkeypatch, "robustbench")
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # `import pkg_resources` now raises ImportError
    with pytest.raises(HarnessError, match="pkg_resources") as e:
        import_robustbench()
    assert "setuptools<81" in e.value.hint
    assert "robustbench" not in sys.modules  # refused before robustbench was imported


def test_autoattack_is_aliased_to_pyautoattack(monkeypatch):
    import pyautoattack

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name == "autoattack" else real_find_spec(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    _forget(monkeypatch, "robustbench", "autoattack")
    # The problem itself: robustbench imports a module `autoattack` that pip did not install.
    with pytest.raises(ModuleNotFoundError, match="autoattack"):
        importlib.import_module("robustbench")
    _forget(monkeypatch, "robustbench")
    rb = import_robustbench()
    assert sys.modules["autoattack"] is pyautoattack
    assert sys.modules["autoattack.state"] is importlib.import_module("pyautoattack.state")
    from robustbench.eval import AutoAttack

    assert AutoAttack is pyautoattack.AutoAttack
    assert callable(rb.load_model)
    assert import_robustbench() is rb  # cached


def test_no_network_refuses_connections_and_restores():
    before = socket.create_connection
    with no_network(), pytest.raises(NetworkRefused):
        socket.create_connection(("example.org", 80), timeout=1)
    with no_network(), pytest.raises(NetworkRefused):
        socket.getaddrinfo("example.org", 80)
    assert socket.create_connection is before


def test_import_autoattack_returns_the_reference_package_and_aliases_it():
    from harness.compat import import_autoattack

    pkg = import_autoattack()
    import autoattack
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState

    assert pkg is importlib.import_module("pyautoattack")
    assert autoattack is pkg and AutoAttack is pkg.AutoAttack
    assert EvaluationState is sys.modules["pyautoattack.state"].EvaluationState
    assert import_autoattack() is pkg  # idempotent
