"""Third-party import problems, handled in one place.

robustbench 1.1.1 imports ``pkg_resources`` (removed in setuptools 81) and the module ``autoattack``,
while the PyPI package it depends on installs that code as ``pyautoattack``. `import_robustbench`
checks the first with a clear error and aliases the second before importing robustbench.
`no_network` refuses connections while third-party constructors run, so nothing is downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from harness.errors import HarnessError, UsageError

# What robustbench 1.1.1 imports from autoattack (robustbench/eval.py): the package and `.state`.
AUTOATTACK_SUBMODULES = ("autoattack", "state", "autopgd_base", "fab_pt", "square", "checks", "other_utils")


class NetworkRefused(OSError):
    """Raised instead of opening a connection inside `no_network`."""


def require_pkg_resources() -> None:
    """robustbench 1.1.1 needs ``pkg_resources``, which setuptools 81 removed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pkg_resources  # noqa: F401
    except ImportError as e:
        raise HarnessError(
            "robustbench 1.1.1 imports pkg_resources, which is missing (setuptools >= 81 removed it)",
            "install an older setuptools: pip install 'setuptools<81'",
        ) from e


def alias_autoattack() -> ModuleType:
    """Make ``import autoattack`` (and ``autoattack.state`` etc.) resolve to ``pyautoattack``.

    A genuine ``autoattack`` installation (from the authors' git repository) is left alone.
    """
    existing = sys.modules.get("autoattack")
    if existing is not None:
        return existing
    if importlib.util.find_spec("autoattack") is not None:
        return importlib.import_module("autoattack")
    try:
        pkg = importlib.import_module("pyautoattack")
    except ImportError as e:
        raise HarnessError(
            "robustbench imports autoattack, but neither autoattack nor pyautoattack is installed",
            "pip install pyautoattack",
        ) from e
    sys.modules["autoattack"] = pkg
    for sub in AUTOATTACK_SUBMODULES:
        try:
            mod = importlib.import_module(f"pyautoattack.{sub}")
        except ImportError:
            continue  # a later pyautoattack may reorganise; robustbench itself needs only `state`
        sys.modules[f"autoattack.{sub}"] = mod
    return pkg


def import_autoattack() -> ModuleType:
    """The reference AutoAttack (``pyautoattack``), made importable as ``autoattack`` too."""
    try:
        pkg = importlib.import_module("pyautoattack")
    except ImportError as e:
        raise UsageError(
            "the pyautoattack package (the reference AutoAttack) is not installed",
            "pip install pyautoattack, or use backend='native'",
        ) from e
    alias_autoattack()
    return pkg


def import_robustbench() -> ModuleType:
    """Import robustbench 1.1.1 with its two import problems handled; raises `HarnessError` if impossible."""
    if "robustbench" in sys.modules and "robustbench.model_zoo" in sys.modules:
        return sys.modules["robustbench"]
    require_pkg_resources()
    alias_autoattack()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rb = importlib.import_module("robustbench")
            importlib.import_module("robustbench.model_zoo")
    except ImportError as e:
        raise HarnessError(
            f"robustbench could not be imported: {e}",
            f"install the missing package ({e.name or 'see the message'}) or reinstall robustbench",
        ) from e
    return rb


@contextmanager
def no_network() -> Iterator[None]:
    """Refuse every outgoing connection (and name lookup) while the block runs."""

    def refuse(*args, **kwargs):
        raise NetworkRefused("network access is disabled while loading models (nothing is downloaded)")

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo)
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo = saved  # type: ignore[method-assign]
