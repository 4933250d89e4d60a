"""Training objectives, one module per family, each registered in `harness.registry.OBJECTIVES`."""

from harness.registry import import_submodules

import_submodules(__name__)
