"""The self-contained HTML lab report: one file that opens offline, rewritten while models train.

plotly's JavaScript is inlined once in the page head (never a CDN) and every image is a PNG data
URL, so report.html can be mailed, archived or opened with no network. The report hears about
training through the same fit() callbacks as the terminal and the notebook: after every epoch it
rewrites the page (atomically), and while training goes on the page carries a refresh tag, so a
browser shows the run as it goes, without Jupyter.

    report = LabReport(Path("runs/lab/report.html"), "CNN lab", synthetic=True)
    report.set_dataset(splits.summary(), sample_grid_png)
    fit(model, splits.train, splits.test, config, [report.model_callback("simple")])
    report.set_model_result("simple", run.metrics, parameters, seconds, epochs, str(run.path))
    report.finish()
"""

from __future__ import annotations

import base64
import html
import shlex
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.offline

from bloodcells.live import (
    FIGURE_STYLE,
    LEGEND_ON_TOP,
    confusion_figure,
    loss_figure,
    plotly_label,
)
from bloodcells.metrics import row_percentages
from bloodcells.models import count_parameters
from bloodcells.runs import metrics_from_confusion, versions, write_atomic
from bloodcells.train import Callback, EpochResult, FitState

REFRESH_SECONDS = 5
PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "pan2d", "zoomIn2d", "zoomOut2d"],
}
FIGURE_HEIGHT = 380
SYNTHETIC_BANNER = (
    "<strong>Synthetic demo data.</strong> These images are procedurally drawn cells from "
    "bloodcells' built-in demo set, not microscopy of real blood cells. The numbers below show "
    "that the pipeline works; they say nothing about how well these models classify real cells."
)
GRADCAM_LATER = "<strong>No Grad-CAM grid yet.</strong> It appears when training is done."
GRADCAM_MISSING = (
    "<strong>No Grad-CAM grid in this report.</strong> Grad-CAM was not run for this report; "
    "make one with <code>bloodcells gradcam RUN -o cam.png</code>."
)
MARKED = ' class="best"'
STOPPED = ("interrupted", "failed")  # a fit that ends like this ends the whole session


def escape(value: object) -> str:
    """Any value as text safe inside HTML elements and attributes."""
    return html.escape(str(value))


@dataclass
class ModelResult:
    """A model's final numbers, as set_model_result gives them."""

    metrics: dict
    parameters: int
    seconds: float
    epochs: int
    run_dir: str


@dataclass
class ModelEntry:
    """What the report knows about one model: its fit as it goes and, at the end, its result."""

    name: str
    status: str = "queued"
    planned_epochs: int | None = None
    classes: list[str] = field(default_factory=list)
    history: list[EpochResult] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # lr, batch size, seed, device, parameters
    result: ModelResult | None = None

    def start(self, state: FitState) -> None:
        """Take the model's settings from the fit that begins."""
        config = state.config
        self.planned_epochs = config.epochs
        self.classes = list(state.classes)
        self.settings = {
            "learning rate": f"{config.learning_rate:g}",
            "batch size": config.batch_size,
            "seed": config.seed,
            "device": str(state.device),
            "parameters": count_parameters(state.model),
        }
        self.record(state)

    def record(self, state: FitState) -> None:
        """Take the epochs so far and the fit's status."""
        self.history = list(state.history.epochs)
        self.status = "training" if state.status == "running" else state.status

    @property
    def confusion(self) -> list[list[int]] | None:
        if self.result and "confusion_matrix" in self.result.metrics:
            return self.result.metrics["confusion_matrix"]
        return self.history[-1].confusion if self.history else None

    @property
    def accuracy(self) -> float | None:
        if self.result:
            return self.result.metrics.get("accuracy")
        return self.history[-1].dev_accuracy if self.history else None

    @property
    def balanced_accuracy(self) -> float | None:
        if self.result:
            return self.result.metrics.get("balanced_accuracy")
        if not self.history or not self.classes:
            return None
        return metrics_from_confusion(self.history[-1].confusion, self.classes)["balanced_accuracy"]

    @property
    def parameters(self) -> int | None:
        return self.result.parameters if self.result else self.settings.get("parameters")

    @property
    def seconds(self) -> float | None:
        if self.result:
            return self.result.seconds
        return sum(e.seconds for e in self.history) if self.history else None

    @property
    def epochs_text(self) -> str:
        done = self.result.epochs if self.result else len(self.history)
        if self.status == "training" and self.planned_epochs:
            return f"{done} of {self.planned_epochs}"
        return str(done)

    @property
    def status_text(self) -> str:
        if self.status == "training" and self.planned_epochs:
            epoch = min(len(self.history) + 1, self.planned_epochs)
            return f"training, epoch {epoch} of {self.planned_epochs}"
        return self.status


