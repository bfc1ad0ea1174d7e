"""Image grids with matplotlib: dataset samples, predictions on a random batch, top losses.

Figures are built with `matplotlib.figure.Figure`, never pyplot: no GUI backend, no global
figure list to leak, safe in threads and on headless machines. A notebook shows a returned
Figure as is; `save_figure` and `figure_png` turn one into a file or PNG bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from bloodcells.data import Dataset
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import Evaluation, evaluate
from bloodcells.utils.files import write_atomic
from bloodcells.utils.validation import check_count

WRONG = "tab:red"
DPI = 150


def display_image(image: torch.Tensor) -> np.ndarray:
    """A C×H×W image min-max scaled to [0, 1], as H×W (gray) or H×W×3 (RGB) for imshow."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-6)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def show_image(ax: Axes, image: torch.Tensor) -> None:
    """Draw one standardized image (gray or RGB) on `ax`, with no ticks and no frame."""
    ax.set_axis_on()
    ax.imshow(display_image(image), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    frame(ax, None)


def frame(ax: Axes, color: str | None) -> None:
    """A coloured frame around `ax`, or none when `color` is None."""
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_edgecolor(color)
            spine.set_linewidth(3)


def image_axes(rows: int, cols: int, cell: float = 1.6, extra: float = 0.0) -> tuple[Figure, list]:
    """A rows×cols grid of image axes (a list of rows), `cell` inches each, `extra` for titles."""
    fig = Figure(figsize=(cols * cell + 1.4, rows * cell + extra + 0.6), layout="compressed")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes.tolist()


def sample_grid(dataset: Dataset, per_class: int = 8, seed: int = 0) -> Figure:
    """Random images of each class, a row per class: check that the loader delivers our data."""
    counts = dataset.class_counts()
    check_count(per_class, "images per class", limit=32)
    per_class = min(per_class, max(counts.values()))
    fig, axes = image_axes(len(dataset.classes), per_class, cell=1.1)
    rng = np.random.default_rng(seed)
    for k, (row, cls) in enumerate(zip(axes, dataset.classes, strict=True)):
        members = torch.nonzero(dataset.labels.cpu() == k).flatten().numpy()
        picked = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for ax, index in zip(row, picked, strict=False):
            show_image(ax, _image(dataset, index))
        label_row(row[0], f"{cls}\n({counts[cls]} images)")
    size = tuple(dataset.images.shape[-2:])
    fig.suptitle(
        f"{per_class} random images per class, as the model sees them "
        f"({size[0]}×{size[1]}, {'RGB' if dataset.images.shape[1] == 3 else 'gray'})",
        fontsize=10,
    )
    return fig


def label_row(ax: Axes, text: str) -> None:
    """A row label left of `ax` (an image cell, or an empty one)."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    frame(ax, None)
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=9, labelpad=8)


def prediction_grid(
    model: nn.Module, dataset: Dataset, n: int = 16, seed: int = 0, device: str = "cpu"
) -> Figure:
    """A random batch with true class, prediction and its probability; mistakes framed in red."""
    picked = dataset.subset(dataset.random_indices(check_count(n), seed))
    result = evaluate(model, picked, device)
    cols = min(len(picked), 8)  # a row of the lab's batch size
    rows = math.ceil(len(picked) / cols)
    fig, axes = image_axes(rows, cols, cell=1.5, extra=0.45 * rows)
    flat = [ax for row in axes for ax in row]
    for i, ax in enumerate(flat[: len(picked)]):
        true, pred = int(result.labels[i]), int(result.predictions[i])
        prob = float(result.probabilities[i, pred])
        title = f"true: {picked.classes[true]}\npred: {picked.classes[pred]} ({prob:.0%})"
        titled_image(ax, picked, i, title, wrong=true != pred)
    correct = int((result.predictions == result.labels).sum())
    fig.suptitle(f"predictions on a random batch: {correct} of {len(picked)} right", fontsize=10)
    return fig


def titled_image(ax: Axes, dataset: Dataset, index: int, title: str, wrong: bool) -> None:
    """Image `index` of `dataset` on `ax` with `title`; red title and frame when `wrong`."""
    show_image(ax, _image(dataset, index))
    ax.set_title(title, fontsize=8, color=WRONG if wrong else "black")
    frame(ax, WRONG if wrong else None)


def top_losses_figure(evaluation: Evaluation, dataset: Dataset, n: int = 9) -> Figure:
    """The `n` highest-loss images, titled true / predicted (p) / loss; mistakes in red.

    `evaluation` is of a model on `dataset` (the images are drawn from it).
    """
    rows = evaluation.top_losses(check_count(n))
    if not rows:
        raise BloodcellsError("no images to show: the dataset is empty")
    cols = min(len(rows), max(3, math.ceil(math.sqrt(len(rows)))))
    lines = math.ceil(len(rows) / cols)
    fig, axes = image_axes(lines, cols, cell=1.8, extra=0.8 * lines)
    flat = [ax for row in axes for ax in row]
    for ax, row in zip(flat, rows, strict=False):
        title = (
            f"true: {row['true']}\npred: {row['predicted']} ({row['probability']:.0%})\n"
            f"loss {row['loss']:.2f}"
        )
        titled_image(ax, dataset, row["index"], title, wrong=row["true"] != row["predicted"])
        ax.set_xlabel(Path(row["path"]).name, fontsize=6)
    fig.suptitle("top losses: the most confidently wrong images first", fontsize=10)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` to `path` as one unit (format from the suffix, e.g. .png); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower() or "png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return path


def figure_png(fig: Figure) -> bytes:
    """`fig` as PNG bytes (for embedding in the HTML report)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _image(dataset: Dataset, index: int) -> torch.Tensor:
    return dataset.standardized(slice(int(index), int(index) + 1))[0]
