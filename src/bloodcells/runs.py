"""The run folder: config.json, history.csv, metrics.json and weights, written atomically.

A run is written after every epoch (each file to a temporary name, then renamed), so a run
killed mid-epoch keeps every finished epoch and `resume_training` continues it exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.errors import RunError
from bloodcells.metrics import classification_metrics
from bloodcells.models import count_parameters
from bloodcells.train import (
    Callback,
    EpochResult,
    FitState,
    History,
    TrainConfig,
    fit,
    make_model,
    make_optimizer,
    select_device,
)

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
    def transform(self) -> Transform:
        return Transform(self.config.image_size, self.config.channels)

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model, in eval mode, with weights loaded safely (weights_only)."""
        model = make_model(self.config, len(self.classes))
        state = torch.load(self.path / WEIGHTS, map_location=device, weights_only=True)
        model.load_state_dict(state)
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


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def save_torch_atomic(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def versions() -> dict[str, str]:
    import torchvision

    from bloodcells import __version__

    return {
        "bloodcells": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def metrics_from_confusion(confusion: list[list[int]], classes: list[str]) -> dict:
    """classification_metrics from confusion-matrix counts (exact: the counts are the data)."""
    matrix = np.asarray(confusion)
    true_idx, pred_idx = np.nonzero(matrix)
    counts = matrix[true_idx, pred_idx]
    return classification_metrics(np.repeat(true_idx, counts), np.repeat(pred_idx, counts), classes)


class RunWriter(Callback):
    """Keeps a run folder current: config at the start, everything else after each epoch."""

    def __init__(self, path: Path, data_root: str | Path | None, extra: dict | None = None):
        self.path = Path(path)
        self.data_root = str(Path(data_root).resolve()) if data_root is not None else None
        self.extra = extra or {}

    def on_fit_start(self, state: FitState) -> None:
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

    def on_epoch_end(self, state: FitState) -> None:
        self._write_epoch(state)

    def on_fit_end(self, state: FitState) -> None:
        self._write_metrics(state)

    def _write_epoch(self, state: FitState) -> None:
        history = state.history
        checkpoint = {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "history": [asdict(e) for e in history.epochs],
        }
        save_torch_atomic(state.model.state_dict(), self.path / WEIGHTS)
        save_torch_atomic(checkpoint, self.path / CHECKPOINT)
        write_atomic(self.path / HISTORY, history_csv(history))
        self._write_metrics(state)

    def _write_metrics(self, state: FitState) -> None:
        last = state.history.last
        if last is None:
            return
        metrics = {
            "epoch": last.epoch,
            "epochs": state.config.epochs,
            "status": state.status,
            "dev_loss": last.dev_loss,
            "train_loss": last.train_loss,
            "train_seconds": sum(state.history.column("seconds")),
            **metrics_from_confusion(last.confusion, state.classes),
        }
        write_atomic(self.path / METRICS, json.dumps(metrics, indent=2))


def history_csv(history: History) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for e in history.epochs:
        writer.writerow([e.epoch, *(f"{getattr(e, c):.6g}" for c in HISTORY_COLUMNS[1:])])
    return buffer.getvalue()


def load_run(path: str | Path) -> Run:
    """Read a run folder back; a RunError names what is missing."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunError(f"{path}: not a run folder (no {CONFIG}); runs are made by bloodcells train")
    try:
        info = json.loads((path / CONFIG).read_text())
        config = TrainConfig(**info["config"])
        classes = list(info["classes"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunError(f"{path / CONFIG}: unreadable ({exc})") from None
    if not (path / WEIGHTS).is_file():
        raise RunError(f"{path}: no finished epoch yet (no {WEIGHTS})")
    metrics = json.loads((path / METRICS).read_text()) if (path / METRICS).is_file() else {}
    return Run(path, config, classes, info.get("data_root"), _read_history(path), metrics, info)


def _read_history(path: Path) -> History:
    checkpoint = path / CHECKPOINT
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["history"]
        return History([EpochResult(**e) for e in saved])
    return History()


def start_training(
    splits: Splits,
    config: TrainConfig,
    out: str | Path = "runs",
    callbacks: list[Callback] | tuple = (),
    run_dir: Path | None = None,
) -> Run:
    """Train a new model on `splits` into a new run folder under `out`; return the run."""
    run_dir = run_dir or new_run_dir(out, config.model)
    model = make_model(config, len(splits.classes))
    writer = RunWriter(run_dir, splits.root)
    fit(model, splits.train, splits.test, config, [writer, *callbacks])
    return load_run(run_dir)


def resume_training(
    run_dir: str | Path,
    epochs: int | None = None,
    callbacks: list[Callback] | tuple = (),
    data_root: str | Path | None = None,
) -> Run:
    """Continue a run from its last finished epoch up to `epochs` (default: its own target)."""
    run = load_run(run_dir)
    config = run.config
    if epochs is not None:
        config.epochs = epochs
    if len(run.history) >= config.epochs:
        raise RunError(
            f"{run.path}: already has {len(run.history)} epochs; pass --epochs above that"
        )
    splits = run.load_data(data_root)
    device = select_device(config.device)
    checkpoint = torch.load(run.path / CHECKPOINT, map_location=device, weights_only=True)
    model = make_model(config, len(run.classes)).to(device)
    model.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(model, config)  # after .to(device): its state follows the params
    optimizer.load_state_dict(checkpoint["optimizer"])
    writer = RunWriter(run.path, splits.root)
    fit(model, splits.train, splits.test, config, [writer, *callbacks], optimizer, run.history)
    return load_run(run.path)


def evaluate_run(run: Run, data_root: str | Path | None = None, device: str | None = None) -> dict:
    """Metrics of a run's trained model on the test split of its data (or of `data_root`)."""
    from bloodcells.train import evaluate

    splits = run.load_data(data_root)
    device_ = select_device(device)
    result = evaluate(run.load_model(device_), splits.test, str(device_))
    metrics = classification_metrics(result.labels.numpy(), result.predictions.numpy(), run.classes)
    return {"run": str(run.path), "data": str(splits.root), "loss": result.loss, **metrics}
