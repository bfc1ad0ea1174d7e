"""The training loop and what configures it; the stacked fit of many small models."""

from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import Callback, EpochResult, FitState, History, fit, make_model
from bloodcells.training.lr_find import lr_range_test

__all__ = [
    "Callback",
    "EpochResult",
    "FitState",
    "History",
    "TrainConfig",
    "fit",
    "lr_range_test",
    "make_model",
]
