"""Datasets: the contract (`ImageDataset`) and the built-in sources, registered in `DATASETS`."""

from harness.registry import import_submodules

from .base import ImageDataset, check_image_range

import_submodules(__name__)

__all__ = ["ImageDataset", "check_image_range"]
