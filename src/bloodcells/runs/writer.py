"""Writing a run folder: RunWriter, the fit() callback that keeps it current, atomically.

A run is written after every epoch as one unit (every file to a temporary name, then all
renamed), so a run killed mid-epoch, or out of disk space, keeps every finished epoch and
`resume_training` continues it exactly.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bloodcells._version import versions
from bloodcells.errors import RunError, os_reason
from bloodcells.evaluation.ood import UnlikePolicy, UnlikeReference
from bloodcells.models.registry import count_parameters
from bloodcells.runs.record import (
    CHECKPOINT,
    CONFIG,
    HISTORY,
    METRICS,
    WEIGHTS,
    RunInfo,
    RunMetrics,
    SweepMember,
    read_info,
    read_metrics,
)
from bloodcells.training import Callback, FitState, History
from bloodcells.training.loop import checkpoint_state
from bloodcells.utils.files import torch_bytes, write_atomic, write_together
from bloodcells.utils.locks import writer_identity

HISTORY_COLUMNS = ("epoch", "train_loss", "dev_loss", "dev_accuracy", "seconds")


def new_run_dir(out: str | Path, model: str) -> Path:
    """A fresh runs/<UTC time>-<model> folder; never reuses an existing one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = out / (f"{stamp}-{model}" if n == 1 else f"{stamp}-{model}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{out}: could not create a new run folder")


class RunWriter(Callback):
    """Keeps a run folder current: config at the start, everything else after each epoch.

    `reference` (the training images' pixel range and the dev images' brightness and
    contrast) completes the unlike-training policy recorded with each epoch; without it the
    policy has the energy threshold alone.
    """

    def __init__(
        self,
        path: Path,
        data_root: str | Path | None,
        sweep: SweepMember | None = None,
        reference: UnlikeReference | None = None,
        crops: dict | None = None,
    ):
        self.path = Path(path)
        self.crops = crops  # how the training images were cut from fields, if they were
        self.data_root = str(Path(data_root).resolve()) if data_root is not None else None
        self.sweep = sweep
        self.reference = reference
        self.writer: dict = {}  # who is writing the run, so a reader can tell it was killed
        self.saved_epoch = 0  # the epoch the folder holds
        self.scores = RunMetrics()  # the dev-set metrics of that epoch

    def on_fit_start(self, state: FitState) -> None:
        self.writer = writer_identity()
        self.saved_epoch = len(state.history)
        if self.saved_epoch:  # a resumed run: its scores until a new epoch replaces them
            self.scores = read_metrics(self.path / METRICS)
        try:
            self._write_config(state)
        except OSError as exc:
            raise RunError(f"{self.path}: {os_reason(exc)} while saving {CONFIG}") from exc

    def on_epoch_end(self, state: FitState) -> None:
        # checkpoint.pt is renamed last: it is what resume_training continues from, so until
        # it is in place the run resumes from the epoch before, and rewrites the other files.
        policy = UnlikePolicy.measure(state.evaluation, self.reference)
        self.scores = replace(
            RunMetrics.from_dict(state.evaluation.metrics()), unlike_training=policy
        )
        files = {
            WEIGHTS: torch_bytes(state.model.state_dict()),
            HISTORY: history_csv(state.history),
            METRICS: self._metrics(state).to_json(),
            CHECKPOINT: torch_bytes(checkpoint_state(state)),
        }
        epoch = state.history.last.epoch
        try:
            write_together(self.path, files)
        except OSError as exc:
            kept = f"still holds epoch {epoch - 1}" if epoch > 1 else "holds no finished epoch"
            raise RunError(
                f"{self.path}: {os_reason(exc)} while saving epoch {epoch}; the run folder {kept}"
            ) from exc
        self.saved_epoch = epoch

    def on_fit_end(self, state: FitState) -> None:
        if not state.history.epochs or state.history.last.epoch != self.saved_epoch:
            return  # metrics.json must describe the epoch saved; a failed save was reported
        try:
            write_atomic(self.path / METRICS, self._metrics(state).to_json())
        except OSError as exc:
            if state.status != "finished":
                # Another error is on its way to the user already; metrics.json still says
                # "running", which load_run reports as interrupted once this process ends.
                return
            raise RunError(
                f"{self.path}: {os_reason(exc)} while saving {METRICS}; all "
                f"{len(state.history)} epochs are saved, only the final status is not"
            ) from exc

    def _write_config(self, state: FitState) -> None:
        config_file = self.path / CONFIG
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if config_file.exists():  # a resumed run: keep its record, note the new target
            info = read_info(config_file)
            info.config = state.config
            info.resumed.append(now)
        else:
            info = RunInfo(
                config=state.config,
                classes=list(state.classes),
                data_root=self.data_root,
                transform={"size": state.config.image_size, "channels": state.config.channels},
                parameters=count_parameters(state.model),
                device=str(state.device),
                learning_rate=state.config.learning_rate,
                created=now,
                command=sys.argv,
                versions=versions(),
                sweep=self.sweep,
                crops=self.crops,
            )
        write_atomic(config_file, info.to_json())

    def _metrics(self, state: FitState) -> RunMetrics:
        last = state.history.last
        return replace(
            self.scores,
            epoch=last.epoch,
            epochs=state.config.epochs,
            status=state.status,
            dev_loss=last.dev_loss,
            train_loss=last.train_loss,
            train_seconds=sum(state.history.column("seconds")),
            writer=self.writer,
        )


def history_csv(history: History) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for e in history.epochs:
        writer.writerow([e.epoch, *(f"{getattr(e, c):.6g}" for c in HISTORY_COLUMNS[1:])])
    return buffer.getvalue()
