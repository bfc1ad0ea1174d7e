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
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.config import SEED_STRIDE, TrainConfig
from bloodcells.data import Dataset
from bloodcells.devices import select_device
from bloodcells.errors import BloodcellsError, TrainingWarning
from bloodcells.evaluation import evaluate_tensors
from bloodcells.models import SimpleCNN, build_model
from bloodcells.recipes import schedule_factor
from bloodcells.train import (
    CHANNELS_LAST_MODELS,
    Callback,
    EpochResult,
    FitState,
    History,
    cpu_threads,
    diverged_message,
    exploded,
    explosion_message,
    training_threads,
)

MAX_STACK = 32  # beyond this a CPU gains nothing more (see benchmarks/bench_sweep.py)
MEMORY_SHARE = 0.25  # a stack may use this share of the free memory (RAM or GPU)
ACTIVATION_FACTOR = 4  # saved outputs, their gradients, dropout masks, workspace per layer

# Layers the stack knows how to run K-wide; anything else trains with fit, one by one.
_LAYERS = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.Dropout,
    nn.Flatten,
    nn.Linear,
)


def chain_of(model: nn.Module) -> list[nn.Module] | None:
    """The model as a plain chain of layers the stack can run, or None when it is not one."""
    if type(model) is nn.Sequential:
        layers = list(model)
    elif type(model) is SimpleCNN:
        layers = [model.conv, model.pool, model.flatten, model.fc]
    else:
        return None
    return layers if all(_supported(layer) for layer in layers) else None


def _supported(layer: nn.Module) -> bool:
    if type(layer) not in _LAYERS:
        return False
    if isinstance(layer, nn.Conv2d):
        return layer.groups == 1 and layer.padding_mode == "zeros"
    if isinstance(layer, nn.BatchNorm2d):
        return layer.affine and layer.track_running_stats and layer.momentum is not None
    if isinstance(layer, nn.MaxPool2d):
        return not layer.return_indices
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    return True


def stackable(config: TrainConfig, num_classes: int = 5) -> bool:
    """Whether models of `config` can train in a stack (else a sweep trains them with fit).

    bf16 autocast (amp) is left to fit: its rounding would not be the member's own; so is
    augmentation, which fit draws from each run's own generator.
    """
    if config.amp or config.augment != "lab":
        return False
    with torch.device("meta"):
        model = build_model(
            config.model, config.channels, num_classes, config.image_size, **config.options
        )
    return chain_of(model) is not None


def stack_key(config: TrainConfig) -> tuple:
    """Configs with equal keys stack together: one architecture, batch size, device, target,
    schedule and loss. The learning rate is not in it: members with different (peak) rates
    share a stack.
    """
    options = tuple(sorted((k, v) for k, v in config.options.items() if v))
    return (
        config.model,
        options,
        config.batch_size,
        config.image_size,
        config.channels,
        config.device,
        config.epochs,
        config.schedule,
        config.label_smoothing,
        config.amp,
    )


def fit_memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """The memory layout fit trains `config`'s model in (channels-last for some on a CPU).

    It decides the dropout masks: F.dropout draws its mask in its input's memory order, so a
    member must draw in the same layout to get fit's masks.
    """
    if device.type == "cpu" and config.model in CHANNELS_LAST_MODELS:
        return torch.channels_last
    return torch.contiguous_format


def member_bytes(config: TrainConfig, num_classes: int) -> int:
    """About how much memory one member of a stack needs while training.

    Parameters with their gradient and two Adam moments, plus ACTIVATION_FACTOR times every
    layer's output for one batch; measured on the meta device, so nothing is allocated.
    """
    with torch.device("meta"):
        model = build_model(
            config.model, config.channels, num_classes, config.image_size, **config.options
        )
        outputs = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
            for m in model.modules()
            if not list(m.children())
        ]
        model.eval()
        with torch.no_grad():
            model(torch.zeros(config.batch_size, config.channels, *(config.image_size,) * 2))
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return 4 * (4 * params + ACTIVATION_FACTOR * sum(outputs))


