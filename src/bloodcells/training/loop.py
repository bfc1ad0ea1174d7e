"""fit() and restore(): the training loop and nothing about files or screens.

The whole dataset lives on the training device as one standardized float tensor; a batch is
an index slice of it (airbench style), so an epoch is arithmetic, not Python or PIL work.
Callbacks hear about progress; fit itself prints and writes nothing.

On a CPU, small models at small batches train on one thread (training_threads) and the
advanced CNN in channels_last memory: both only change how the same arithmetic is scheduled
(benchmarks/README.md has the measurements), and a run is the same, number for number, every
time with the same seed on the same machine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.data import Dataset, standardize, to_unit
from bloodcells.evaluation.core import evaluate_tensors
from bloodcells.models.registry import build_model, count_parameters
from bloodcells.ops.augment import Augmenter
from bloodcells.training.config import SEED_STRIDE, TrainConfig
from bloodcells.training.records import Callback, EpochResult, FitState, History, notify
from bloodcells.training.step import (
    close_fit,
    copy_weights,
    end_epoch,
    follow_schedule,
    optimizer_step,
)
from bloodcells.utils.devices import cpu_threads, select_device
from bloodcells.utils.validation import check_amp

# On a CPU, models under this many parameters train on one thread: their batch-8 steps are a
# few hundred small operations that two threads cannot share, and idle OpenMP threads wait
# busily for each other (several-fold slower when other programs use the cores). It also makes
# their numbers independent of the machine's core count. (benchmarks/README.md has the figures.)
SINGLE_THREAD_PARAMETERS = 1_000_000
SINGLE_THREAD_BATCH = 64  # ... at batches up to this size; larger batches use every core
# Models whose CPU training is faster in channels_last (NHWC) memory: the advanced CNN's
# max-pooling and convolutions are 12-30% faster per step; VGG16's and SimpleCNN's are slower.
CHANNELS_LAST_MODELS = frozenset({"advanced"})


def make_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The config's model, initialised from the config's seed.

    The weights are drawn from torch's CPU generator seeded with config.seed, inside a fork
    of it: the caller's random numbers are left as they were.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)
        return build_model(
            config.model, config.channels, num_classes, config.image_size, **config.options
        )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, as in the lab; the fused kernel where it exists (10-25% faster epochs on a CPU)."""
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=config.learning_rate, fused=fused or None)


def restore(
    checkpoint: dict, config: TrainConfig, num_classes: int, device: torch.device | str = "cpu"
) -> tuple[nn.Module, torch.optim.Optimizer, History]:
    """The model, optimizer and history a checkpoint saved, ready for fit to continue."""
    model = make_model(config, num_classes).to(device)
    model.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(model, config)  # after .to(device): its state follows the params
    optimizer.load_state_dict(checkpoint["optimizer"])
    history = History([EpochResult(**e) for e in checkpoint["history"]])
    return model, optimizer, history


def checkpoint_state(state: FitState) -> dict:
    """What restore needs to continue from `state`: model, optimizer and history."""
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "history": [asdict(e) for e in state.history.epochs],
    }


def fit(
    model: nn.Module,
    train: Dataset,
    dev: Dataset,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None,
) -> History:
    """Train `model` for config.epochs epochs; with a `history`, continue after its last epoch.

    `model` is moved to the config's device (and, for CHANNELS_LAST_MODELS on a CPU, to
    channels_last memory) and trained in place. The learning rate follows config.schedule step
    by step over config.epochs epochs, so a resumed run continues the same schedule.
    """
    device = select_device(config.device)
    check_amp(config.amp, device)
    model.to(device)
    optimizer = optimizer or make_optimizer(model, config)
    history = history if history is not None else History()
    # Standardized once for the whole set: per batch gives the same bits, but costs 5-25% more
    # time per batch-8 step on a CPU (benchmarks/README.md). Augmented batches must be
    # standardized after augmenting, so then the set stays in [0, 1] and `prepare` does both.
    x_train, prepare = _training_inputs(train.to(device), config)
    y_train = train.labels.to(device)
    x_dev, y_dev = dev.to(device).standardized(), dev.labels.to(device)
    if device.type == "cpu" and config.model in CHANNELS_LAST_MODELS:
        to_channels_last(model, optimizer)
        x_train = x_train.contiguous(memory_format=torch.channels_last)
        x_dev = x_dev.contiguous(memory_format=torch.channels_last)
    state = FitState(model, optimizer, config, train.classes, history, device)
    state.batches = math.ceil(len(y_train) / config.batch_size)
    notify(callbacks, "on_fit_start", state)
    threads = training_threads(model, config, device)
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            state.epoch, state.batch = epoch, 0
            start = time.perf_counter()
            good_weights = copy_weights(model)
            with cpu_threads(threads):
                train_loss = train_one_epoch(state, x_train, y_train, callbacks, prepare)
                result = evaluate_tensors(model, x_dev, y_dev, dev.classes, dev.paths)
            end_epoch(state, callbacks, train_loss, result, start, good_weights)
        state.status = "finished"
    except KeyboardInterrupt:
        state.status = "interrupted"
        raise
    finally:
        close_fit(state, callbacks)
    return history


