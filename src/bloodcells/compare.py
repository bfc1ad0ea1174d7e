"""Compare runs: group them by config minus the seed, and say with intervals what differs.

For each group (a variant): n seeds, the mean, the standard deviation and a 95% Student t
interval over the seeds, mean ± t(0.975, n−1)·sd/√n. For each variant against the baseline
(the group named `base`, or another): the paired difference over the seeds both ran, with
its own t interval, and the p-value of the paired t-test (scipy.stats.ttest_rel).

The verdict follows the issue's rule: "better" (or "worse") only when the variant's interval
does not overlap the baseline's. That rule is conservative: two 95% intervals can overlap
while the difference is clear. Runs with the same seed share their shuffle order (and, with
the same architecture, their initialisation), so the paired interval removes part of the
seed-to-seed spread and is the sharper test; it is shown next to the verdict.

The statistics are small pure functions (summarize, paired_difference, verdict);
compare_runs builds a JSON-able result from them, and comparison_figure draws it.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from scipy import stats

from bloodcells.errors import BloodcellsError, RunError
from bloodcells.files import write_atomic
from bloodcells.runs import Run, load_run
from bloodcells.sweep import COMPARISON_FILE, is_sweep, iter_runs, variant_name

METRICS = ("accuracy", "balanced_accuracy")
CONFIDENCE = 0.95
RESULT_FORMAT = 1
INTERVAL = "Student t over seeds: mean ± t(0.975, n−1) · sd / √n"
TEST = "paired t-test over the seeds both ran (scipy.stats.ttest_rel, two-sided)"
RULE = (
    "better/worse only when the variant's 95% interval does not overlap the baseline's; "
    "the paired Δ interval is the sharper test"
)
IGNORED = ("seed", "device")  # config fields that do not make another variant


@dataclass(frozen=True)
class Summary:
    """n values: their mean, standard deviation (n−1) and t interval (None for n < 2)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sd and the `confidence` Student t interval of `values` (one per seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal values, up to rounding (0.9-0.8 vs 0.8-0.7)
        sd = 0.0
    if sd == 0:
        return Summary(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return Summary(n, mean, sd, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    """Variant minus baseline over the seeds both ran: mean, sd, t interval and p."""

    seeds: tuple[int, ...]
    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    p: float | None  # paired t-test, two-sided; None when n < 2 or every difference is equal


def paired_difference(
    variant: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> Paired:
    """Paired differences (seed by seed) of `variant` against `baseline`."""
    seeds = tuple(sorted(set(variant) & set(baseline)))
    if not seeds:
        return Paired((), 0, None, None, None, None, None)
    a = [variant[s] for s in seeds]
    b = [baseline[s] for s in seeds]
    s = summarize([x - y for x, y in zip(a, b, strict=True)], confidence)
    p = None
    if len(seeds) >= 2 and s.sd:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(a, b).pvalue)
        p = p if math.isfinite(p) else None
    return Paired(seeds, len(seeds), s.mean, s.sd, s.low, s.high, p)


def verdict(variant: Summary, baseline: Summary) -> str:
    """'better' / 'worse' when the intervals do not overlap, else 'no clear difference';
    'n/a' when either group has fewer than 2 seeds (no interval)."""
    if None in (variant.low, variant.high, baseline.low, baseline.high):
        return "n/a"
    if variant.low > baseline.high:
        return "better"
    if variant.high < baseline.low:
        return "worse"
    return "no clear difference"


# --- runs -> groups -> result --------------------------------------------------------------


@dataclass
class Scored:
    """A finished run and its score."""

    run: Run
    seed: int
    value: float
    name: str  # the variant's name


def score_runs(
    paths: Iterable[str | Path], metric: str = "accuracy"
) -> tuple[list[Scored], list[dict]]:
    """The finished runs under `paths` with their `metric`; and those left out, and why."""
    if metric not in METRICS:
        raise BloodcellsError(f"unknown metric {metric!r}; use {' or '.join(METRICS)}")
    scored, left_out = [], []
    for path in iter_runs(paths):
        try:
            run = load_run(path)
        except RunError as exc:
            reason = "not trained yet" if not path.exists() else str(exc).split(": ", 1)[-1]
            left_out.append({"run": str(path), "reason": reason})
            continue
        status = run.metrics.get("status", "unknown")
        value = run.metrics.get(metric)
        if status != "finished":
            left_out.append({"run": str(run.path), "reason": status})
        elif not isinstance(value, int | float) or not math.isfinite(value):
            left_out.append({"run": str(run.path), "reason": f"no {metric} in metrics.json"})
        else:
            sweep = run.info.get("sweep") if isinstance(run.info.get("sweep"), dict) else {}
            name = sweep.get("variant") or variant_name(run.config)
            scored.append(Scored(run, run.config.seed, float(value), str(name)))
    return scored, left_out


def _group_key(run: Run) -> str:
    config = {k: v for k, v in run.config.to_dict().items() if k not in IGNORED}
    config["options"] = {k: v for k, v in sorted(config["options"].items()) if v}
    config["lr"] = run.config.learning_rate  # older runs saved None for the model's default
    return json.dumps(config, sort_keys=True)


def compare_runs(
    scored: Sequence[Scored],
    metric: str = "accuracy",
    baseline: str | None = None,
    left_out: Sequence[dict] = (),
    confidence: float = CONFIDENCE,
) -> dict:
    """The comparison of scored runs as plain JSON-able data (see the module docstring).

    Runs of different datasets or class sets are refused: their accuracies do not compare.
    """
    if not scored:
        raise BloodcellsError(
            "no finished runs to compare"
            + (f" ({len(left_out)} left out: not finished)" if left_out else "")
        )
    datasets: dict[tuple, int] = {}
    for s in scored:
        key = (s.run.data_root, tuple(s.run.classes))
        datasets[key] = datasets.get(key, 0) + 1
    if len(datasets) > 1:
        described = "; ".join(
            f"{root or 'unknown data'} with classes {', '.join(classes)} ({n} runs)"
            for (root, classes), n in datasets.items()
        )
        raise BloodcellsError(
            f"these runs used different datasets or classes: {described}; "
            "compare runs of one dataset at a time"
        )
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        groups.setdefault(_group_key(s.run), []).append(s)
    notes = []
    named = _names(groups)
    rows = []
    for key, members in groups.items():
        by_seed: dict[int, Scored] = {}
        for s in members:
            if s.seed in by_seed:
                notes.append(f"{s.run.path}: a second run of {named[key]} with seed {s.seed}")
                continue
            by_seed[s.seed] = s
        seeds = sorted(by_seed)
        values = [by_seed[seed].value for seed in seeds]
        summary = summarize(values, confidence)
        rows.append(
            {
                "name": named[key],
                "config": json.loads(key),
                "n": summary.n,
                "seeds": seeds,
                "values": values,
                "runs": [str(by_seed[seed].run.path) for seed in seeds],
                "mean": summary.mean,
                "sd": summary.sd,
                "ci": None if summary.low is None else [summary.low, summary.high],
                "paired": None,
                "verdict": None,
            }
        )
    base = _baseline(rows, baseline)
    if base is None:
        notes.append("no group named base: name the baseline with --baseline to compare")
    else:
        rows.sort(key=lambda r: r is not base)  # the baseline first, the rest as found
        base_summary = _summary_of(base)
        base_values = dict(zip(base["seeds"], base["values"], strict=True))
        for row in rows:
            if row is base:
                continue
            paired = paired_difference(
                dict(zip(row["seeds"], row["values"], strict=True)), base_values, confidence
            )
            row["paired"] = {
                "n": paired.n,
                "seeds": list(paired.seeds),
                "mean": paired.mean,
                "sd": paired.sd,
                "ci": None if paired.low is None else [paired.low, paired.high],
                "p": paired.p,
            }
            row["verdict"] = verdict(_summary_of(row), base_summary)
    root, classes = next(iter(datasets))
    return {
        "format": RESULT_FORMAT,
        "metric": metric,
        "confidence": confidence,
        "interval": INTERVAL,
        "test": TEST,
        "rule": RULE,
        "data": root,
        "classes": list(classes),
        "baseline": None if base is None else base["name"],
        "groups": rows,
        "left_out": list(left_out),
        "notes": notes,
    }


def _summary_of(row: dict) -> Summary:
    low, high = row["ci"] if row["ci"] else (None, None)
    return Summary(row["n"], row["mean"], row["sd"], low, high)


def _names(groups: Mapping[str, list[Scored]]) -> dict[str, str]:
    """One name per group: the variant's name, plus what else differs where names repeat."""
    names = {key: members[0].name for key, members in groups.items()}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    configs = {key: json.loads(key) for key in groups}
    for key, name in names.items():
        if counts[name] > 1:
            same = [configs[k] for k, n in names.items() if n == name]
            differ = sorted(f for f in configs[key] if len({json.dumps(c[f]) for c in same}) > 1)
            extra = ", ".join(f"{f}={configs[key][f]}" for f in differ if f != "options")
            names[key] = f"{name} ({extra})" if extra else name
    return names


def _baseline(rows: list[dict], name: str | None) -> dict | None:
    if name is None:
        return next((r for r in rows if r["name"] == "base"), None)
    for row in rows:
        if row["name"] == name:
            return row
    raise BloodcellsError(
        f"no group named {name!r} to use as baseline; groups: {', '.join(r['name'] for r in rows)}"
    )


def compare_paths(
    paths: Sequence[str | Path],
    metric: str = "accuracy",
    baseline: str | None = None,
    save: bool = True,
) -> dict:
    """Compare the runs under `paths`; a single sweep folder also gets comparison.json."""
    scored, left_out = score_runs(paths, metric)
    result = compare_runs(scored, metric, baseline, left_out)
    if save and len(paths) == 1 and is_sweep(paths[0]):
        save_comparison(Path(paths[0]), result)
    return result


def save_comparison(folder: Path, result: dict) -> Path:
    """Write `result` as the sweep folder's comparison.json (atomically)."""
    file = folder / COMPARISON_FILE
    write_atomic(file, json.dumps(result, indent=2))
    return file


def load_comparison(folder: str | Path) -> dict | None:
    """A sweep folder's comparison.json, or None when it has none (or an unreadable one)."""
    file = Path(folder) / COMPARISON_FILE
    try:
        result = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("format") == RESULT_FORMAT else None


# --- presenting -----------------------------------------------------------------------------

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
            "95% CI": _interval(g["ci"]),
            f"Δ vs {base} (paired)": "baseline" if is_base else _delta(paired),
            "95% CI of Δ": "" if is_base else _interval(paired and paired["ci"], signed=True),
            "p": "" if is_base else _p(paired),
            "verdict": "" if is_base else (g["verdict"] or "n/a"),
        }
        rows.append(row)
    return rows


def _interval(ci: list | None, signed: bool = False) -> str:
    if not ci:
        return "n/a (1 seed)"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


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
        if g["verdict"] in ("no clear difference", "n/a") and g not in sharp
    ]
    if unclear:
        lines.append(f"no difference shown from {base}: {', '.join(unclear)}")
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
            "customdata": [_interval(g["ci"]) for g in groups],
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
