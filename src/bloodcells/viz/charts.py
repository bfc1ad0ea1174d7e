"""Plotly figures of training: loss curves, the dev confusion matrix, accuracy per epoch.

Shared by the notebook's live plot and the HTML report. Built from plain plotly dicts:
building a go.Figure from them in one go is several times faster than filling one in.
An epoch is anything with .epoch, .train_loss, .dev_loss and .dev_accuracy (an EpochResult).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from bloodcells.evaluation.metrics import row_percentages

if TYPE_CHECKING:
    from bloodcells.training.records import EpochResult

HEIGHT = 380  # pixels: a loss chart or a confusion matrix beside another
LOSS_TRACES = ("training loss", "dev loss")
FIGURE_STYLE = {
    "template": "none",  # plotly's named templates cost about 0.1 s per figure built
    "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
}
LEGEND_ON_TOP = {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}
MARGIN = {"l": 60, "r": 20, "t": 60, "b": 50}
PLOTLY_CONFIG = {  # how a page draws the figures: plotly's mode bar, trimmed
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "pan2d", "zoomIn2d", "zoomOut2d"],
}


def plotly_label(text: str) -> str:
    """`text` as plotly shows it literally (plotly reads <b>, <br>, … in labels as markup)."""
    return html.escape(str(text), quote=False)


def _title(text: str) -> dict:
    return {"text": plotly_label(text), "x": 0, "xref": "paper"}


def loss_traces(epochs: Sequence[EpochResult]) -> list[dict]:
    """Training and dev loss per epoch, as two plotly scatter traces."""
    x = [e.epoch for e in epochs]
    losses = ([e.train_loss for e in epochs], [e.dev_loss for e in epochs])
    return [
        {"type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": y}
        for name, y in zip(LOSS_TRACES, losses, strict=True)
    ]


def loss_layout(title: str, epochs: Sequence[EpochResult], planned: int | None = None) -> dict:
    """The loss chart's layout; with `planned`, the x axis spans every planned epoch."""
    last = max([planned or 0, *(e.epoch for e in epochs), 1])
    return {
        **FIGURE_STYLE,
        "title": _title(title),
        "xaxis": {"title": "epoch", "range": [0.5, last + 0.5], "dtick": 1 if last <= 20 else None},
        "yaxis": {"title": "loss (mean per image)", "rangemode": "tozero"},
        "legend": LEGEND_ON_TOP,
        "margin": MARGIN,
        "hovermode": "x unified",
    }


def loss_figure(
    epochs: Sequence[EpochResult] = (), planned: int | None = None, title: str = "Loss", **layout
) -> go.Figure:
    """Training and dev loss per epoch; `layout` overrides (height=...) go in unchecked."""
    layout = {**loss_layout(title, epochs, planned), "height": HEIGHT, **layout}
    return go.Figure(loss_traces(epochs), layout)


def confusion_trace(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> dict:
    """Confusion counts (rows true, columns predicted) as a heatmap of row percentages."""
    counts = np.asarray(matrix)
    share = row_percentages(counts)
    labels = [plotly_label(c) for c in classes]
    return {
        "type": "heatmap",
        "z": share,
        "x": labels,
        "y": labels,
        "text": [[f"{100 * v:.0f}%" for v in row] for row in share],
        "customdata": counts,
        "texttemplate": "%{text}",
        "colorscale": "Blues",
        "zmin": 0,
        "zmax": 1,
        "colorbar": {"tickformat": ".0%", "thickness": 12},
        "hovertemplate": "true %{y}, predicted %{x}: %{text} (%{customdata} images)<extra></extra>",
    }


def confusion_layout(title: str) -> dict:
    """A square matrix, true classes top to bottom, predicted classes left to right."""
    return {
        **FIGURE_STYLE,
        "title": _title(title),
        "xaxis": {"title": "predicted", "type": "category", "constrain": "domain"},
        "yaxis": {
            "title": "true",
            "type": "category",
            "autorange": "reversed",
            "scaleanchor": "x",
            "constrain": "domain",
        },
        "margin": {"l": 90, "r": 20, "t": 60, "b": 80},
    }


def confusion_figure(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    title: str = "Confusion matrix (dev)",
    **layout,
) -> go.Figure:
    """The dev confusion matrix as the lab shows it; `layout` overrides go in unchecked."""
    layout = {**confusion_layout(title), "height": HEIGHT, **layout}
    return go.Figure([confusion_trace(matrix, classes)], layout)


def epoch_caption(epoch: EpochResult) -> str:
    """'epoch 3, dev accuracy 87.3%': what a confusion matrix title says it shows."""
    return f"epoch {epoch.epoch}, dev accuracy {epoch.dev_accuracy:.1%}"


def accuracy_figure(
    histories: Mapping[str, Sequence[EpochResult]],
    chance: float | None = None,
    title: str = "dev accuracy per epoch",
    **layout,
) -> go.Figure:
    """Dev accuracy per epoch, a line per model (name: epochs); a dotted line at `chance`."""
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": plotly_label(name),
            "x": [e.epoch for e in epochs],
            "y": [e.dev_accuracy for e in epochs],
        }
        for name, epochs in histories.items()
    ]
    base = {
        **FIGURE_STYLE,
        "title": _title(title),
        "height": HEIGHT,
        "xaxis": {"title": "epoch", "dtick": 1},
        "yaxis": {"title": "dev accuracy", "range": [0, 1.02], "tickformat": ".0%"},
        "legend": LEGEND_ON_TOP,
        "margin": MARGIN,
        "hovermode": "x unified",
    }
    if chance is not None:
        base.update(chance_line(chance))
    return go.Figure(traces, {**base, **layout})


def chance_line(chance: float) -> dict:
    """Layout shapes and annotations for a dotted line at the accuracy of guessing."""
    return {
        "shapes": [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": chance,
                "y1": chance,
                "line": {"dash": "dot", "color": "#8c959f"},
            }
        ],
        "annotations": [
            {
                "xref": "paper",
                "x": 1,
                "y": chance,
                "text": "chance",
                "showarrow": False,
                "xanchor": "right",
                "yanchor": "bottom",
                "font": {"color": "#59636e"},
            }
        ],
    }
