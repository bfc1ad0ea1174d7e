"""The run folder's record: what config.json and metrics.json hold, typed, read and written here.

config.json (RunInfo) says how the run was made: its config, classes, data, model size,
device, command and versions, and what a sweep adds. metrics.json (RunMetrics) says how it
stands after its last saved epoch: the dev scores (Evaluation.metrics), the unlike-training
policy, the epoch, the status and the process writing it. Both stay plain JSON objects with
the keys they always had, so run folders of earlier versions load, and keys this version
does not know are kept (`extra`) and written back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from bloodcells.errors import ModelError, RunError, os_reason
from bloodcells.evaluation.ood import UnlikePolicy
from bloodcells.training import FitStatus, TrainConfig
from bloodcells.utils.locks import writer_alive

CONFIG, HISTORY, METRICS, WEIGHTS, CHECKPOINT = (
    "config.json",
    "history.csv",
    "metrics.json",
    "weights.pt",
    "checkpoint.pt",
)

# running, finished, diverged, interrupted or failed: the status of its last fit, except that
# "running" by a process that is gone reads as "interrupted" (read_metrics)
Status = FitStatus


@dataclass
class SweepMember:
    """What a sweep records in each of its runs' config.json (experiments.sweep)."""

    folder: str = ""
    variant: str | None = None
    seed: int | None = None
    trained: str | None = None  # "stacked" or "alone"
    stack_size: int = 1


@dataclass
class RunInfo:
    """config.json: how the run was made. Written when training starts, again on resume."""

    config: TrainConfig
    classes: list[str]
    data_root: str | None = None  # absolute
    transform: dict | None = None  # {"size": ..., "channels": ...}, as the config says
    parameters: int | None = None
    device: str | None = None
    learning_rate: float | None = None  # the config's, its model's default filled in
    created: str | None = None  # UTC, ISO 8601
    command: list[str] | str | None = None  # sys.argv of the process that made it
    versions: dict[str, str] | None = None
    sweep: SweepMember | None = None
    crops: dict | None = None  # the crop set's record (crops.json) when trained on cell crops
    extra: dict = field(default_factory=dict)  # keys this version does not know
    resumed: list[str] = field(default_factory=list)  # when it was resumed, UTC

    def to_dict(self) -> dict:
        saved: dict = {
            "config": self.config.to_dict(),
            "classes": list(self.classes),
            "data_root": self.data_root,
        }
        for name in ("transform", "parameters", "device", "learning_rate", "created"):
            saved |= _given(name, getattr(self, name))
        saved |= _given("command", self.command) | _given("versions", self.versions)
        if self.sweep is not None:
            saved["sweep"] = vars(self.sweep).copy()
        saved |= _given("crops", self.crops)
        saved |= self.extra
        return saved | ({"resumed": list(self.resumed)} if self.resumed else {})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, saved: dict) -> RunInfo:
        """config.json as read; a TypeError, KeyError, ValueError or ModelError if it is not
        one (read_info names the file)."""
        if not isinstance(saved, dict):
            raise TypeError("not a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        sweep = saved.get("sweep")
        return cls(
            config=TrainConfig.from_saved(saved["config"]),
            classes=[str(c) for c in saved["classes"]],
            data_root=saved.get("data_root"),
            transform=saved.get("transform"),
            parameters=saved.get("parameters"),
            device=saved.get("device"),
            learning_rate=saved.get("learning_rate"),
            created=saved.get("created"),
            command=saved.get("command"),
            versions=saved.get("versions"),
            sweep=_sweep_member(sweep) if isinstance(sweep, dict) else None,
            crops=saved.get("crops") if isinstance(saved.get("crops"), dict) else None,
            extra={k: v for k, v in saved.items() if k not in known},
            resumed=list(saved.get("resumed") or []),
        )


@dataclass
class RunMetrics:
    """metrics.json: the dev scores of the last saved epoch and how training stands.

    The first fields are Evaluation.metrics() of the dev set; all are None in a run folder
    without metrics.json.
    """

    n: int | None = None
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    majority_baseline: float | None = None
    chance: float | None = None
    per_class: dict[str, dict[str, float]] | None = None  # precision, recall, f1, support
    classes: list[str] | None = None
    confusion_matrix: list[list[int]] | None = None  # rows true, columns predicted
    loss: float | None = None
    unlike_training: UnlikePolicy | None = None
    epoch: int | None = None  # the epoch these scores are of
    epochs: int | None = None  # the target
    status: Status | None = None
    dev_loss: float | None = None
    train_loss: float | None = None
    train_seconds: float | None = None
    writer: dict | None = None  # the writing process: utils.locks.writer_identity
    extra: dict = field(default_factory=dict)  # keys this version does not know

    def to_dict(self) -> dict:
        saved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                saved |= value
            elif isinstance(value, UnlikePolicy):
                saved[f.name] = value.to_dict()
            elif value is not None:
                saved[f.name] = value
        return saved

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, saved: dict) -> RunMetrics:
        """metrics.json as read (or Evaluation.metrics()); a TypeError or AttributeError if it
        is not one (read_metrics names the file)."""
        if not isinstance(saved, dict):
            raise TypeError("not a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in saved.items() if k in known}
        if values.get("unlike_training") is not None:
            values["unlike_training"] = UnlikePolicy.from_dict(values["unlike_training"])
        return cls(**values, extra={k: v for k, v in saved.items() if k not in known})

    @property
    def writer_pid(self) -> int | None:
        """The pid of the process that wrote the file, if it says."""
        pid = (self.writer or {}).get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def read_info(file: Path) -> RunInfo:
    """A run folder's config.json; a RunError naming it when it is damaged."""
    try:
        return RunInfo.from_dict(json.loads(file.read_text()))
    except (ValueError, OSError, KeyError, TypeError, AttributeError, ModelError) as exc:
        raise damaged(file, summary(exc)) from exc


def read_metrics(file: Path) -> RunMetrics:
    """A run folder's metrics.json (empty when there is none); a RunError naming it when it
    is damaged. "running" by a writer that is gone (killed) reads as "interrupted"; the file
    itself is left as it is."""
    if not file.is_file():
        return RunMetrics()
    try:
        saved = json.loads(file.read_text())
    except (ValueError, OSError) as exc:
        raise damaged(file, summary(exc)) from exc
    if not isinstance(saved, dict):
        raise damaged(file, "not a JSON object")
    try:
        metrics = RunMetrics.from_dict(saved)
    except (TypeError, AttributeError) as exc:
        raise damaged(file, summary(exc)) from exc
    if metrics.status == "running" and writer_alive(metrics.writer) is False:
        metrics.status = "interrupted"
    return metrics


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


def _given(name: str, value: object) -> dict:
    return {} if value is None else {name: value}


def _sweep_member(saved: dict) -> SweepMember:
    known = {f.name for f in fields(SweepMember)}
    return SweepMember(**{k: v for k, v in saved.items() if k in known})
