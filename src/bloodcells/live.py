"""Following training as it runs: fit() callbacks for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bloodcells.train import Callback, FitState

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
