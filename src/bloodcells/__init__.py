"""bloodcells: classify white blood cells from small microscopy patches; the CNN lab as software."""

__version__ = "0.1.0"

from bloodcells.data import Dataset, Splits, Transform, load_dataset
from bloodcells.errors import BloodcellsError, DataError, RunError
from bloodcells.metrics import classification_metrics
from bloodcells.models import MODELS, build_model, count_parameters
from bloodcells.runs import Run, load_run, resume_training, start_training
from bloodcells.train import Callback, History, TrainConfig, evaluate, fit

__all__ = [
    "MODELS",
    "BloodcellsError",
    "Callback",
    "DataError",
    "Dataset",
    "History",
    "Run",
    "RunError",
    "Splits",
    "TrainConfig",
    "Transform",
    "build_model",
    "classification_metrics",
    "count_parameters",
    "evaluate",
    "fit",
    "load_dataset",
    "load_run",
    "resume_training",
    "start_training",
]