class _ModelCallback(Callback):
    """Records one model's fit into a LabReport and rewrites the page as it goes."""

    def __init__(self, report: LabReport, entry: ModelEntry) -> None:
        self.report = report
        self.entry = entry

    def on_fit_start(self, state: FitState) -> None:
        self.entry.start(state)
        self.report.write(live=True)

    def on_epoch_end(self, state: FitState) -> None:
        self.entry.record(state)
        self.report.write(live=True)

    def on_fit_end(self, state: FitState) -> None:
        # A finished fit keeps the page live: the next model or finish() follows.
        self.entry.record(state)
        self.report.write(live=state.status not in STOPPED)


class LabReport:
    """The lab as one self-contained report.html, kept current while models train.

    Call finish() at the end (or use the report as a context manager): until then the page
    reloads itself every few seconds.
    """

    def __init__(
        self, path: Path, title: str, synthetic: bool = False, meta: dict | None = None
    ) -> None:
        self.path = Path(path)
        self.title = title
        self.synthetic = synthetic
        self.meta = {"command": shlex.join(sys.argv), **(meta or {})}
        self.notes: list[str] = _as_list(self.meta.pop("notes", []))
        self.models: dict[str, ModelEntry] = {}
        self.dataset: dict | None = None
        self.sample_grid: bytes | None = None
        self.predictions: tuple[bytes, str] | None = None
        self.gradcam: tuple[bytes, str] | None = None
        self.mistakes: tuple[bytes | None, list[tuple[str, str, int]], str] | None = None
        self.live = False
        self._plots: dict[str, tuple[tuple, str]] = {}  # model name -> (what it shows, HTML)

    def __enter__(self) -> LabReport:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:
            self.add_note(f"The lab stopped early: {kind.__name__}: {exc}")
        self.finish()

    def set_dataset(self, summary: dict, sample_grid_png: bytes | None = None) -> None:
        """The dataset table (from Splits.summary()) and an optional grid of sample images."""
        self.dataset = summary
        self.sample_grid = sample_grid_png

    def model_callback(self, name: str) -> Callback:
        """A fit() callback recording model `name` per epoch and rewriting the page."""
        return _ModelCallback(self, self._entry(name))

    def set_model_result(
        self,
        name: str,
        metrics: dict,
        parameters: int,
        seconds: float,
        epochs: int,
        run_dir: str,
        history: Sequence[EpochResult] | None = None,
    ) -> None:
        """A model's final numbers (metrics as in metrics.json); `history` if no callback saw it."""
        entry = self._entry(name)
        entry.result = ModelResult(metrics, parameters, seconds, epochs, str(run_dir))
        if history is not None:
            entry.history = list(history)
        if not entry.classes:
            entry.classes = list(metrics.get("classes", []))
        if entry.status in ("queued", "training"):
            entry.status = "finished"

    def set_predictions(self, png: bytes, caption: str = "") -> None:
        """A grid of dev images with true and predicted classes."""
        self.predictions = (png, caption)

    def set_gradcam(self, png: bytes, caption: str) -> None:
        """A Grad-CAM grid and what it shows (which model, which layer)."""
        self.gradcam = (png, caption)

    def set_mistakes(
        self, png: bytes | None, pairs: list[tuple[str, str, int]], caption: str = ""
    ) -> None:
        """The top losses as an image grid and the most-confused (true, predicted, count) pairs."""
        self.mistakes = (png, list(pairs), caption)

    def add_note(self, text: str) -> None:
        """A note shown next to the comparison, e.g. 'VGG16 trained on a CPU subset'."""
        self.notes.append(text)

    def write(self, live: bool) -> None:
        """Write the page atomically; `live` adds the refresh tag."""
        self.live = live
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, self.render())

    def finish(self) -> None:
        """The final page, without the refresh tag."""
        self.write(live=False)

    def render(self) -> str:
        """The whole page as HTML."""
        refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n' if self.live else ""
        sections = (
            self._comparison_section(),
            self._dataset_section(),
            self._models_section(),
            self._predictions_section(),
            self._gradcam_section(),
            self._mistakes_section(),
            self._reproduce_section(),
        )
        return PAGE.substitute(
            refresh=refresh,
            title=escape(("[synthetic] " if self.synthetic else "") + self.title),
            style=STYLE,
            plotlyjs=_plotly_js(),
            header=self._header(),
            nav=self._nav(),
            sections="\n".join(sections),
            footer=f"bloodcells {escape(versions()['bloodcells'])} · a self-contained page: "
            "it opens offline",
        )

    def _entry(self, name: str) -> ModelEntry:
        return self.models.setdefault(name, ModelEntry(name))

    def _classes(self) -> list[str]:
        if self.dataset:
            return list(self.dataset.get("classes", []))
        return next((e.classes for e in self.models.values() if e.classes), [])

    # -- page parts ------------------------------------------------------------------------

    def _header(self) -> str:
        banner = f'<div class="banner">{SYNTHETIC_BANNER}</div>' if self.synthetic else ""
        return (
            f'<header class="top"><div class="wrap"><h1>{escape(self.title)}</h1>'
            f'<p class="meta">{self._status_pill()} {self._run_line()}</p>{banner}</div></header>'
        )

    def _status_pill(self) -> str:
        if not self.live:
            stopped = [e for e in self.models.values() if e.status in STOPPED]
            if stopped:
                return _pill(f"stopped: {stopped[0].name} {stopped[0].status}", "bad")
            return _pill("finished", "done")
        training = [e for e in self.models.values() if e.status == "training"]
        what = f"{training[0].name}: {training[0].status_text}" if training else "in progress"
        return _pill(f"● live — {what} — this page reloads every {REFRESH_SECONDS} s", "live")

    def _run_line(self) -> str:
        stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        facts = [f"updated {stamp}"]
        facts += [f"{k} {self._setting(k)}" for k in ("seed", "device") if self._setting(k)]
        if self.dataset:
            facts.append(f"data {self.dataset.get('root', '')}")
        return escape(" · ".join(facts))

    def _setting(self, key: str) -> str:
        """meta[key], else the value(s) the models were trained with."""
        if key in self.meta:
            return str(self.meta[key])
        seen = {str(e.settings[key]) for e in self.models.values() if key in e.settings}
        return ", ".join(sorted(seen))

    def _nav(self) -> str:
        links = [("comparison", "Comparison"), ("dataset", "Dataset")]
        links += [(_model_id(i), name) for i, name in enumerate(self.models)]
        links += [
            ("predictions", "Predictions"),
            ("gradcam", "Grad-CAM"),
            ("mistakes", "Mistakes"),
            ("reproduce", "Reproduce"),
        ]
        items = "".join(f'<a href="#{anchor}">{escape(text)}</a>' for anchor, text in links)
        return f'<nav class="toc"><div class="wrap">{items}</div></nav>'

    def _comparison_section(self) -> str:
        if not self.models:
            body = _placeholder("No model trained yet.") + self._notes()
            return _section("comparison", "Comparison", body)
        best = _best(self.models.values())
        rows = [
            [
                f'<a href="#{_model_id(i)}">{escape(e.name)}</a>'
                + (" " + _pill("best", "done") if e.name == best else ""),
                _status(e),
                _accuracy_cell(e.accuracy),
                _percent(e.balanced_accuracy),
                f"{e.parameters:,}" if e.parameters is not None else "–",
                _duration(e.seconds),
                escape(e.epochs_text),
            ]
            for i, e in enumerate(self.models.values())
        ]
        head = ["model", "status", "dev accuracy", "balanced accuracy", "parameters"]
        head += ["training time", "epochs"]
        table = _table(head, rows, numeric={2, 3, 4, 5, 6}, marked={_index(self.models, best)})
        chart = _figure_html(self._accuracy_figure())
        body = f"{table}{self._baseline_line()}{self._notes()}"
        body += f'<div class="split"><div>{chart}</div><div>{self._recall_table()}</div></div>'
        return _section("comparison", "Comparison", f'<div class="card">{body}</div>')

    def _recall_table(self) -> str:
        """Dev recall of every class for every model, the best of each class in bold."""
        classes = self._classes()
        found = {
            e.name: np.diag(row_percentages(e.confusion))
            for e in self.models.values()
            if e.confusion is not None and len(e.confusion) == len(classes)
        }
        if not found:
            return ""
        rows = []
        for i, cls in enumerate(classes):
            best = max(recall[i] for recall in found.values())
            cells = [_percent(r[i], bold=r[i] == best and len(found) > 1) for r in found.values()]
            rows.append([escape(cls), *cells])
        table = _table(["class", *found], rows, numeric=set(range(1, len(found) + 1)))
        return f"<h3>Dev recall per class</h3>{table}"

    def _baseline_line(self) -> str:
        metrics = next((e.result.metrics for e in self.models.values() if e.result), {})
        parts = []
        if "chance" in metrics:
            parts.append(f"guessing uniformly scores {metrics['chance']:.1%}")
        if "majority_baseline" in metrics:
            parts.append(f"always answering the largest class {metrics['majority_baseline']:.1%}")
        return f'<p class="muted">For scale: {escape(", ".join(parts))}.</p>' if parts else ""

    def _notes(self) -> str:
        if not self.notes:
            return ""
        items = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        return f'<div class="notes"><strong>Notes</strong><ul>{items}</ul></div>'

    def _accuracy_figure(self) -> go.Figure:
        traces = [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plotly_label(e.name),
                "x": [r.epoch for r in e.history],
                "y": [r.dev_accuracy for r in e.history],
            }
            for e in self.models.values()
        ]
        layout = {
            **FIGURE_STYLE,
            "title": {"text": "dev accuracy per epoch", "x": 0, "xref": "paper"},
            "height": FIGURE_HEIGHT,
            "xaxis": {"title": "epoch", "dtick": 1},
            "yaxis": {"title": "dev accuracy", "range": [0, 1.02], "tickformat": ".0%"},
            "legend": LEGEND_ON_TOP,
            "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
            "hovermode": "x unified",
        }
        classes = self._classes()
        if classes:
            layout.update(_chance_line(1 / len(classes)))
        return go.Figure(traces, layout)

    def _dataset_section(self) -> str:
        if self.dataset is None:
            return _section("dataset", "Dataset", _placeholder("No dataset summary given."))
        summary = self.dataset
        table = _counts_table(summary)
        facts = f"{table}{_sources(summary)}{_problems(summary.get('problems', []))}"
        image = _image_figure(self.sample_grid, "sample images", "Sample images per class.")
        title = f"Dataset: {summary.get('root', '')}" if summary.get("root") else "Dataset"
        body = f'<div class="split"><div>{facts}</div><div>{image}</div></div>'
        return _section("dataset", escape(title), body)

    def _models_section(self) -> str:
        if not self.models:
            return ""
        cards = [self._model_card(i, e) for i, e in enumerate(self.models.values())]
        return _section("models", "Models", "\n".join(cards))

    def _model_card(self, index: int, entry: ModelEntry) -> str:
        head = f"<h3>{escape(entry.name)} {_status(entry)}</h3>"
        head += f'<p class="facts">{_facts(entry)}</p>'
        if not entry.history and entry.confusion is None:
            body = _placeholder("Waiting to train.")
        else:
            body = self._plots_html(entry)
        return f'<article class="card" id="{_model_id(index)}">{head}{body}</article>'

    def _plots_html(self, entry: ModelEntry) -> str:
        """A model's two plots, built again only when what they show changed."""
        shows = (len(entry.history), entry.planned_epochs, id(entry.result), *self._classes())
        cached = self._plots.get(entry.name)
        if cached is None or cached[0] != shows:
            plots = f'<div class="plots"><div>{self._loss_html(entry)}</div>'
            plots += f"<div>{self._confusion_html(entry)}</div></div>"
            cached = self._plots[entry.name] = (shows, plots)
        return cached[1]

    def _loss_html(self, entry: ModelEntry) -> str:
        if not entry.history:
            return _placeholder("No per-epoch history for this model.")
        title = "training and dev loss"
        return _figure_html(
            loss_figure(entry.history, entry.planned_epochs, title, height=FIGURE_HEIGHT)
        )

    def _confusion_html(self, entry: ModelEntry) -> str:
        classes = entry.classes or self._classes()
        if entry.confusion is None or not classes:
            return _placeholder("No confusion matrix yet.")
        caption = f"epoch {entry.history[-1].epoch}" if entry.history else "final"
        title = f"dev confusion matrix, {caption}"
        return _figure_html(confusion_figure(entry.confusion, classes, title, height=FIGURE_HEIGHT))

    def _predictions_section(self) -> str:
        if self.predictions is None:
            body = _placeholder("The prediction grid appears when training is done.")
        else:
            png, caption = self.predictions
            body = _image_figure(png, "prediction grid", caption)
        return _section("predictions", "Predictions on dev images", body)

    def _gradcam_section(self) -> str:
        if self.gradcam is None:
            text = GRADCAM_LATER if self.live else GRADCAM_MISSING
            return _section("gradcam", "Grad-CAM", f'<div class="missing">{text}</div>')
        png, caption = self.gradcam
        return _section("gradcam", "Grad-CAM", _image_figure(png, "Grad-CAM grid", caption))

    def _mistakes_section(self) -> str:
        if self.mistakes is None:
            body = _placeholder("Top losses and most-confused pairs appear when training is done.")
            return _section("mistakes", "Mistakes", body)
        png, pairs, caption = self.mistakes
        rows = [[escape(t), escape(p), str(n)] for t, p, n in pairs]
        table = (
            _table(["true class", "predicted as", "images"], rows, numeric={2})
            if rows
            else "<p>No dev image was misclassified.</p>"
        )
        image = _image_figure(png, "top losses", caption) if png else ""
        body = f'<div class="split"><div><h3>Most-confused pairs</h3>{table}</div>'
        body += f"<div>{image}</div></div>"
        return _section("mistakes", "Mistakes: top losses and most-confused pairs", body)

    def _reproduce_section(self) -> str:
        meta = dict(self.meta)
        command = meta.pop("command")
        command = shlex.join(map(str, command)) if isinstance(command, list | tuple) else command
        found = meta.pop("versions", None) or {**versions(), "plotly": plotly.__version__}
        rows = [[escape(k.replace("_", " ")), escape(v)] for k, v in meta.items()]
        rows += [[escape(k), escape(self._setting(k))] for k in ("seed", "device") if k not in meta]
        rows += [[escape(k), escape(v)] for k, v in found.items()]
        rows += [
            [escape(e.name), f"<code>{escape(e.result.run_dir)}</code>"]
            for e in self.models.values()
            if e.result
        ]
        body = f"<h3>Command</h3><pre>{escape(command)}</pre>"
        body += f"<h3>Settings, versions and run folders</h3>{_table(['', ''], rows)}"
        return _section("reproduce", "Reproduce", f'<div class="card">{body}</div>')


