"""bloodcells: classify white blood cells from small microscopy patches; the CNN lab as software.

The public names below are imported on first use (PEP 562), so that `import bloodcells.errors`
and `bloodcells --help` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bloodcells.version import __version__

if TYPE_CHECKING:
    from bloodcells.config import TrainConfig
    from bloodcells.data import Dataset, Splits, Transform, load_dataset
    from bloodcells.errors import BloodcellsError, DataError, RunError
    from bloodcells.evaluation import Evaluation, evaluate
    from bloodcells.export import export_run
    from bloodcells.metrics import classification_metrics
    from bloodcells.models import MODELS, build_model, count_parameters
    from bloodcells.predict import Predictor
    from bloodcells.runs import Run, load_run, resume_training, start_training
    from bloodcells.train import Callback, History, fit

_EXPORTS = {
    "bloodcells.data": ("Dataset", "Splits", "Transform", "load_dataset"),
    "bloodcells.errors": ("BloodcellsError", "DataError", "RunError"),
    "bloodcells.metrics": ("classification_metrics",),
    "bloodcells.models": ("MODELS", "build_model", "count_parameters"),
    "bloodcells.runs": ("Run", "load_run", "resume_training", "start_training"),
    "bloodcells.config": ("TrainConfig",),
    "bloodcells.evaluation": ("Evaluation", "evaluate"),
    "bloodcells.export": ("export_run",),
    "bloodcells.predict": ("Predictor",),
    "bloodcells.train": ("Callback", "History", "fit"),
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
    "resume_training",
    "start_training",
]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'bloodcells' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