def free_bytes(device: torch.device) -> int:
    """Free memory on `device`: the GPU's, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown (not POSIX): assume 4 GiB


def max_members(
    config: TrainConfig, num_classes: int, device: torch.device, limit: int = MAX_STACK
) -> int:
    """How many members of `config` one stack may hold: MEMORY_SHARE of free memory, ≤ limit."""
    fits = int(MEMORY_SHARE * free_bytes(device)) // max(member_bytes(config, num_classes), 1)
    return max(1, min(limit, fits))


def split_evenly(items: Sequence, most: int) -> list[list]:
    """`items` in consecutive chunks of at most `most`, as equal in size as can be."""
    chunks = max(1, math.ceil(len(items) / most))
    size, extra = divmod(len(items), chunks)
    out, start = [], 0
    for i in range(chunks):
        end = start + size + (i < extra)
        out.append(list(items[start:end]))
        start = end
    return out


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


class _Slot:
    """Where a stacked tensor comes from (layer index, attribute) and how it is laid out.

    A stacked tensor is (K, ...) with member k's block contiguous at [k]. Conv weights are
    kept channels-last, (K, O, kh, kw, C), as the grouped convolution reads them; linear
    weights transposed, (K, in, out), so that their gradient comes out of bmm in place.
    """

    def __init__(self, layer: int, name: str, kind: str) -> None:
        self.layer, self.name, self.kind = layer, name, kind

    def to_storage(self, t: torch.Tensor) -> torch.Tensor:
        """A member's tensor in the stack's layout."""
        if self.kind == "conv":
            return t.permute(0, 2, 3, 1)
        return t.t() if self.kind == "linear" else t

    def to_member(self, t: torch.Tensor) -> torch.Tensor:
        """The stack's block of one member in the member's own layout (a view)."""
        if self.kind == "conv":
            return t.permute(0, 3, 1, 2)
        return t.t() if self.kind == "linear" else t


class Stack:
    """K models of one architecture as one computation, their parameters stacked (K, ...).

    Activations are channels-last (B, K·C, H, W) through the conv part, member k's channels
    at k·C, and (K, B, F) from Flatten on. Parameters are leaf tensors with member k's block
    at [k] (see _Slot); members' own modules are read when the stack is built and written
    by `copy_to`.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        device: torch.device,
        mask_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        chains = [chain_of(m) for m in models]
        if not chains or any(c is None for c in chains):
            raise BloodcellsError("these models cannot be stacked (not a chain of known layers)")
        if len({tuple(_signature(layer) for layer in c) for c in chains}) != 1:
            raise BloodcellsError("only models of one architecture can be stacked")
        self.k = len(models)
        self.device = device
        # F.dropout fills its mask in the memory order of its input: the layout fit runs in
        self.mask_format = mask_format
        self.chains = chains
        self.template = chains[0]
        self.param_slots: list[_Slot] = []
        self.params: list[torch.Tensor] = []  # leaves, in the order of param_slots
        self.buffer_slots: list[_Slot] = []
        self.buffers: list[torch.Tensor] = []
        self._tensors: dict[tuple[int, str], torch.Tensor] = {}
        with torch.no_grad():
            for i, layer in enumerate(self.template):
                for name, param in layer.named_parameters(recurse=False):
                    kind = "plain"
                    if param.dim() == 4 and isinstance(layer, nn.Conv2d):
                        kind = "conv"
                    elif param.dim() == 2 and isinstance(layer, nn.Linear):
                        kind = "linear"
                    slot = _Slot(i, name, kind)
                    stacked = torch.stack(
                        [slot.to_storage(getattr(c[i], name).detach()) for c in chains]
                    )
                    stacked = stacked.to(device).contiguous().requires_grad_()
                    self.param_slots.append(slot)
                    self.params.append(stacked)
                    self._tensors[(i, name)] = stacked
                for name, _ in layer.named_buffers(recurse=False):
                    stacked = torch.stack([getattr(c[i], name).detach() for c in chains])
                    self.buffer_slots.append(_Slot(i, name, "plain"))
                    self.buffers.append(stacked.to(device))
                    self._tensors[(i, name)] = self.buffers[-1]
        for k, model in enumerate(models):
            if {id(p) for p in model.parameters()} != {id(p) for p in self.member_params(k)}:
                raise BloodcellsError("a member has parameters outside its chain of layers")

    def member_params(self, k: int) -> list[nn.Parameter]:
        """Member k's own parameter objects, in the order of `self.params`."""
        return [getattr(self.chains[k][s.layer], s.name) for s in self.param_slots]

    @torch.no_grad()
    def copy_to(self, k: int) -> None:
        """Write the stack's current weights and buffers of member k into its own model."""
        for slot, stacked in zip(self.param_slots, self.params, strict=True):
            getattr(self.chains[k][slot.layer], slot.name).copy_(slot.to_member(stacked[k]))
        for slot, stacked in zip(self.buffer_slots, self.buffers, strict=True):
            getattr(self.chains[k][slot.layer], slot.name).copy_(stacked[k])

    def forward(
        self, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Logits (K, B, classes) of x (B, K·C, H, W); training mode when `generators` given.

        In training mode BatchNorm uses and updates batch statistics and Dropout multiplies
        by masks drawn from `generators[k]` for member k, as F.dropout draws them on a CPU.
        """
        training = generators is not None
        k, t = self.k, self._tensors
        x = x.contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(self.template):
            if isinstance(layer, nn.Conv2d):
                weight, bias = t[(i, "weight")], t.get((i, "bias"))
                out, kh, kw, cin = weight.shape[1:]
                x = F.conv2d(
                    x,
                    weight.view(k * out, kh, kw, cin).permute(0, 3, 1, 2),
                    None if bias is None else bias.view(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    groups=k,
                )
            elif isinstance(layer, nn.BatchNorm2d):
                if training:
                    t[(i, "num_batches_tracked")].add_(1)
                x = F.batch_norm(
                    x,
                    t[(i, "running_mean")].view(-1),
                    t[(i, "running_var")].view(-1),
                    t[(i, "weight")].view(-1),
                    t[(i, "bias")].view(-1),
                    training,
                    layer.momentum,
                    layer.eps,
                )
            elif isinstance(layer, nn.ReLU):
                x = F.relu(x)
            elif isinstance(layer, nn.MaxPool2d):
                x = F.max_pool2d(
                    x, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                    layer.ceil_mode,
                )  # fmt: skip
            elif isinstance(layer, nn.Dropout):
                if training and layer.p > 0 and x.numel():
                    x = x * self._masks(x, layer.p, generators)
            elif isinstance(layer, nn.Flatten):
                b, _, h, w = x.shape
                x = x.reshape(b, k, -1, h, w).transpose(0, 1).reshape(k, b, -1)
            elif isinstance(layer, nn.Linear):
                weight, bias = t[(i, "weight")], t.get((i, "bias"))
                if bias is None:
                    x = torch.bmm(x, weight)
                else:
                    x = torch.baddbmm(bias.unsqueeze(1), x, weight)
        if x.dim() != 3:
            raise BloodcellsError("a stacked model must end in a linear layer")
        return x

    def _masks(self, x: torch.Tensor, p: float, generators: Sequence[torch.Generator]):
        """Member k's dropout mask from generators[k], as F.dropout makes it alone."""
        if x.dim() == 3:  # (K, B, F): member k's input is (B, F)
            noise = [
                torch.empty(x.shape[1:], device=x.device).bernoulli_(1 - p, generator=g)
                for g in generators
            ]
            return torch.stack(noise).div_(1 - p)
        b, kc, h, w = x.shape  # member k's input is (B, C, H, W), its channels at k·C
        shape = (b, kc // self.k, h, w)
        fmt = self.mask_format
        noise = [
            torch.empty(shape, device=x.device, memory_format=fmt)
            .bernoulli_(1 - p, generator=g)
            .permute(0, 2, 3, 1)
            for g in generators
        ]
        masks = torch.stack(noise, dim=3).div_(1 - p)  # (B, H, W, K, C): channels-last
        return masks.view(b, h, w, kc).permute(0, 3, 1, 2)

    def inputs(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Images x[index[k]] for every member, as one channels-last (B, K·C, H, W) batch."""
        batch = x[index.t().reshape(-1)]  # (B·K, C, H, W), member fastest
        batch = batch.reshape(index.shape[1], -1, *x.shape[2:])
        return batch.contiguous(memory_format=torch.channels_last)


def _signature(layer: nn.Module) -> tuple:
    """What must agree between members' layers: type, shapes and settings."""
    shapes = tuple((n, tuple(p.shape)) for n, p in layer.named_parameters(recurse=False))
    settings = {
        k: v
        for k, v in vars(layer).items()
        if not k.startswith("_") and k != "training" and isinstance(v, int | float | str | tuple)
    }
    return (type(layer).__name__, shapes, tuple(sorted(settings.items())))


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

    def schedule(self, factor: float) -> None:
        """Every group's learning rate at `factor` of its peak, as train_one_epoch sets it."""
        for group, peak in zip(self.optimizer.param_groups, self.peaks, strict=True):
            group["lr"] = peak * factor

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

    def zero_grad(self) -> None:
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
    value: object, view: torch.Tensor, slot: _Slot, i: int, param: torch.Tensor
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
        _call(m.callbacks, "on_fit_start", m.state)
    # the threads fit would use for one member (one on a CPU for the lab's models)
    threads = training_threads(order[0].model, config, device)
    active = list(range(len(order)))
    warned: set[int] = set()
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
                good = {n: v.detach().clone() for n, v in member.model.state_dict().items()}
                stack.copy_to(k)
                optimizer.copy_to(k)
                with cpu_threads(threads):
                    result = evaluate_tensors(member.model, x_dev, y_dev, dev.classes, dev.paths)
                train_loss = losses[k]
                if not (math.isfinite(train_loss) and math.isfinite(result.loss)):
                    member.model.load_state_dict(good)
                    bad = train_loss if not math.isfinite(train_loss) else result.loss
                    member.error = diverged_message(bad, epoch, member.config.learning_rate)
                    state.status = "diverged"
                    active.remove(k)
                    _call(member.callbacks, "on_fit_end", state)
                    continue
                if k not in warned and exploded(train_loss, len(train.classes)):
                    warned.add(k)
                    lr = member.config.learning_rate
                    warnings.warn(
                        explosion_message(train_loss, epoch, len(train.classes), lr),
                        TrainingWarning,
                        stacklevel=2,
                    )
                member.history.epochs.append(
                    EpochResult(
                        epoch=epoch,
                        train_loss=train_loss,
                        dev_loss=result.loss,
                        dev_accuracy=result.accuracy,
                        seconds=shared + time.perf_counter() - begin,
                        confusion=result.confusion(),
                    )
                )
                state.evaluation = result
                _call(member.callbacks, "on_epoch_end", state)
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
            state = order[k].state
            if state.status == "running":
                state.status = "failed"
            _call(order[k].callbacks, "on_fit_end", state)
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
        if config.schedule != "none":
            optimizer.schedule(schedule_factor(config.schedule, step, total_steps))
        logits = stack.forward(stack.inputs(x, index), masks)  # (K, B, classes)
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            y[index].reshape(-1),
            reduction="none",
            label_smoothing=config.label_smoothing,
        )
        losses = losses.view(index.shape).mean(1)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
        total += losses.detach() * index.shape[1]
        step += 1
        if hear_batches:
            for k in active:
                members[k].state.batch = info.batch
                _call(members[k].callbacks, "on_batch_end", members[k].state)
        for callback in callbacks:
            callback.on_batch_end(info)
    return (total / len(y)).tolist()


def _call(callbacks: Sequence[Callback], hook: str, state: FitState) -> None:
    for callback in callbacks:
        getattr(callback, hook)(state)
