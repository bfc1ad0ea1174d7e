"""Questions asked of a trained run: TTA, BatchNorm adaptation, robustness, Grad-CAM."""

from bloodcells.analysis.adapt import adapt_batchnorm, evaluate_adapted, tta_probabilities
from bloodcells.analysis.evaluate import evaluate_run
from bloodcells.analysis.gradcam import compute_cams, gradcam_grid, select_layers, spatial_layers
from bloodcells.analysis.robustness import RobustnessResult, robustness

__all__ = [
    "RobustnessResult",
    "adapt_batchnorm",
    "compute_cams",
    "evaluate_adapted",
    "evaluate_run",
    "gradcam_grid",
    "robustness",
    "select_layers",
    "spatial_layers",
    "tta_probabilities",
]
