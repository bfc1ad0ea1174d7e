"""Following training as it runs: fit() callbacks for the terminal (rich), the notebook (plotly
widgets) and the run folder (PNG files). The figures themselves are in charts.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bloodcells.evaluation.metrics import row_percentages
from bloodcells.training.records import Callback, EpochResult, FitState
from bloodcells.utils.files import write_atomic
from bloodcells.viz.charts import (
    LOSS_TRACES,
    confusion_figure,
    confusion_layout,
    confusion_trace,
    epoch_caption,
    loss_figure,
    loss_layout,
    loss_traces,
)

COLUMNS = (("epoch", 7), ("train loss", 11), ("dev loss", 10), ("dev acc", 9), ("seconds", 9))


class TerminalProgress(Callback):
    """A progress bar within each epoch and a table row after it."""

    def __init__(self, console: Console | None = None, label: str = "") -> None:
        self.console = console or Console()
        self.label = label
        self.progress: Progress | None = None
        self.task = None

    def on_fit_start(self, state: FitState) -> None:
        self.console.print(self._row([name for name, _ in COLUMNS], header=True))

    def on_batch_end(self, state: FitState) -> None:
        if not self.console.is_terminal:  # in a log, a bar would leave a blank line per epoch
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn(f"{self.label} epoch {state.epoch}/{state.config.epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.batches)
        self.progress.update(self.task, completed=state.batch)

    def on_epoch_end(self, state: FitState) -> None:
        self._stop()
        e = state.history.last
        cells = [
            f"{e.epoch}/{state.config.epochs}",
            f"{e.train_loss:.4f}",
            f"{e.dev_loss:.4f}",
            f"{e.dev_accuracy:.3f}",
            f"{e.seconds:.1f}",
        ]
        self.console.print(self._row(cells))

    def on_fit_end(self, state: FitState) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    @staticmethod
    def _row(cells: list[str], header: bool = False) -> Table:
        table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
        for _, width in COLUMNS:
            table.add_column(justify="right", width=width, style="bold" if header else None)
        table.add_row(*cells)
        return table


class LivePlot(Callback):
    """The lab's notebook live plot: loss curves and the dev confusion matrix after each epoch.

    In Jupyter it shows two plotly widgets where it is created; elsewhere it only keeps its
    figures (`loss`, `matrix`) current. Make one per model to keep each model's plots.
    """

    def __init__(self, class_names: Sequence[str] | None = None, title: str | None = None) -> None:
        self.class_names = list(class_names) if class_names is not None else None
        self.title = title
        n = len(self.class_names or ())
        self.loss = _widget(loss_figure(title=self._title("loss")))
        self.matrix = _widget(
            confusion_figure(
                np.zeros((n, n), int),
                self.class_names or (),
                self._title("confusion matrix (dev)"),
                width=520,
                height=520,
            )
        )
        self.displayed = _display(self.loss, self.matrix)

    def on_fit_start(self, state: FitState) -> None:
        if self.class_names is None:
            self.class_names = list(state.classes)
        if self.title is None:
            self.title = state.config.model
        self._update(state)  # a resumed fit shows its earlier epochs at once

    def on_epoch_end(self, state: FitState) -> None:
        self._update(state)

    def _update(self, state: FitState) -> None:
        epochs = state.history.epochs
        layout = loss_layout(self._title("loss"), epochs, state.config.epochs)
        _redraw(self.loss, loss_traces(epochs), layout)
        if epochs:
            title = self._title(f"confusion matrix (dev), {epoch_caption(epochs[-1])}")
            trace = confusion_trace(epochs[-1].confusion, self.class_names)
            _redraw(self.matrix, [trace], confusion_layout(title))

    def _title(self, what: str) -> str:
        return f"{self.title}: {what}" if self.title else what[:1].upper() + what[1:]


def _redraw(fig: go.Figure, traces: Sequence[dict], layout: dict) -> None:
    """Put new traces and layout into `fig` in place (a widget sends them as one update)."""
    with fig.batch_update():
        for trace, new in zip(fig.data, traces, strict=True):
            trace.update(new)
        fig.update_layout(layout)


def _widget(fig: go.Figure) -> go.Figure:
    """`fig` as a notebook widget that redraws on change (the plain figure without anywidget)."""
    try:
        return go.FigureWidget(fig)
    except ImportError:
        return fig


def _display(*figures: go.Figure) -> bool:
    """Show `figures` when running in a Jupyter kernel; say whether they were shown."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    display(*figures)
    return True


class PlotFiles(Callback):
    """Keeps run_dir/loss.png and run_dir/confusion.png current after every epoch."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_fit_start(self, state: FitState) -> None:
        if state.history.epochs:  # a resumed run: show its earlier epochs at once
            self._write(state)

    def on_epoch_end(self, state: FitState) -> None:
        self._write(state)

    def _write(self, state: FitState) -> None:
        epochs = state.history.epochs
        loss = _loss_png(epochs, f"{state.config.model}: loss")
        confusion = _confusion_png(epochs[-1], state.classes, state.config.model)
        write_atomic(self.run_dir / "loss.png", loss)
        write_atomic(self.run_dir / "confusion.png", confusion)


def _loss_png(epochs: Sequence[EpochResult], title: str) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from bloodcells.viz.grids import figure_png

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    x = [e.epoch for e in epochs]
    ax.plot(x, [e.train_loss for e in epochs], marker="o", label=LOSS_TRACES[0])
    ax.plot(x, [e.dev_loss for e in epochs], marker="o", label=LOSS_TRACES[1])
    ax.set(xlabel="epoch", ylabel="loss (mean per image)", title=title)
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return figure_png(fig)


def _confusion_png(epoch: EpochResult, classes: Sequence[str], model: str) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    from bloodcells.viz.grids import figure_png

    share = row_percentages(epoch.confusion)
    n = len(classes)
    side = 2.5 + 0.8 * n
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(share):
        color = "white" if value > 0.5 else "black"
        ax.text(j, i, f"{100 * value:.0f}%", ha="center", va="center", color=color)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"{model}: {epoch_caption(epoch)}")
    fig.colorbar(image, ax=ax, format=PercentFormatter(1.0), shrink=0.8)
    return figure_png(fig)
