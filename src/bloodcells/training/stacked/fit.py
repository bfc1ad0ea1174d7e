"""K models of one architecture trained as one computation: the engine under `bloodcells sweep`.

At batch 8 a training step of the advanced CNN is small, and part of it is per-step overhead
(dispatch, allocation, Python; on a GPU, kernel launches). K copies stacked into one wider
computation pay that overhead once; the arithmetic grows with K. On a CPU, fit's batch-8 step
is already mostly arithmetic (one thread, channels-last), and a stack's K-times larger
activations fall out of the cache, so the gain there is small (benchmarks/bench_sweep.py
measures it, and how it grows with K); on a GPU it is the point. The stack is built
by hand from the model's layers (no torch.func): conv layers become one grouped convolution
(`groups=K`) over the members' channels side by side, so BatchNorm2d over K·C channels keeps
each member's statistics; linear layers become one batched matmul.

What each member keeps, exactly as `fit` would give it alone:

- its initialisation: every member is a model from `make_model` (its own seed);
- its shuffle order: a generator seeded `seed * SEED_STRIDE + epoch`, as `train_one_epoch`;
- its dropout masks: drawn per member from its own generator, seeded as `fit` seeds the global
  one each epoch, in the order `fit` draws them (layer by layer, batch by batch), with the same
  kernel (`bernoulli_(1 - p)` then `/ (1 - p)`), so on a CPU the masks are bit-identical;
- its BatchNorm statistics: channels of different members never mix;
- its optimizer: Adam over the stacked tensors is exact, as its state is per element; members
  with different learning rates share a stack, one Adam param group per learning rate over
  contiguous slices of the stacked tensors (members are sorted by learning rate). The Adam
  hyper-parameters (fused or not, betas, eps) are those of `make_optimizer`.

What differs: floating-point rounding, nothing else. In float64 a member equals fit's model
to 1e-9 in every weight, buffer and Adam moment after an epoch (the test's proof that the
algorithm is the same). In float32 a grouped convolution adds its products in another order
(about 1e-7 apart), and training amplifies that where Adam turns a near-zero gradient into a
step of about the learning rate: after a short epoch the weights agree to 1e-3 relative
(two seeds differ by about 1), no weight further apart than lr × steps. See
tests/test_stacked.py. On CUDA the members draw their own seeded masks, but not the ones
fit draws (fit uses the fused CUDA dropout kernel there): a stacked member is then another,
equally valid, sample; everything else holds.

Members are ordinary models with ordinary optimizers: after every epoch their weights, buffers
and Adam state are copied back, each is evaluated alone (`evaluate_tensors`, as fit does) and
each member's callbacks (a RunWriter) see a FitState of their own; a member whose loss becomes
non-finite stops alone (status "diverged") while the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.data import Dataset
from bloodcells.errors import BloodcellsError, TrainingDiverged
from bloodcells.evaluation.core import evaluate_tensors
from bloodcells.training.config import SEED_STRIDE, TrainConfig
from bloodcells.training.loop import CHANNELS_LAST_MODELS, training_threads
from bloodcells.training.records import Callback, FitState, History, notify
from bloodcells.training.stacked.layers import Slot, Stack
from bloodcells.training.stacked.plan import stack_key
from bloodcells.training.step import (
    close_fit,
    copy_weights,
    end_epoch,
    follow_schedule,
    optimizer_step,
)
from bloodcells.utils.devices import cpu_threads, select_device


def fit_memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """The memory layout fit trains `config`'s model in (channels-last for some on a CPU).

    It decides the dropout masks: F.dropout draws its mask in its input's memory order, so a
    member must draw in the same layout to get fit's masks.
    """
    if device.type == "cpu" and config.model in CHANNELS_LAST_MODELS:
        return torch.channels_last
    return torch.contiguous_format


@dataclass
class Member:
    """One model of a stack: what fit would be given for it, and its callbacks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    history: History = field(default_factory=History)
    callbacks: Sequence[Callback] = ()
    state: FitState | None = None  # set by fit_stacked
    error: str | None = None  # why it stopped early (divergence), else None


@dataclass
class StackState:
    """What stack callbacks see: the members and the progress of the stack."""

    members: list[Member]
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0


class StackCallback:
    """Hooks fit_stacked calls for the stack as a whole (progress bars)."""

    def on_batch_end(self, state: StackState) -> None: ...

    def on_epoch_end(self, state: StackState) -> None: ...


