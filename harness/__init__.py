"""harness: adversarial and natural robustness evaluation of image classifiers.

The Python API mirrors the CLI::

    import harness
    result = harness.evaluate(model, "digits", suite="quick")
    print(result.clean.accuracy, result.robust_accuracy("linf-0.1"))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "evaluate": "harness.api",
    "train": "harness.api",
    "run": "harness.api",
    "sweep": "harness.api",
    "plan_sweep": "harness.api",
    "load_model": "harness.api",
    "load_dataset": "harness.api",
    "list_registry": "harness.api",
    "EvalConfig": "harness.engine",
    "Evaluation": "harness.engine",
    "Result": "harness.results",
    "Suite": "harness.suites",
    "load_suite": "harness.suites",
    "ImageDataset": "harness.data.base",
    "HarnessError": "harness.errors",
}


def __getattr__(name: str) -> Any:  # lazy, so `import harness.errors` stays light and cycle-free
    import importlib
    import importlib.util

    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    # Submodules as attributes, as the docs use them: `import harness; harness.api.train(...)`.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


__all__ = ["__version__", *_API]
