"""Import shims for third-party packages whose module names differ from what their users import.

RobustBench does ``from autoattack import AutoAttack`` (and ``autoattack.state``), while the
reference implementation on PyPI (``pyautoattack``) installs the module ``pyautoattack``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from types import ModuleType

from harness.errors import UsageError


def import_autoattack() -> ModuleType:
    """Import ``pyautoattack`` and make it (and its submodules) importable as ``autoattack`` too.

    An ``autoattack`` module that is already importable and is not ours is left untouched.
    """
    try:
        pkg = importlib.import_module("pyautoattack")
    except ImportError as e:
        raise UsageError(
            "the pyautoattack package (the reference AutoAttack) is not installed",
            "pip install pyautoattack, or use backend='native'",
        ) from e
    existing = sys.modules.get("autoattack")
    if existing is not None and existing is not pkg:
        return pkg
    if existing is None and importlib.util.find_spec("autoattack") is not None:
        return pkg  # a genuine `autoattack` distribution is installed: do not shadow it
    sys.modules["autoattack"] = pkg
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith(("utils_tf", "fab_tf", "examples")):
            continue  # TensorFlow helpers: importing them needs TensorFlow
        sub = importlib.import_module(f"pyautoattack.{info.name}")
        sys.modules.setdefault(f"autoattack.{info.name}", sub)
    return pkg


__all__ = ["import_autoattack"]