# -- small HTML helpers ---------------------------------------------------------------------


def _section(anchor: str, title: str, body: str) -> str:
    """A page section; `title` and `body` are HTML already."""
    return f'<section id="{anchor}"><h2>{title}</h2>{body}</section>'


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int] = frozenset(),
    marked: set[int | None] = frozenset(),
) -> str:
    """A table of HTML cells; `numeric` columns align right, `marked` rows stand out."""

    def cells(values: Sequence[str], tag: str) -> str:
        return "".join(
            f'<{tag} class="num">{v}</{tag}>' if i in numeric else f"<{tag}>{v}</{tag}>"
            for i, v in enumerate(values)
        )

    thead = f"<thead><tr>{cells([escape(h) for h in head], 'th')}</tr></thead>" if any(head) else ""
    body = "".join(
        f"<tr{MARKED if i in marked else ''}>{cells(r, 'td')}</tr>" for i, r in enumerate(rows)
    )
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _image_figure(png: bytes | None, alt: str, caption: str = "") -> str:
    """An embedded PNG (a data URL) with a caption; a placeholder when there is none."""
    if png is None:
        return _placeholder(f"No {alt} given.")
    data = base64.b64encode(png).decode("ascii")
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">{text}</figure>'


def _figure_html(fig: go.Figure) -> str:
    """A plotly figure as a div and a script that draws it with the page's inline plotly.js."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG)


def _chance_line(chance: float) -> dict:
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


def _placeholder(text: str) -> str:
    return f'<div class="placeholder">{escape(text)}</div>'


def _pill(text: str, kind: str) -> str:
    return f'<span class="pill {kind}">{escape(text)}</span>'


def _status(entry: ModelEntry) -> str:
    kind = {"finished": "done", "training": "live", "queued": "queued"}.get(entry.status, "bad")
    return _pill(entry.status_text, kind)


def _facts(entry: ModelEntry) -> str:
    """One line of a model's numbers and settings, values in bold."""
    facts = {
        "dev accuracy": _percent(entry.accuracy),
        "balanced": _percent(entry.balanced_accuracy),
    }
    if entry.parameters is not None:
        facts["parameters"] = f"{entry.parameters:,}"
    facts |= {k: v for k, v in entry.settings.items() if k != "parameters"}
    facts["training time"] = _duration(entry.seconds)
    if entry.result:
        facts["run folder"] = entry.result.run_dir
    return " · ".join(
        f'<span class="fact">{escape(k)} <strong>{escape(v)}</strong></span>'
        for k, v in facts.items()
    )


