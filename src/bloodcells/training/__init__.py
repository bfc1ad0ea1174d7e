"""The training loop and what configures it; the stacked fit of many small models."""

from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import fit, make_model
from bloodcells.training.lr_find import lr_range_test
from bloodcells.training.records import Callback, EpochResult, FitState, FitStatus, History

__all__ = [
    "Callback",
    "EpochResult",
    "FitState",
    "FitStatus",
    "History",
    "TrainConfig",
    "fit",
    "lr_range_test",
    "make_model",
]
