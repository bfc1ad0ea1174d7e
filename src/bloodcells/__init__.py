"""bloodcells: classify white blood cells from small microscopy patches; the CNN lab as software.

The public names below are imported on first use (PEP 562), so that `import bloodcells.errors`
and `bloodcells --help` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bloodcells._version import __version__

if TYPE_CHECKING:
    from bloodcells.data import Dataset, Splits, Transform, load_dataset
    from bloodcells.errors import BloodcellsError, DataError, RunError
    from bloodcells.evaluation import Evaluation, classification_metrics, evaluate
    from bloodcells.inference import Predictor, export_run
    from bloodcells.models.registry import MODELS, build_model, count_parameters
    from bloodcells.runs import Run, load_run, resume_training, start_training
    from bloodcells.training import Callback, History, TrainConfig, fit, make_model
    from bloodcells.utils.devices import select_device

_EXPORTS = {
    "bloodcells.data": ("Dataset", "Splits", "Transform", "load_dataset"),
    "bloodcells.errors": ("BloodcellsError", "DataError", "RunError"),
    "bloodcells.evaluation": ("Evaluation", "classification_metrics", "evaluate"),
    "bloodcells.inference": ("Predictor", "export_run"),
    "bloodcells.models.registry": ("MODELS", "build_model", "count_parameters"),
    "bloodcells.runs": ("Run", "load_run", "resume_training", "start_training"),
    "bloodcells.training": ("Callback", "History", "TrainConfig", "fit", "make_model"),
    "bloodcells.utils.devices": ("select_device",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "MODELS",
    "BloodcellsError",
    "Callback",
    "DataError",
    "Dataset",
    "Evaluation",
    "History",
    "Predictor",
    "Run",
    "RunError",
    "Splits",
    "TrainConfig",
    "Transform",
    "__version__",
    "build_model",
    "classification_metrics",
    "count_parameters",
    "evaluate",
    "export_run",
    "fit",
    "load_dataset",
    "load_run",
    "make_model",
    "resume_training",
    "select_device",
    "start_training",
]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'bloodcells' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
