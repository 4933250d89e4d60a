"""Threat models: adversarial attacks and natural corruptions, registered in `harness.registry`."""

from harness.registry import import_submodules

from .base import Attack, frozen, input_gradient

import_submodules(__name__)

__all__ = ["Attack", "frozen", "input_gradient"]