def _counts_table(summary: dict) -> str:
    """Images per class and split, with totals."""
    counts = summary.get("counts", {})
    splits = list(counts)
    rows = []
    for i, cls in enumerate(summary.get("classes", [])):
        per_split = [counts[s].get(cls, 0) for s in splits]
        rows.append([str(i), escape(cls), *map(str, per_split), str(sum(per_split))])
    totals = [sum(counts[s].values()) for s in splits]
    bold = [f"<strong>{n}</strong>" for n in (*totals, sum(totals))]
    rows.append(["", "<strong>total</strong>", *bold])
    numeric = set(range(2, len(splits) + 3))
    return _table(["index", "class", *splits, "all"], rows, numeric=numeric)


def _sources(summary: dict) -> str:
    """Image modes and sizes found per split, and how they were read."""
    lines = []
    for split, sources in summary.get("sources", {}).items():
        seen = ", ".join(f"{k} ({v})" for k, v in sources.items()) or "none"
        lines.append(f"<li>{escape(split)} images: {escape(seen)}</li>")
    transform = summary.get("transform")
    if transform:
        mode = "grayscale" if transform.get("channels") == 1 else "RGB"
        size = escape(transform.get("size"))
        lines.append(f"<li>read as {mode}, resized to {size}×{size}</li>")
    return f'<ul class="muted">{"".join(lines)}</ul>' if lines else ""


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return '<p class="ok">No problems found while reading the images.</p>'
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<div class="notes"><strong>{len(problems)} problem(s)</strong><ul>{items}</ul></div>'


