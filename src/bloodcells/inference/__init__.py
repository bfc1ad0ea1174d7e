"""Trained models applied to new images: the Predictor, its engines, the CSV, the count, export."""

from bloodcells.inference.export import export_run
from bloodcells.inference.predictor import Predictions, Predictor

__all__ = ["Predictions", "Predictor", "export_run"]