def _training_inputs(
    train: Dataset, config: TrainConfig
) -> tuple[torch.Tensor, Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None]:
    """What train_one_epoch slices batches from, and how it turns a batch into inputs."""
    augment = Augmenter.from_spec(config.augment, config.channels)
    if not augment:
        return train.standardized(), None
    return to_unit(train.images), lambda batch, generator: standardize(augment(batch, generator))


def train_one_epoch(
    state: FitState,
    x: torch.Tensor,
    y: torch.Tensor,
    callbacks: Sequence[Callback] = (),
    prepare: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> float:
    """One pass over (x, y) in a shuffle seeded by (seed, epoch); the mean loss per example.

    `x` holds the model's inputs, or, with `prepare`, images that `prepare` turns into inputs
    batch by batch (augment, then standardize), drawing its randomness from the epoch's
    generator after the shuffle: a resumed run augments exactly as an uninterrupted one.
    """
    model, optimizer, config = state.model, state.optimizer, state.config
    # Seeding per epoch (not once) makes a resumed run draw the same shuffles and dropout masks.
    torch.manual_seed(config.seed * SEED_STRIDE + state.epoch)
    generator = torch.Generator().manual_seed(config.seed * SEED_STRIDE + state.epoch)
    order = torch.randperm(len(y), generator=generator).to(x.device)
    model.train()
    step = (state.epoch - 1) * state.batches  # steps before this epoch, for the schedule
    total_steps = config.epochs * state.batches
    peak_lr = config.learning_rate
    autocast = _autocast(config, x.device)
    total = torch.zeros((), device=x.device)
    for state.batch, start in enumerate(range(0, len(y), config.batch_size), start=1):
        index = order[start : start + config.batch_size]
        inputs = x[index] if prepare is None else prepare(x[index], generator)
        follow_schedule(optimizer, config.schedule, peak_lr, step, total_steps)
        with autocast:
            loss = F.cross_entropy(model(inputs), y[index], label_smoothing=config.label_smoothing)
        optimizer_step(optimizer, loss)
        total += loss.detach() * len(index)
        step += 1
        notify(callbacks, "on_batch_end", state)
    return float(total) / len(y)


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for config.amp (on CUDA: fit refuses it elsewhere), else nothing."""
    if config.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_threads(model: nn.Module, config: TrainConfig, device: torch.device) -> int | None:
    """The CPU threads to train `model` with: 1 for small models at small batches (see
    SINGLE_THREAD_PARAMETERS), None (torch's setting, one per core) otherwise and on a GPU."""
    small = count_parameters(model) < SINGLE_THREAD_PARAMETERS
    if device.type == "cpu" and small and config.batch_size <= SINGLE_THREAD_BATCH:
        return 1
    return None


def to_channels_last(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """`model`'s 4-d weights, and the optimizer's state of them, in channels_last memory.

    Only the memory layout changes, never a value; the optimizer's state is converted too, so
    a resumed run steps exactly as one that never stopped.
    """
    model.to(memory_format=torch.channels_last)
    for param_state in optimizer.state.values():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                param_state[key] = value.contiguous(memory_format=torch.channels_last)
