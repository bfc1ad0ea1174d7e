"""The HTML report: one self-contained page, a view over run folders.

`render(runs, extras)` makes the page from what run folders hold and from the extras a lab
adds (dataset summary, image grids, notes, how it was made), which the lab keeps in its own
folder (lab.json, figures/): so `bloodcells report LAB` rebuilds the page the lab wrote, and any
run folders make the same kind of page. plotly.js is inlined once and every image is a PNG data
URL: the page opens offline. Markup: templates/report.html (Jinja2, autoescaped) and report.css.
What the page is made from (`load`, `Extras`) is in `report_sources`.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

import plotly
import plotly.graph_objects as go
import plotly.offline
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from bloodcells._version import versions
from bloodcells.analysis.robustness import RobustnessResult
from bloodcells.evaluation.metrics import most_confused, row_percentages
from bloodcells.report.sources import Extras, add_explanations, explained_run, load
from bloodcells.runs import Run, RunMetrics
from bloodcells.utils.files import write_atomic
from bloodcells.viz import charts
from bloodcells.viz.compare import COLUMNS, comparison_figure, reading, table_rows
from bloodcells.viz.robustness import robustness_figure

REFRESH_SECONDS = 5
PAGE = "report.html"
STOPPED = ("interrupted", "failed", "diverged")  # a fit that ends like this ends the lab
PILL = {"finished": "done", "training": "live", "queued": "queued", "not trained": "queued"}


def write_report(
    paths: Sequence[str | Path], out: Path, explain: bool = False, device: str | None = None
) -> tuple[list[Run], Extras]:
    """Write the page of `paths` (see `load`) to `out`; `explain` makes the missing figures.
    Returns the runs shown and the extras (Extras.left_out: the runs left out, and why)."""
    runs, extras = load(paths)
    if explain and runs:
        add_explanations(extras, explained_run(runs, extras.explained), device)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, render(runs, extras))
    return runs, extras


def render(runs: Sequence[Run], extras: Extras, live: bool = False) -> str:
    """The whole page as HTML; `live` adds the refresh tag: training goes on."""
    models = _models(runs, extras, live)
    classes = {tuple(r.classes) for r in runs}
    shared = list(classes.pop()) if len(classes) == 1 else []  # the classes, if all share them
    explained = explained_run(runs, extras.explained) if runs else None
    accuracy = charts.accuracy_figure(
        {m.name: m.history for m in models}, 1 / len(shared) if shared else None
    )
    return _template().render(
        extras=extras,
        live=live,
        refresh_seconds=REFRESH_SECONDS,
        plotlyjs=_plotly_js(),
        plotly_config=charts.PLOTLY_CONFIG,
        status=_status(models, live),
        run_line=" · ".join(_run_line(runs, extras)),
        models=models,
        baseline=runs[0].metrics if shared else None,
        notes=extras.notes + ([] if live else extras.skipped),
        left_out=[] if live else extras.left_out,  # while a lab trains: runs not begun yet
        accuracy=_plot(accuracy, "accuracy"),
        recall=_recall(models, shared),
        dataset=extras.dataset,
        trained_on=sorted({str(r.data_root) for r in runs if r.data_root}),
        images=extras.images,
        explained=explained,
        pairs=most_confused(explained.metrics.confusion_matrix or [], explained.classes)
        if explained
        else [],
        explain_command=shlex.join(["bloodcells", "report", *extras.sources, "--explain"]),
        sweep=_sweep_view(extras.comparison),
        robustness=_robustness_view(extras.robustness),
        commands=_commands(runs, extras),
        settings=_settings(runs, extras, models),
        version=versions()["bloodcells"],
    )


@dataclass
class Model:
    """A row of the comparison and a card: a run, or a model the lab has still to train."""

    name: str
    run: Run | None = None
    planned: int | None = None  # epochs
    status: str = "finished"  # or training, queued, not trained, interrupted, diverged, failed
    metrics: RunMetrics = field(default_factory=RunMetrics)
    history: list = field(default_factory=list)  # an EpochResult per epoch
    id: str = ""
    best: bool = False

    @classmethod
    def of(cls, name: str, run: Run) -> Model:
        status = run.metrics.status or "finished"
        status = "training" if status == "running" else status
        return cls(name, run, run.config.epochs, status, run.metrics, run.history.epochs)

    @property
    def kind(self) -> str:
        return PILL.get(self.status, "bad")

    @property
    def status_text(self) -> str:
        if self.status == "training" and self.planned:
            epoch = min(len(self.history) + 1, self.planned)
            return f"training, epoch {epoch} of {self.planned}"
        return self.status

    @property
    def epochs_text(self) -> str:
        done = len(self.history)
        training = self.status == "training" and self.planned
        return f"{done} of {self.planned}" if training else str(done)

    @property
    def seconds(self) -> float | None:
        total = sum(e.seconds for e in self.history) if self.history else None
        recorded = self.metrics.train_seconds
        return recorded if recorded is not None else total

    def loss_plot(self) -> dict | None:
        if not self.history:
            return None
        title = "training and dev loss"
        return _plot(charts.loss_figure(self.history, self.planned, title), f"loss-{self.id}")

    def confusion_plot(self) -> dict | None:
        matrix = self.metrics.confusion_matrix
        if matrix is None:
            return None
        epoch = self.metrics.epoch if self.metrics.epoch is not None else len(self.history)
        title = f"dev confusion matrix, epoch {epoch}"
        figure = charts.confusion_figure(matrix, self.run.classes, title)
        return _plot(figure, f"confusion-{self.id}")


def _models(runs: Sequence[Run], extras: Extras, live: bool) -> list[Model]:
    """The lab's models in its order, then any other runs. Named by their model, or by their
    folder when two runs share a model."""
    kinds = [r.config.model for r in runs]
    named = {(r.config.model if kinds.count(r.config.model) == 1 else r.name): r for r in runs}
    models, next_up = [], live
    for name, epochs in extras.planned.items():
        if name in named:
            models.append(Model.of(name, named.pop(name)))
            next_up = next_up and models[-1].status != "training"
        else:  # the lab trains in order: while live, the first one missing is training
            status = ("training" if next_up else "queued") if live else "not trained"
            models.append(Model(name, planned=epochs, status=status))
            next_up = False
    models += [Model.of(name, run) for name, run in named.items()]
    finished = [
        (m.metrics.accuracy, i)
        for i, m in enumerate(models)
        if m.status == "finished" and m.metrics.accuracy is not None
    ]
    for i, model in enumerate(models):
        model.id = f"model-{i + 1}"
        model.best = len(finished) > 1 and max(finished)[1] == i
    return models


def _robustness_view(saved: dict | None) -> dict | None:
    """The robustness section: the heatmap and, per way of predicting, clean and mean."""
    if saved is None:
        return None
    result = RobustnessResult.from_dict(saved)
    rows = [
        (mode, result.clean[mode].accuracy, result.mean(mode).accuracy) for mode in result.modes
    ]
    return {
        "figure": _plot(robustness_figure(result), "robustness-plot"),
        "rows": rows,
        "run": Path(result.run).name,
        "n": result.n,
    }


def _sweep_view(result: dict | None) -> dict | None:
    """The comparison section: the dot-and-interval plot, the table a student reads, the
    answer in sentences and how it was computed."""
    if result is None:
        return None
    base = result["baseline"] or "base"
    return {
        "figure": _plot(comparison_figure(result), "sweep-plot"),
        "columns": [c.format(base=base) for c in COLUMNS] + ["verdict"],
        "rows": [list(row.values()) for row in table_rows(result)],
        "reading": reading(result),
        "method": [result["interval"], result["test"], result["rule"]],
        "metric": result["metric"].replace("_", " "),
    }


def _plot(fig: go.Figure, div_id: str) -> dict:
    """A plotly figure as plain JSON values, for the template to write script-safe."""
    figure = json.loads(fig.to_json())
    return {"id": div_id, "data": figure["data"], "layout": figure["layout"]}


def _status(models: list[Model], live: bool) -> tuple[str, str]:
    """The pill at the top of the page: its text and kind."""
    training = [m for m in models if m.status == "training"]
    now = f"{training[0].name}: {training[0].status_text}" if training else "in progress"
    stopped = [m for m in models if m.status in STOPPED]
    if live:
        return f"● live — {now} — this page reloads every {REFRESH_SECONDS} s", "live"
    if stopped:
        return f"stopped: {stopped[0].name} {stopped[0].status}", "bad"
    return (now, "live") if training else ("finished", "done")  # another process trains one


def _run_line(runs: Sequence[Run], extras: Extras) -> list[str]:
    facts = [f"updated {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    facts += [f"{k} {v}" for k in ("seed", "device") if (v := _setting(runs, extras, k))]
    root = (extras.dataset or {}).get("root") or extras.meta.get("data")
    roots = [str(root)] if root else sorted({str(r.data_root) for r in runs if r.data_root})
    return [*facts, f"data {', '.join(roots)}"] if roots else facts


def _setting(runs: Sequence[Run], extras: Extras, key: str) -> str:
    """meta[key], else the value(s) the runs were trained with."""
    if key in extras.meta:
        return str(extras.meta[key])
    found = {str(r.config.seed if key == "seed" else getattr(r.info, key) or "") for r in runs}
    return ", ".join(sorted(found - {""}))


def _recall(models: list[Model], classes: list[str]) -> dict | None:
    """Dev recall of every class for every model, the best of each class marked."""
    found = {
        m.name: row_percentages(m.metrics.confusion_matrix).diagonal().tolist()
        for m in models
        if m.run and m.run.classes == classes and m.metrics.confusion_matrix is not None
    }
    if not found or not classes:
        return None
    rows = []
    for i, cls in enumerate(classes):
        best = max(recall[i] for recall in found.values())
        rows.append((cls, [(r[i], r[i] == best and len(found) > 1) for r in found.values()]))
    return {"models": list(found), "rows": rows}


def _commands(runs: Sequence[Run], extras: Extras) -> list[tuple[str, str]]:
    """The command that made the runs: the lab's, else each run's own."""
    if "command" in extras.meta:
        return [("", _shell(extras.meta["command"]))]
    return [(r.name if len(runs) > 1 else "", _shell(r.info.command)) for r in runs]


def _settings(runs: Sequence[Run], extras: Extras, models: list[Model]) -> list[tuple]:
    """(name, value, is it code) rows: settings, versions and run folders."""
    meta = {k: v for k, v in extras.meta.items() if k not in ("command", "versions")}
    rows = [(k.replace("_", " "), str(v), False) for k, v in meta.items()]
    rows += [(k, _setting(runs, extras, k), False) for k in ("seed", "device") if k not in meta]
    rows += [(f"{r.name}: cell crops", _crops(r.info.crops), False) for r in runs if r.info.crops]
    found = extras.meta.get("versions") or (runs[0].info.versions if runs else None)
    rows += [(k, str(v), False) for k, v in (found or versions()).items()]
    rows.append(("plotly", plotly.__version__, False))
    return rows + [(m.name, str(m.run.path), True) for m in models if m.run]


def _crops(record: dict) -> str:
    """How a run's training crops were cut from whole fields, which predict --find-cells and
    evaluate repeat on new fields."""
    policy, scale = record.get("crop_policy") or {}, record.get("scale") or {}
    return (
        f"trained on cells cut from fields by data crop-cells: {policy.get('size')} px crops, "
        f"the median cell filling {policy.get('cell_fraction')} of the side, "
        f"{policy.get('padding')} padding, scale {scale.get('how', 'unknown')}"
    )


def _shell(command: object) -> str:
    return command if isinstance(command, str) else shlex.join(map(str, command or []))


def _duration(seconds: float | None) -> str:
    """'12.3 s', '2 min 05 s', '1 h 02 min'."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@cache
def _template():
    env = Environment(
        loader=PackageLoader("bloodcells.report", "templates"),
        autoescape=select_autoescape(("html", "htm")),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {
        "b64": lambda data: base64.b64encode(data).decode("ascii"),
        "percent": lambda value: "–" if value is None else f"{value:.1%}",
        "count": lambda value: "–" if value is None else f"{value:,}",
        "duration": _duration,
    }
    return env.get_template(PAGE)


@cache
def _plotly_js() -> Markup:
    """plotly.js itself (minified, about 4.8 MB), trusted, inlined once per page."""
    return Markup(plotly.offline.get_plotlyjs())
