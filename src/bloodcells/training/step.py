"""One training step and one epoch end: what fit, the stacked fit and lr-find share.

A step sets the learning rate (set_learning_rate, or follow_schedule for a config's schedule),
then, given the batch's loss, zeroes the gradients, backpropagates and updates
(optimizer_step). An epoch ends with end_epoch: a non-finite loss stops the fit with the
weights from before the epoch, an exploding one warns once, and the epoch is recorded and
told to the callbacks. close_fit tells them the fit is over.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from bloodcells.errors import TrainingDiverged, TrainingWarning
from bloodcells.evaluation.core import Evaluation
from bloodcells.training.recipes import schedule_factor
from bloodcells.training.records import Callback, EpochResult, FitState, notify

# An epoch's mean train loss above EXPLOSION_FACTOR × ln(classes), the loss of a uniform
# guess, warns: the loss exploded (a too-high learning rate) without becoming NaN.
EXPLOSION_FACTOR = 10


class Steppable(Protocol):
    """An optimizer as a step uses it: torch's, or the stacked fit's StackOptimizer."""

    param_groups: list[dict]

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> object: ...


def set_learning_rate(optimizer: Steppable, rate: float | Sequence[float]) -> None:
    """Every param group's learning rate: one `rate` for all, or one per group."""
    groups = optimizer.param_groups
    rates = rate if isinstance(rate, Sequence) else [rate] * len(groups)
    for group, value in zip(groups, rates, strict=True):
        group["lr"] = value


def follow_schedule(
    optimizer: Steppable, schedule: str, peak: float | Sequence[float], step: int, total: int
) -> None:
    """The learning rate of step `step` (from 0) of `total`: `peak` (per group, or one for
    all) × the schedule's factor. Schedule "none" leaves the rates as they are."""
    if schedule == "none":
        return
    factor = schedule_factor(schedule, step, total)
    if isinstance(peak, Sequence):
        set_learning_rate(optimizer, [p * factor for p in peak])
    else:
        set_learning_rate(optimizer, peak * factor)


def optimizer_step(optimizer: Steppable, loss: torch.Tensor) -> None:
    """Backpropagate `loss` into zeroed gradients and update the parameters once."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def copy_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s state, to put back if the next epoch diverges."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def end_epoch(
    state: FitState,
    callbacks: Sequence[Callback],
    train_loss: float,
    evaluation: Evaluation,
    started: float,
    good_weights: dict[str, torch.Tensor],
) -> None:
    """Close epoch state.epoch: record it in state.history and tell the callbacks.

    A non-finite loss instead puts `good_weights` (from before the epoch) back, sets the
    status "diverged" and raises TrainingDiverged; a loss that exploded warns, once per fit.
    `started` is the time.perf_counter() the epoch started at.
    """
    config, epoch, classes = state.config, state.epoch, len(state.classes)
    if not (math.isfinite(train_loss) and math.isfinite(evaluation.loss)):
        state.model.load_state_dict(good_weights)
        state.status = "diverged"
        bad = train_loss if not math.isfinite(train_loss) else evaluation.loss
        raise TrainingDiverged(diverged_message(bad, epoch, config.learning_rate))
    if not state.warned and exploded(train_loss, classes):
        state.warned = True
        message = explosion_message(train_loss, epoch, classes, config.learning_rate)
        warnings.warn(message, TrainingWarning, stacklevel=3)  # where fit was called
    state.history.epochs.append(
        EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            dev_loss=evaluation.loss,
            dev_accuracy=evaluation.accuracy,
            seconds=time.perf_counter() - started,
            confusion=evaluation.confusion(),
        )
    )
    state.evaluation = evaluation
    notify(callbacks, "on_epoch_end", state)


def close_fit(state: FitState, callbacks: Sequence[Callback]) -> None:
    """Tell the callbacks the fit is over; one still "running" failed (an exception)."""
    if state.status == "running":
        state.status = "failed"
    notify(callbacks, "on_fit_end", state)


def diverged_message(loss: float, epoch: int, lr: float) -> str:
    """What a non-finite loss in `epoch` stopped, and what the run keeps."""
    kept = (
        "no epoch finished, so the run has no weights"
        if epoch == 1
        else f"the run folder keeps epoch {epoch - 1}"
    )
    return (
        f"the loss became {loss} in epoch {epoch}; stopped: {kept}; "
        f"try a lower learning rate than {lr:g}"
    )


def exploded(train_loss: float, num_classes: int) -> bool:
    """Whether a mean train loss is over EXPLOSION_FACTOR × that of a uniform guess, ln(K)."""
    return train_loss > EXPLOSION_FACTOR * math.log(max(num_classes, 2))


def explosion_message(train_loss: float, epoch: int, num_classes: int, lr: float) -> str:
    """The warning for a loss that exploded in `epoch`, with the learning rate to lower."""
    guess = math.log(max(num_classes, 2))
    return (
        f"the training loss exploded in epoch {epoch}: {train_loss:.3g} per image, over "
        f"{EXPLOSION_FACTOR}× the {guess:.3g} of a uniform guess; the model may end at chance; "
        f"try a lower learning rate than {lr:g}"
    )
