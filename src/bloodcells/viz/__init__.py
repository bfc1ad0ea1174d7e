"""Figures: plotly charts, matplotlib grids, live training callbacks, the CAM grid."""

from bloodcells.viz.cams import cam_figure, gradcam_figure
from bloodcells.viz.grids import prediction_grid, sample_grid, save_figure, top_losses_figure
from bloodcells.viz.live import LivePlot, PlotFiles, TerminalProgress
from bloodcells.viz.robustness import robustness_figure

__all__ = [
    "LivePlot",
    "PlotFiles",
    "TerminalProgress",
    "cam_figure",
    "gradcam_figure",
    "prediction_grid",
    "robustness_figure",
    "sample_grid",
    "save_figure",
    "top_losses_figure",
]
