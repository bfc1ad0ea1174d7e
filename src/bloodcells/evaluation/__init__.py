"""A model on a labelled set: predictions, metrics, the unlike-training policy."""

from bloodcells.evaluation.core import Evaluation, evaluate
from bloodcells.evaluation.metrics import classification_metrics
from bloodcells.evaluation.ood import UnlikePolicy

__all__ = ["Evaluation", "UnlikePolicy", "classification_metrics", "evaluate"]
