"""Training: the shared trainer, the objective interface and the registered objectives."""

from . import objectives  # noqa: F401  (registers the built-in objectives)
from .objective import Objective, StepState, TrainContext
from .trainer import TrainConfig, Trainer, TrainResult, train

__all__ = ["Objective", "StepState", "TrainConfig", "TrainContext", "TrainResult", "Trainer", "train"]
