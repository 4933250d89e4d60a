"""Architectures (registered in `MODELS`), the model contract and checkpoints."""

from typing import Any

from torch import nn

from harness.registry import MODELS, import_submodules

from .base import Classifier, Normalize
from .checkpoint import CheckpointMeta, build_model, load_checkpoint, save_checkpoint

import_submodules(__name__)


def create_model(architecture: str, dataset: Any = None, **arch_args: Any) -> nn.Module:
    """Build an architecture sized for ``dataset`` (channels, input size, classes) unless given."""
    if dataset is not None:
        c, h, _ = dataset.shape
        params = MODELS.get(architecture).parameters()
        for key, value in (("num_classes", dataset.num_classes), ("in_channels", c), ("input_size", h)):
            if key in params:
                arch_args.setdefault(key, value)
    return MODELS.create(architecture, **arch_args)


__all__ = [
    "CheckpointMeta",
    "Classifier",
    "Normalize",
    "build_model",
    "create_model",
    "load_checkpoint",
    "save_checkpoint",
]
