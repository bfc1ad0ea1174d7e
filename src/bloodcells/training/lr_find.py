"""The learning-rate range test (Smith 2015; fastai's lr_find): a short run at rising rates.

From a freshly initialised model, train one step per rate on rates rising geometrically from
`start` to `end`, record the loss, and stop once the smoothed loss is far above its minimum.
The suggestion, a peak for OneCycle, is a third of the rate where the smoothed loss bottoms
out: Smith's "largest rate that still trains", kept clear of the blow-up just after the
minimum. The rate where the loss falls fastest (the steepest descent) is reported as well: a
safe, slower choice for a constant rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from bloodcells.data import Dataset
from bloodcells.errors import BloodcellsError
from bloodcells.training.config import SEED_STRIDE, TrainConfig
from bloodcells.training.loop import make_model, make_optimizer, training_threads
from bloodcells.training.step import optimizer_step, set_learning_rate
from bloodcells.utils.devices import cpu_threads, select_device

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected
STOP_FACTOR = 4.0  # stop when the smoothed loss is over this × its minimum
SKIP_START = 5  # steps left out of the suggestion (the average is still settling)
PEAK_DIVISOR = 3.0  # the suggested peak is the minimum's rate / PEAK_DIVISOR


@dataclass
class LRFind:
    """The rates tried, their losses (raw and smoothed) and the suggested rates."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)

    @property
    def minimum(self) -> float:
        """The rate of the smallest smoothed loss."""
        usable = range(min(SKIP_START, len(self.lrs) - 1), len(self.lrs))
        return self.lrs[min(usable, key=lambda i: self.smoothed[i])]

    @property
    def steepest(self) -> float:
        """The rate where the smoothed loss falls fastest per decade, before the minimum."""
        end = self.lrs.index(self.minimum)
        first = min(SKIP_START, end)
        if end - first < 2:
            return self.minimum / 10
        slopes = [
            (self.smoothed[i + 1] - self.smoothed[i - 1])
            / (math.log10(self.lrs[i + 1]) - math.log10(self.lrs[i - 1]))
            for i in range(first + 1, end)
        ]
        return self.lrs[first + 1 + min(range(len(slopes)), key=slopes.__getitem__)]

    @property
    def suggestion(self) -> float:
        """The suggested OneCycle peak: the minimum's rate / PEAK_DIVISOR."""
        return self.minimum / PEAK_DIVISOR


def lr_range_test(
    train: Dataset,
    config: TrainConfig,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
) -> LRFind:
    """Run the range test for config's model, batch size, label smoothing and seed on `train`."""
    if not (0 < start < end < math.inf):
        raise BloodcellsError(f"the rates must rise: start {start:g} and end {end:g}")
    if steps < 10:
        raise BloodcellsError(f"an LR range test needs at least 10 steps, not {steps}")
    if len(train) < config.batch_size:
        raise BloodcellsError(
            f"{len(train)} training images are fewer than one batch of {config.batch_size}"
        )
    device = select_device(config.device)
    model = make_model(config, len(train.classes)).to(device)
    optimizer = make_optimizer(model, config)
    x, y = train.to(device).standardized(), train.labels.to(device)
    torch.manual_seed(config.seed * SEED_STRIDE)
    generator = torch.Generator().manual_seed(config.seed * SEED_STRIDE)
    result, average, best = LRFind(), 0.0, math.inf
    model.train()
    order = torch.randperm(len(y), generator=generator).to(device)
    position = 0
    with cpu_threads(training_threads(model, config, device)):
        for step in range(steps):
            lr = start * (end / start) ** (step / (steps - 1))
            if position + config.batch_size > len(y):
                order = torch.randperm(len(y), generator=generator).to(device)
                position = 0
            index = order[position : position + config.batch_size]
            position += config.batch_size
            set_learning_rate(optimizer, lr)
            loss = F.cross_entropy(
                model(x[index]), y[index], label_smoothing=config.label_smoothing
            )
            optimizer_step(optimizer, loss)
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            result.lrs.append(lr)
            result.losses.append(value)
            result.smoothed.append(smoothed)
            best = min(best, smoothed)
            if step > SKIP_START and smoothed > STOP_FACTOR * best:
                break
    if len(result.lrs) < 3:
        raise BloodcellsError(
            f"the loss was not finite from {start:g} on; start the range test lower"
        )
    return result


def lr_find_figure(result: LRFind, title: str = ""):
    """The loss against the rate (log scale), with the suggestion and the minimum marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.losses, color="0.8", label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    ax.axvline(result.suggestion, color="C2", ls="--", label=f"suggested {result.suggestion:.2g}")
    ax.axvline(result.minimum, color="C3", ls=":", label=f"minimum {result.minimum:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = max(*result.smoothed[: SKIP_START + 1], min(result.smoothed) * 2)
    ax.set_ylim(min(result.losses) * 0.9, top * 1.2)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
