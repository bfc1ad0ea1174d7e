"""The lab's Grad-CAM figure: images titled true/predicted, then one row of overlays per layer."""

from __future__ import annotations

from matplotlib.figure import Figure
from torch import nn

from bloodcells.analysis.gradcam import METHODS, CamGrid, gradcam_grid
from bloodcells.data import Dataset
from bloodcells.viz.grids import WRONG, image_axes, label_row, show_image


def cam_figure(grid: CamGrid) -> Figure:
    """The lab's grid: images titled true/predicted, then a row of CAM overlays per layer."""
    n = len(grid.indices)
    fig, axes = image_axes(1 + len(grid.layers), n, extra=0.4)
    for col in range(n):
        true, pred = grid.labels[col], grid.predictions[col]
        ax = axes[0][col]
        show_image(ax, grid.images[col])
        color = WRONG if true != pred else "black"
        title = f"true: {grid.classes[true]}\npred: {grid.classes[pred]}"
        ax.set_title(title, fontsize=8, color=color)
        for row, layer in enumerate(grid.layers, start=1):
            ax = axes[row][col]
            show_image(ax, grid.images[col])
            cam = grid.cams[layer.name][col]
            ax.imshow(cam, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if not cam.any():  # say so, or a uniform blue cell looks like a drawing error
                ax.text(
                    0.5,
                    0.04,
                    "all zero",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=7,
                    color="w",
                )
    label_row(axes[0][0], "image")
    for row, layer in enumerate(grid.layers, start=1):
        h, w = layer.size
        text = f"{METHODS[grid.method].title}\nlayer {layer.name}\n{layer.kind}, {h}×{w} map"
        label_row(axes[row][0], text)
    fig.suptitle(
        f"{METHODS[grid.method].title} for the {grid.target} class (red: wrong prediction)",
        fontsize=10,
    )
    return fig


def gradcam_figure(model: nn.Module, dataset: Dataset, **options) -> Figure:
    """`cam_figure` of `gradcam_grid` (same options): what the model looks at, layer by layer."""
    return cam_figure(gradcam_grid(model, dataset, **options))
