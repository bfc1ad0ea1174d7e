"""The run folder: config.json, history.csv, metrics.json and weights, written atomically.

A run is written after every epoch as one unit (every file to a temporary name, then all
renamed), so a run killed mid-epoch, or out of disk space, keeps every finished epoch and
`resume_training` continues it exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from bloodcells.training.config import TrainConfig
from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.utils.devices import check_device, select_device
from bloodcells.errors import ModelError, RunError, os_reason
from bloodcells.evaluation.core import OOD_PERCENTILE
from bloodcells.utils.files import torch_bytes, write_atomic, write_together
from bloodcells.models.registry import count_parameters
from bloodcells.training.loop import (
    Callback,
    EpochResult,
    FitState,
    History,
    checkpoint_state,
    fit,
    make_model,
    restore,
)
from bloodcells.evaluation.ood import pixel_range
from bloodcells._version import versions
from bloodcells.utils.locks import folder_lock, writer_alive, writer_identity

CONFIG, HISTORY, METRICS, WEIGHTS, CHECKPOINT = (
    "config.json",
    "history.csv",
    "metrics.json",
    "weights.pt",
    "checkpoint.pt",
)
HISTORY_COLUMNS = ("epoch", "train_loss", "dev_loss", "dev_accuracy", "seconds")


@dataclass
class Run:
    """A run folder read back: its config, classes, data, history and last metrics."""

    path: Path
    config: TrainConfig
    classes: list[str]
    data_root: str | None
    history: History
    metrics: dict
    info: dict  # the whole config.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def epochs_done(self) -> int:
        """Finished epochs the folder holds."""
        return len(self.history) or int(self.metrics.get("epoch") or 0)

    @property
    def epochs_target(self) -> int:
        """The epochs the run was (last) asked to reach."""
        return self.config.epochs

    @property
    def interrupted(self) -> bool:
        """Whether its writer stopped (killed, Ctrl-C) before reaching `epochs_target`."""
        return self.metrics.get("status") == "interrupted" and self.epochs_done < self.epochs_target

    @property
    def transform(self) -> Transform:
        return Transform(self.config.image_size, self.config.channels)

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model, in eval mode, with weights loaded safely (weights_only)."""
        model = make_model(self.config, len(self.classes))
        load_weights(model, self.path / WEIGHTS, device)
        return model.to(device).eval()

    def load_data(self, root: str | Path | None = None) -> Splits:
        """The run's dataset (or `root`, which must have the same classes), as trained on."""
        root = root or self.data_root
        if root is None:
            raise RunError(f"{self.path}: the run does not say which data it used; pass --data")
        splits = load_dataset(root, self.transform)
        if splits.classes != self.classes:
            raise RunError(
                f"{root}: classes {splits.classes} differ from the run's {self.classes}; "
                "evaluate on data with the same class folders"
            )
        return splits


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
    """Keeps a run folder current: config at the start, everything else after each epoch."""

    def __init__(
        self,
        path: Path,
        data_root: str | Path | None,
        extra: dict | None = None,
        pixel_range: dict | None = None,
    ):
        self.path = Path(path)
        self.data_root = str(Path(data_root).resolve()) if data_root is not None else None
        self.extra = extra or {}
        self.pixel_range = pixel_range  # of the training images: see bloodcells.evaluation.ood
        self.writer: dict = {}  # who is writing the run, so a reader can tell it was killed
        self.saved_epoch = 0  # the epoch the folder holds
        self.scores: dict = {}  # the dev-set metrics of that epoch

    def on_fit_start(self, state: FitState) -> None:
        self.writer = writer_identity()
        self.saved_epoch = len(state.history)
        if self.saved_epoch:  # a resumed run: its scores until a new epoch replaces them
            self.scores = _read_metrics(self.path / METRICS)
        try:
            self._write_config(state)
        except OSError as exc:
            raise RunError(f"{self.path}: {os_reason(exc)} while saving {CONFIG}") from exc

    def on_epoch_end(self, state: FitState) -> None:
        # checkpoint.pt is renamed last: it is what resume_training continues from, so until
        # it is in place the run resumes from the epoch before, and rewrites the other files.
        self.scores = state.evaluation.metrics() | {
            "unlike_training": {
                "score": "energy",
                "percentile": OOD_PERCENTILE,
                "threshold": state.evaluation.unlike_training_threshold(),
                "pixel_range": self.pixel_range,
            }
        }
        files = {
            WEIGHTS: torch_bytes(state.model.state_dict()),
            HISTORY: history_csv(state.history),
            METRICS: self._metrics_json(state),
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
            write_atomic(self.path / METRICS, self._metrics_json(state))
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
        if config_file.exists():  # a resumed run: keep its record, note the new target
            info = json.loads(config_file.read_text())
            info["config"] = state.config.to_dict()
            info.setdefault("resumed", []).append(datetime.now(UTC).isoformat(timespec="seconds"))
            write_atomic(config_file, json.dumps(info, indent=2))
            return
        info = {
            "config": state.config.to_dict(),
            "classes": state.classes,
            "data_root": self.data_root,
            "transform": {"size": state.config.image_size, "channels": state.config.channels},
            "parameters": count_parameters(state.model),
            "device": str(state.device),
            "learning_rate": state.config.learning_rate,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": sys.argv,
            "versions": versions(),
            **self.extra,
        }
        write_atomic(config_file, json.dumps(info, indent=2))

    def _metrics_json(self, state: FitState) -> str:
        last = state.history.last
        metrics = {
            **self.scores,
            "epoch": last.epoch,
            "epochs": state.config.epochs,
            "status": state.status,
            "dev_loss": last.dev_loss,
            "train_loss": last.train_loss,
            "train_seconds": sum(state.history.column("seconds")),
            "writer": self.writer,
        }
        return json.dumps(metrics, indent=2)


def history_csv(history: History) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for e in history.epochs:
        writer.writerow([e.epoch, *(f"{getattr(e, c):.6g}" for c in HISTORY_COLUMNS[1:])])
    return buffer.getvalue()


def load_run(path: str | Path) -> Run:
    """Read a run folder back; a RunError names what is missing or damaged.

    A run whose metrics.json says "running" while its writer is gone (killed) is reported as
    "interrupted" in Run.metrics; the file itself is left as it is.
    """
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunError(f"{path}: not a run folder (no {CONFIG}); runs are made by bloodcells train")
    try:
        info = json.loads((path / CONFIG).read_text())
        config = TrainConfig.from_saved(info["config"])
        classes = list(info["classes"])
    except (ValueError, OSError, KeyError, TypeError, ModelError) as exc:
        raise damaged(path / CONFIG, summary(exc)) from exc
    if not (path / WEIGHTS).is_file():
        raise RunError(f"{path}: no finished epoch yet (no {WEIGHTS})")
    metrics = _read_metrics(path / METRICS)
    return Run(path, config, classes, info.get("data_root"), _read_history(path), metrics, info)


def _read_metrics(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        metrics = json.loads(file.read_text())
    except (ValueError, OSError) as exc:
        raise damaged(file, summary(exc)) from exc
    if not isinstance(metrics, dict):
        raise damaged(file, "not a JSON object")
    if metrics.get("status") == "running" and writer_alive(metrics.get("writer")) is False:
        return metrics | {"status": "interrupted"}
    return metrics


def _read_history(path: Path) -> History:
    if not (path / CHECKPOINT).is_file():
        return History()
    saved = read_checkpoint(path / CHECKPOINT)["history"]
    try:
        return History([EpochResult(**e) for e in saved])
    except TypeError as exc:
        raise damaged(path / CHECKPOINT, summary(exc)) from exc


def damaged(file: Path, reason: str) -> RunError:
    return RunError(f"{file}: unreadable ({reason}); the run folder is damaged")


def summary(exc: BaseException) -> str:
    """The gist of `exc` in one short line: its type and first sentence."""
    if isinstance(exc, OSError) and exc.strerror:
        return os_reason(exc)
    lines = str(exc).strip().splitlines()
    first = re.split(r"(?<=\.)\s", lines[0])[0] if lines else ""
    if len(first) > 100:
        first = first[:97] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_torch(file: Path, device: str | torch.device = "cpu") -> object:
    """torch.load of a run file (weights_only); a RunError naming it when it is damaged."""
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:  # a damaged file raises whatever the zip reader or unpickler hits
        raise damaged(file, summary(exc)) from exc


def read_checkpoint(file: Path, device: str | torch.device = "cpu") -> dict:
    """checkpoint.pt: the model's and optimizer's state and the history, all three checked."""
    checkpoint = load_torch(file, device)
    if not isinstance(checkpoint, dict) or not {"model", "optimizer", "history"} <= set(checkpoint):
        raise damaged(file, "not a checkpoint: no model, optimizer and history")
    if not isinstance(checkpoint["history"], list):
        raise damaged(file, "its history is not a list")
    return checkpoint


def load_weights(model: nn.Module, file: Path, device: str | torch.device = "cpu") -> None:
    """Load a run's weights file into `model`; a RunError naming it when it does not fit."""
    state = load_torch(file, device)
    try:
        model.load_state_dict(state)
    except Exception as exc:  # RuntimeError, KeyError, ValueError, TypeError: the state is wrong
        raise damaged(file, f"does not fit the run's model: {summary(exc)}") from exc


def start_training(
    splits: Splits,
    config: TrainConfig,
    out: str | Path = "runs",
    callbacks: list[Callback] | tuple = (),
    run_dir: Path | None = None,
) -> Run:
    """Train a new model on `splits` into a new run folder under `out`; return the run."""
    check_device(config.device)  # the config checked itself when made; nothing is created yet
    model = make_model(config, len(splits.classes))
    run_dir = run_dir or new_run_dir(out, config.model)
    with folder_lock(run_dir, "run"):
        writer = RunWriter(run_dir, splits.root, pixel_range=pixel_range(splits.train.images))
        fit(model, splits.train, splits.test, config, [writer, *callbacks])
    return load_run(run_dir)


def resume_training(
    run_dir: str | Path,
    epochs: int | None = None,
    callbacks: list[Callback] | tuple = (),
    data_root: str | Path | None = None,
) -> Run:
    """Continue a run from its last finished epoch up to `epochs` (default: its own target).

    Everything else (model, learning rate, seed, batch size, device) is the run's own.
    """
    path = load_run(run_dir).path  # a folder that is no run is refused before it is locked
    with folder_lock(path, "run"):
        run = load_run(path)  # as it is now that no other process can write it
        config = run.config if epochs is None else run.config.with_epochs(epochs)
        _check_resumable(run, config, epochs)
        device = select_device(config.device)
        splits = run.load_data(data_root)
        checkpoint = read_checkpoint(run.path / CHECKPOINT, device)
        try:
            model, optimizer, history = restore(checkpoint, config, len(run.classes), device)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # the state does not fit
            raise damaged(run.path / CHECKPOINT, f"does not fit the run: {summary(exc)}") from exc
        writer = RunWriter(run.path, splits.root, pixel_range=pixel_range(splits.train.images))
        fit(model, splits.train, splits.test, config, [writer, *callbacks], optimizer, history)
    return load_run(run.path)


def _check_resumable(run: Run, config: TrainConfig, epochs: int | None) -> None:
    """A RunError when there is nothing to resume, or another process is training the run."""
    done = len(run.history)
    if done >= config.epochs and epochs is None:
        raise RunError(
            f"{run.path}: the run is finished: it already has {done} epochs; "
            f"to train it further, pass epochs above {done} (--epochs)"
        )
    if done >= config.epochs:
        raise RunError(f"{run.path}: already has {done} epochs; pass epochs above {done}")
    if not (run.path / CHECKPOINT).is_file():
        raise RunError(f"{run.path}: no {CHECKPOINT} to resume from; start a new run")
    writer = run.metrics.get("writer")
    alive = run.metrics.get("status") == "running" and writer_alive(writer)
    if alive and writer["pid"] != os.getpid():
        raise RunError(
            f"{run.path}: process {writer['pid']} is training this run right now; "
            "wait for it or stop it first"
        )
