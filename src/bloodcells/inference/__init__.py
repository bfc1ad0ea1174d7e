"""Trained models applied to new images: the Predictor, its engines, the CSV, the count, export."""

from bloodcells.inference.engines import Engine
from bloodcells.inference.export import export_run
from bloodcells.inference.predictor import Predictions, Predictor

__all__ = ["Engine", "Predictions", "Predictor", "export_run"]
