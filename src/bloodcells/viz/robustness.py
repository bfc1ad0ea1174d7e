"""The robustness heatmaps: one per way of predicting, shifts down, severities across."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bloodcells.analysis.robustness import RobustnessResult
from bloodcells.errors import BloodcellsError
from bloodcells.ops.shifts import SEVERITIES, SHIFTS


def robustness_figure(result: RobustnessResult, metric: str = "accuracy") -> go.Figure:
    """A heatmap per mode: shifts down, severities across, `metric` (accuracy or
    balanced_accuracy) as colour and text; chance at the bottom of the scale."""
    if metric not in ("accuracy", "balanced_accuracy"):
        raise BloodcellsError(f"metric must be accuracy or balanced_accuracy, not {metric!r}")
    shifts = result.shifts
    titles = [
        f"{mode}: mean {getattr(result.mean(mode), metric):.1%}, "
        f"clean {getattr(result.clean[mode], metric):.1%}"
        for mode in result.modes
    ]
    fig = make_subplots(
        rows=1,
        cols=len(result.modes),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=titles,
    )
    chance = 1 / max(len(result.classes), 2)
    for col, mode in enumerate(result.modes, start=1):
        z = [[getattr(s, metric) for s in result.scores[mode][name]] for name in shifts]
        levels = [[SHIFTS[name].level_label(s) for s in SEVERITIES] for name in shifts]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[f"severity {s}" for s in SEVERITIES],
                y=shifts,
                text=[[f"{v:.0%}" for v in row] for row in z],
                texttemplate="%{text}",
                customdata=levels,
                hovertemplate=(
                    "%{y} (%{customdata}): " + metric.replace("_", " ") + " %{z:.1%}<extra></extra>"
                ),
                coloraxis="coloraxis",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font_size=13)  # the subplot titles
    fig.update_layout(
        template="none",
        title={
            "text": html.escape(
                f"{metric.replace('_', ' ')} under shift: {result.model} ({result.n} dev images)",
                quote=False,
            ),
            "x": 0,
            "xref": "paper",
        },
        coloraxis={
            "colorscale": "RdYlGn",
            "cmin": chance,
            "cmax": 1,
            "colorbar": {"tickformat": ".0%", "thickness": 12},
        },
        height=120 + 32 * len(shifts),
        margin={"l": 90, "r": 20, "t": 90, "b": 50},
        paper_bgcolor="white",
        plot_bgcolor="white",
    )
    return fig
