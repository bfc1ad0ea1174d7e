"""What a fit records and tells: each epoch's results, the history, the state callbacks see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from bloodcells.evaluation.core import Evaluation
from bloodcells.training.config import TrainConfig

FitStatus = Literal["running", "finished", "diverged", "interrupted", "failed"]
Hook = Literal["on_fit_start", "on_batch_end", "on_epoch_end", "on_fit_end"]


@dataclass
class EpochResult:
    """What one epoch measured (losses are means per example)."""

    epoch: int
    train_loss: float
    dev_loss: float
    dev_accuracy: float
    seconds: float
    confusion: list[list[int]]


@dataclass
class History:
    """The per-epoch results of a fit, in order."""

    epochs: list[EpochResult] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> EpochResult | None:
        return self.epochs[-1] if self.epochs else None

    def column(self, name: str) -> list:
        """One field of every epoch, e.g. column("dev_loss")."""
        return [getattr(e, name) for e in self.epochs]


@dataclass
class FitState:
    """What callbacks see: the model, the run's config and progress so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    classes: list[str]
    history: History
    device: torch.device
    epoch: int = 0  # the epoch being trained, from 1
    batch: int = 0  # batches done in this epoch
    batches: int = 0  # batches per epoch
    # failed: an exception other than divergence or Ctrl-C ended the fit
    status: FitStatus = "running"
    evaluation: Evaluation | None = None  # the dev set after the last epoch of this fit
    warned: bool = False  # whether this fit has warned of an exploding loss (once per fit)


class Callback:
    """Hooks fit() calls; override the ones you need."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


def notify(callbacks: Sequence[Callback], hook: Hook, state: FitState) -> None:
    """Call `hook` of every callback, in order, with `state`."""
    for callback in callbacks:
        getattr(callback, hook)(state)
