"""A model on a labelled set: predictions, metrics, the unlike-training policy."""

from bloodcells.evaluation.core import Evaluation, evaluate
from bloodcells.evaluation.metrics import classification_metrics

__all__ = ["Evaluation", "classification_metrics", "evaluate"]
