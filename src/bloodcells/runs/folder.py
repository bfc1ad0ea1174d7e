"""A run folder read back: the Run (its record, history and model) and the files' readers.

The folder holds config.json and metrics.json (the record: bloodcells.runs.record),
history.csv, weights.pt and checkpoint.pt, written after every epoch as one unit by
bloodcells.runs.writer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.errors import RunError
from bloodcells.runs.record import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    WEIGHTS,
    RunInfo,
    RunMetrics,
    damaged,
    read_info,
    read_metrics,
    summary,
)
from bloodcells.training import EpochResult, History, TrainConfig, make_model
from bloodcells.utils.locks import writer_alive


@dataclass
class Run:
    """A run folder read back: its record (config.json, metrics.json) and its history."""

    path: Path
    info: RunInfo
    metrics: RunMetrics = field(default_factory=RunMetrics)
    history: History = field(default_factory=History)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> TrainConfig:
        return self.info.config

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def data_root(self) -> str | None:
        return self.info.data_root

    @property
    def epochs_done(self) -> int:
        """Finished epochs the folder holds."""
        return len(self.history) or int(self.metrics.epoch or 0)

    @property
    def epochs_target(self) -> int:
        """The epochs the run was (last) asked to reach."""
        return self.config.epochs

    @property
    def interrupted(self) -> bool:
        """Whether its writer stopped (killed, Ctrl-C) before reaching `epochs_target`."""
        return self.metrics.status == "interrupted" and self.epochs_done < self.epochs_target

    @property
    def transform(self) -> Transform:
        return Transform(self.config.image_size, self.config.channels)

    def writing_elsewhere(self) -> int | None:
        """The pid of another process that is training this run right now, if any."""
        pid = self.metrics.writer_pid
        if self.metrics.status != "running" or not writer_alive(self.metrics.writer):
            return None
        return pid if pid != os.getpid() else None

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model, in eval mode, with weights loaded safely (weights_only)."""
        model = make_model(self.config, len(self.classes))
        load_weights(model, self.path / WEIGHTS, device)
        return model.to(device).eval()

    def load_data(self, data_root: str | Path | None = None, cache: bool = True) -> Splits:
        """The run's dataset (or `data_root`'s, which must have the same classes), as trained
        on."""
        root = data_root or self.data_root
        if root is None:
            raise RunError(f"{self.path}: the run does not say which data it used; pass data_root")
        splits = load_dataset(root, self.transform, cache=cache)
        if splits.classes != self.classes:
            raise RunError(
                f"{root}: classes {splits.classes} differ from the run's {self.classes}; "
                "evaluate on data with the same class folders"
            )
        return splits


def load_run(path: str | Path) -> Run:
    """Read a run folder back; a RunError names what is missing or damaged.

    A run whose metrics.json says "running" while its writer is gone (killed) is reported as
    "interrupted" in Run.metrics; the file itself is left as it is.
    """
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunError(f"{path}: not a run folder (no {CONFIG}); runs are made by bloodcells train")
    info = read_info(path / CONFIG)
    if not (path / WEIGHTS).is_file():
        raise RunError(f"{path}: no finished epoch yet (no {WEIGHTS})")
    return Run(path, info, read_metrics(path / METRICS), _read_history(path))


def _read_history(path: Path) -> History:
    if not (path / CHECKPOINT).is_file():
        return History()
    saved = read_checkpoint(path / CHECKPOINT)["history"]
    try:
        return History([EpochResult(**e) for e in saved])
    except TypeError as exc:
        raise damaged(path / CHECKPOINT, summary(exc)) from exc


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