def _accuracy_cell(value: float | None) -> str:
    """A percentage over a bar as long as the value: accuracies compared at a glance."""
    if value is None:
        return "–"
    return f'<span class="bar" style="--v:{100 * value:.1f}%"></span>{value:.1%}'


def _percent(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "–"
    return f"<strong>{value:.1%}</strong>" if bold else f"{value:.1%}"


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


def _best(entries) -> str | None:
    """The finished model with the highest dev accuracy, when two or more have finished."""
    scored = [
        (e.accuracy, e.name) for e in entries if e.status == "finished" and e.accuracy is not None
    ]
    return max(scored)[1] if len(scored) > 1 else None


def _index(models: dict[str, ModelEntry], name: str | None) -> int | None:
    return list(models).index(name) if name in models else None


def _model_id(index: int) -> str:
    return f"model-{index + 1}"


def _as_list(value: object) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


@cache
def _plotly_js() -> str:
    """plotly.js itself (minified, about 4.8 MB), for inlining once per page."""
    return plotly.offline.get_plotlyjs()


PAGE = string.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
$refresh<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$style</style>
<script type="text/javascript">$plotlyjs</script>
</head>
<body>
$header
$nav
<main class="wrap">
$sections
</main>
<footer class="wrap">$footer</footer>
</body>
</html>
"""
)

STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
.wrap { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header.top { background: #fff; border-bottom: 1px solid var(--line); padding: 20px 0 16px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 0 0 14px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 8px; }
.meta, .muted, figcaption, footer { color: var(--muted); font-size: 13px; }
.meta { margin: 0; }
.banner { margin: 14px 0 0; padding: 12px 16px; border-radius: 6px; background: #fff1e5;
  border: 1px solid #ffb77c; border-left: 6px solid #e16f24; }
nav.toc { position: sticky; top: 0; z-index: 10; background: rgba(255, 255, 255, 0.96);
  border-bottom: 1px solid var(--line); }
nav.toc .wrap { display: flex; flex-wrap: wrap; gap: 4px 18px; padding-top: 8px;
  padding-bottom: 8px; font-size: 14px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
section { margin: 28px 0; scroll-margin-top: 48px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 18px;
  margin: 0 0 16px; scroll-margin-top: 48px; }
.facts { color: var(--muted); font-size: 13px; margin: 0 0 8px; }
.facts strong { color: var(--fg); font-weight: 600; }
.fact { white-space: nowrap; }
.split, .plots { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 20px;
  align-items: start; }
.split > div, .plots > div { min-width: 0; }
@media (max-width: 960px) { .split, .plots { grid-template-columns: minmax(0, 1fr); } }
section > .split, section > figure, section > .placeholder, section > .missing {
  background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 18px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; background: #fff;
  margin-bottom: 10px; }
th, td { padding: 7px 12px; border-bottom: 1px solid var(--line); text-align: left;
  white-space: nowrap; }
th { font-size: 13px; color: var(--muted); font-weight: 600; }
.num { text-align: right; }
tr.best td { background: #dafbe1; }
.bar { display: inline-block; width: 60px; height: 8px; margin-right: 8px; border-radius: 4px;
  background: linear-gradient(90deg, #2f81f7 var(--v), #eaeef2 var(--v)); }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
  font-weight: 600; vertical-align: middle; }
.pill.live { background: #ddf4ff; color: #0969da; }
.pill.done { background: #dafbe1; color: #1a7f37; }
.pill.bad { background: #ffebe9; color: #cf222e; }
.pill.queued { background: #eaeef2; color: var(--muted); }
.notes { background: #fff8c5; border: 1px solid #d4a72c66; border-radius: 6px;
  padding: 8px 14px; margin: 10px 0; }
.notes ul { margin: 4px 0; padding-left: 20px; }
.ok { color: #1a7f37; }
.placeholder { padding: 28px; text-align: center; color: var(--muted); background: #fff;
  border: 2px dashed var(--line); border-radius: 8px; }
.missing { padding: 20px; border: 2px dashed #d4a72c !important; background: #fff8c5 !important;
  border-radius: 8px; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
pre, code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
  white-space: pre-wrap; word-break: break-all; }
footer { padding: 12px 24px 32px; }
"""