class StackOptimizer:
    """Adam over the stacked tensors: one param group per learning rate, exactly as alone.

    Members must be ordered so that equal learning rates are contiguous; group g then holds
    the slices [a:b] of every stacked tensor. Its hyper-parameters are the members' own
    optimizers' (made by make_optimizer), and their state, if any, is taken over (resume).
    """

    def __init__(self, stack: Stack, members: Sequence[Member]) -> None:
        self.stack = stack
        self.members = members
        self.ranges: list[tuple[int, int]] = []
        lrs = [m.config.learning_rate for m in members]
        start = 0
        for k in range(1, len(members) + 1):
            if k == len(members) or lrs[k] != lrs[start]:
                self.ranges.append((start, k))
                start = k
        if len({lr for lr in lrs}) != len(self.ranges):
            raise BloodcellsError("members of a stack must be sorted by learning rate")
        first = members[0].optimizer
        if len(first.param_groups) != 1:
            raise BloodcellsError("a stack member's optimizer must have one param group")
        self.views = [[p.detach()[a:b] for p in stack.params] for a, b in self.ranges]
        groups = [
            {"params": views, "lr": lrs[a]}
            for views, (a, b) in zip(self.views, self.ranges, strict=True)
        ]
        self.optimizer = type(first)(groups, **first.defaults)
        self.peaks = [m.config.learning_rate for m in (members[a] for a, _ in self.ranges)]
        self._take_state()

    @property
    def param_groups(self) -> list[dict]:
        """One group per learning rate, each with its peak in self.peaks."""
        return self.optimizer.param_groups

    def _take_state(self) -> None:
        """Stack the members' optimizer state (a resumed run) into the stack's."""
        for views, (a, b) in zip(self.views, self.ranges, strict=True):
            for j, (view, slot) in enumerate(zip(views, self.stack.param_slots, strict=True)):
                states = [
                    self.members[k].optimizer.state.get(self.stack.member_params(k)[j])
                    for k in range(a, b)
                ]
                if all(not s for s in states):
                    continue
                if any(not s for s in states) or len({float(s["step"]) for s in states}) != 1:
                    raise BloodcellsError(
                        "members of a stack must have trained the same number of steps"
                    )
                state = {}
                for key, value in states[0].items():
                    if key == "step" and torch.is_tensor(value):
                        state[key] = value.clone().to(view.device)
                    elif torch.is_tensor(value) and value.dim() == view.dim() - 1:
                        stacked = [slot.to_storage(s[key]) for s in states]
                        state[key] = torch.stack(stacked).to(view.device).contiguous()
                    else:
                        state[key] = value
                self.optimizer.state[view] = state

    def step(self) -> None:
        for views, (a, b) in zip(self.views, self.ranges, strict=True):
            for view, stacked in zip(views, self.stack.params, strict=True):
                view.grad = stacked.grad[a:b]
        self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (always set to None: the views' grads are slices)."""
        for stacked in self.stack.params:
            stacked.grad = None
        for views in self.views:
            for view in views:
                view.grad = None

    def copy_to(self, k: int) -> None:
        """Write the stack's Adam state of member k into member k's own optimizer."""
        g = next(i for i, (a, b) in enumerate(self.ranges) if a <= k < b)
        a = self.ranges[g][0]
        member = self.members[k]
        member.optimizer.param_groups[0]["lr"] = self.optimizer.param_groups[g]["lr"]
        params = self.stack.member_params(k)
        for view, slot, param in zip(self.views[g], self.stack.param_slots, params, strict=True):
            state = self.optimizer.state.get(view)
            if not state:
                continue
            member.optimizer.state[param] = {
                key: _member_value(value, view, slot, k - a, param) for key, value in state.items()
            }


def _member_value(
    value: object, view: torch.Tensor, slot: Slot, i: int, param: torch.Tensor
) -> object:
    """Block i of a stacked optimizer state value, as the member's own optimizer keeps it:
    in the memory layout of the member's parameter (fit may keep it channels-last)."""
    if not torch.is_tensor(value):
        return value
    if value.shape == view.shape:
        return torch.empty_like(param).copy_(slot.to_member(value[i]))
    return value.clone()  # the step count


def fit_stacked(
    members: Sequence[Member],
    train: Dataset,
    dev: Dataset,
    callbacks: Sequence[StackCallback] = (),
) -> list[History]:
    """Train every member for its config.epochs as one stack; what fit gives each alone.

    Members must share stack_key and the number of epochs done (their histories); their
    models and optimizers come from make_model / make_optimizer (or restore, to continue).
    Members are trained in order of learning rate; the list passed in is not reordered.
    """
    members = list(members)
    if not members:
        return []
    keys = {stack_key(m.config) for m in members}
    if len(keys) != 1 or len({len(m.history) for m in members}) != 1:
        raise BloodcellsError(
            "a stack needs one architecture, batch size, target and number of epochs done"
        )
    done = len(members[0].history)
    order = sorted(members, key=lambda m: m.config.learning_rate)
    config = order[0].config
    device = select_device(config.device)
    for m in order:
        m.model.to(device)  # in place: the optimizer keeps the same parameter objects
    stack = Stack([m.model for m in order], device, fit_memory_format(config, device))
    optimizer = StackOptimizer(stack, order)
    x_train, y_train = train.to(device).standardized(), train.labels.to(device)
    x_dev, y_dev = dev.to(device).standardized(), dev.labels.to(device)
    batches = math.ceil(len(y_train) / config.batch_size)
    for m in order:
        m.state = FitState(m.model, m.optimizer, m.config, train.classes, m.history, device)
        m.state.batches = batches
        notify(m.callbacks, "on_fit_start", m.state)
    # the threads fit would use for one member (one on a CPU for the lab's models)
    threads = training_threads(order[0].model, config, device)
    active = list(range(len(order)))
    info = StackState(order, epochs=config.epochs, batches=batches)
    try:
        for epoch in range(done + 1, config.epochs + 1):
            if not active:
                break
            info.epoch = epoch
            for k in active:
                order[k].state.epoch, order[k].state.batch = epoch, 0
            start = time.perf_counter()
            with cpu_threads(threads):
                losses = _train_epoch(
                    stack, optimizer, order, active, x_train, y_train, info, callbacks
                )
            shared = (time.perf_counter() - start) / len(order)
            for k in list(active):
                member, state = order[k], order[k].state
                begin = time.perf_counter()
                good_weights = copy_weights(member.model)
                stack.copy_to(k)
                optimizer.copy_to(k)
                with cpu_threads(threads):
                    result = evaluate_tensors(member.model, x_dev, y_dev, dev.classes, dev.paths)
                try:
                    end_epoch(
                        state, member.callbacks, losses[k], result, begin - shared, good_weights
                    )
                except TrainingDiverged as exc:  # this member stops; the others go on
                    member.error = str(exc)
                    active.remove(k)
                    notify(member.callbacks, "on_fit_end", state)
            for callback in callbacks:
                callback.on_epoch_end(info)
        for k in active:
            order[k].state.status = "finished"
    except KeyboardInterrupt:
        for k in active:
            order[k].state.status = "interrupted"
        raise
    finally:
        for k in active:
            close_fit(order[k].state, order[k].callbacks)
    return [m.history for m in members]


def _train_epoch(
    stack: Stack,
    optimizer: StackOptimizer,
    members: list[Member],
    active: list[int],
    x: torch.Tensor,
    y: torch.Tensor,
    info: StackState,
    callbacks: Sequence[StackCallback],
) -> list[float]:
    """One epoch of every member, each in its own shuffle; the mean loss per example each."""
    epoch, device = info.epoch, x.device
    seeds = [m.config.seed * SEED_STRIDE + epoch for m in members]
    orders = torch.stack(
        [torch.randperm(len(y), generator=torch.Generator().manual_seed(s)) for s in seeds]
    ).to(device)
    masks = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    config = members[0].config
    step = (epoch - 1) * info.batches  # steps before this epoch, for the schedule
    total_steps = config.epochs * info.batches
    total = torch.zeros(len(members), device=device)
    hear_batches = any(members[k].callbacks for k in active)
    for info.batch, start in enumerate(range(0, len(y), config.batch_size), start=1):
        index = orders[:, start : start + config.batch_size]  # (K, B)
        follow_schedule(optimizer, config.schedule, optimizer.peaks, step, total_steps)
        logits = stack.forward(stack.inputs(x, index), masks)  # (K, B, classes)
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            y[index].reshape(-1),
            reduction="none",
            label_smoothing=config.label_smoothing,
        )
        losses = losses.view(index.shape).mean(1)
        optimizer_step(optimizer, losses.sum())
        total += losses.detach() * index.shape[1]
        step += 1
        if hear_batches:
            for k in active:
                members[k].state.batch = info.batch
                notify(members[k].callbacks, "on_batch_end", members[k].state)
        for callback in callbacks:
            callback.on_batch_end(info)
    return (total / len(y)).tolist()
