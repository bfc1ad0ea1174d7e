"""A comparison as people read it: table cells, sentences, and a dot-and-interval figure.

Everything here reads the JSON-able result of bloodcells.experiments.compare.compare_runs.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from bloodcells.stats.seeds import MIN_SEEDS, TOO_FEW

COLUMNS = ("variant", "n", "mean", "sd", "95% CI", "Δ vs {base} (paired)", "95% CI of Δ", "p")


def table_rows(result: dict) -> list[dict[str, str]]:
    """The comparison as text cells, one dict per group, in COLUMNS order plus 'verdict'."""
    base = result["baseline"] or "base"
    rows = []
    for g in result["groups"]:
        paired = g["paired"]
        is_base = g["name"] == result["baseline"]
        row = {
            "variant": g["name"],
            "n": str(g["n"]),
            "mean": f"{g['mean']:.3f}",
            "sd": "n/a" if g["sd"] is None else f"{g['sd']:.3f}",
            "95% CI": _interval(g["ci"], g["n"]),
            f"Δ vs {base} (paired)": "baseline" if is_base else _delta(paired),
            "95% CI of Δ": "" if is_base else _delta_interval(paired),
            "p": "" if is_base else _p(paired),
            "verdict": "" if is_base else (g["verdict"] or "n/a"),
        }
        rows.append(row)
    return rows


def _interval(ci: list | None, n: int, signed: bool = False) -> str:
    if not ci:
        return f"{TOO_FEW} (n={n}; {MIN_SEEDS} or more give an interval)"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _delta_interval(paired: dict | None) -> str:
    if not paired or paired["n"] == 0:
        return "n/a (no common seeds)"
    return _interval(paired["ci"], paired["n"], signed=True)


def _delta(paired: dict | None) -> str:
    if not paired or paired["n"] == 0:
        return "n/a (no common seeds)"
    return f"{paired['mean']:+.3f} (n={paired['n']})"


def _p(paired: dict | None) -> str:
    if not paired or paired["p"] is None:
        return "n/a"
    return "<0.001" if paired["p"] < 0.001 else f"{paired['p']:.3f}"


def reading(result: dict) -> list[str]:
    """The answer in sentences: which variants differ from the baseline, and how surely."""
    if result["baseline"] is None:
        return ["no baseline: nothing to compare against (name one with --baseline)"]
    base = result["baseline"]
    lines = []
    better = [g for g in result["groups"] if g["verdict"] == "better"]
    worse = [g for g in result["groups"] if g["verdict"] == "worse"]
    for label, groups in (("better than", better), ("worse than", worse)):
        if groups:
            lines.append(
                f"{label} {base} (intervals do not overlap): "
                + "; ".join(f"{g['name']} {_delta(g['paired'])}" for g in groups)
            )
    sharp = [
        g
        for g in result["groups"]
        if g["verdict"] == "no clear difference"
        and g["paired"]
        and g["paired"]["ci"]
        and (g["paired"]["ci"][0] > 0 or g["paired"]["ci"][1] < 0)
    ]
    if sharp:
        lines.append(
            "intervals overlap, but the paired Δ interval excludes 0 (a smaller, seed-paired "
            "difference): " + "; ".join(f"{g['name']} {_delta(g['paired'])}" for g in sharp)
        )
    unclear = [
        g["name"]
        for g in result["groups"]
        if g["verdict"] == "no clear difference" and g not in sharp
    ]
    if unclear:
        lines.append(f"no difference shown from {base}: {', '.join(unclear)}")
    if any(g["verdict"] == TOO_FEW for g in result["groups"]):
        short = ", ".join(f"{g['name']} n={g['n']}" for g in result["groups"] if g["n"] < MIN_SEEDS)
        lines.append(
            f"{TOO_FEW} for a verdict against {base} ({MIN_SEEDS} or more per variant give an "
            f"interval): {short}"
        )
    return lines


def comparison_figure(result: dict) -> go.Figure:
    """Dot-and-interval plot: per variant each seed a faint dot, the mean and its 95% CI;
    the baseline's interval is a shaded band across all rows."""
    groups = result["groups"]
    metric = result["metric"].replace("_", " ")
    names = [_label(g["name"]) for g in groups]
    traces: list[dict] = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "one seed",
            "x": [v for g in groups for v in g["values"]],
            "y": [_label(g["name"]) for g in groups for _ in g["values"]],
            "text": [f"seed {s}" for g in groups for s in g["seeds"]],
            "hovertemplate": "%{y}, %{text}: %{x:.4f}<extra></extra>",
            "marker": {"size": 8, "color": "rgba(55, 90, 160, 0.3)"},
        },
        {
            "type": "scatter",
            "mode": "markers",
            "name": f"mean, {int(100 * result['confidence'])}% interval",
            "x": [g["mean"] for g in groups],
            "y": names,
            "error_x": {
                "type": "data",
                "symmetric": False,
                "array": [g["ci"][1] - g["mean"] if g["ci"] else 0 for g in groups],
                "arrayminus": [g["mean"] - g["ci"][0] if g["ci"] else 0 for g in groups],
                "thickness": 2,
                "width": 6,
                "color": "rgb(20, 40, 90)",
            },
            "customdata": [_interval(g["ci"], g["n"]) for g in groups],
            "hovertemplate": "%{y}: mean %{x:.4f}, 95% CI %{customdata}<extra></extra>",
            "marker": {"size": 11, "color": "rgb(20, 40, 90)", "symbol": "diamond"},
        },
    ]
    shapes = []
    base = next((g for g in groups if g["name"] == result["baseline"]), None)
    if base is not None and base["ci"]:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": base["ci"][0],
                "x1": base["ci"][1],
                "y0": 0,
                "y1": 1,
                "fillcolor": "rgba(120, 120, 120, 0.15)",
                "line": {"width": 0},
                "layer": "below",
            }
        )
    note = "each seed a faint dot; mean and 95% interval over seeds"
    if base is not None and base["ci"]:
        note += f"; band: {base['name']}'s interval"
    marks = {"better": "rgb(30, 130, 60)", "worse": "rgb(190, 40, 40)"}
    annotations = [
        {
            "xref": "paper",
            "x": 1.01,
            "xanchor": "left",
            "yref": "y",
            "y": name,
            "text": g["verdict"],
            "showarrow": False,
            "font": {"color": marks[g["verdict"]], "size": 12},
        }
        for g, name in zip(groups, names, strict=True)
        if g["verdict"] in marks
    ]
    layout = {
        "template": "none",
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "title": {
            "text": f"{_label(f'dev {metric} by variant')}<br><sup>{_label(note)}</sup>",
            "x": 0,
            "xref": "paper",
        },
        "xaxis": {"title": f"dev {metric}", "zeroline": False, "gridcolor": "#eee"},
        "yaxis": {
            "type": "category",
            "categoryorder": "array",
            "categoryarray": names[::-1],  # the baseline on top
            "automargin": True,
        },
        "shapes": shapes,
        "annotations": annotations,
        "height": 190 + 42 * len(groups),
        "margin": {"l": 20, "r": 70, "t": 80, "b": 90},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.18, "yanchor": "top"},
        "showlegend": True,
    }
    return go.Figure(traces, layout)


def _label(text: str) -> str:
    """`text` as plotly shows it literally (it reads <b>, <br> in labels as markup)."""
    return html.escape(str(text), quote=False)
