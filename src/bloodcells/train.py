"""fit() and evaluate(): the training loop and nothing about files or screens.

The whole dataset lives on the training device as one standardized float tensor; a batch is
an index slice of it (airbench style), so an epoch is arithmetic, not Python or PIL work.
Callbacks hear about progress; fit itself prints and writes nothing.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from numbers import Real

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.data import Dataset
from bloodcells.errors import BloodcellsError, ModelError, TrainingDiverged, TrainingWarning
from bloodcells.models import build_model, get_spec

EVAL_BATCH = 1024  # evaluation batch: only memory, never results, depends on it
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_SEED = 2**32 - 1
# Each epoch reseeds with seed * SEED_STRIDE + epoch: distinct for epochs 1..MAX_EPOCHS, and
# at most about 4.3e13, far below the 2**63 torch's generators take.
SEED_STRIDE = MAX_EPOCHS
IMAGE_SIZES = (4, 512)
MAX_EXTRA_FC = 4096
# An epoch's mean train loss above EXPLOSION_FACTOR × ln(classes), the loss of a uniform
# guess, warns: the loss exploded (a too-high learning rate) without becoming NaN.
EXPLOSION_FACTOR = 10
DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


@dataclass
class TrainConfig:
    """Everything that decides a training run, saved as the run's config.json."""

    model: str = "advanced"
    epochs: int = 5
    batch_size: int = 8
    lr: float | None = None  # None: the model's default learning rate (as in the lab)
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU
    image_size: int = 32
    channels: int = 1
    options: dict = field(default_factory=dict)  # model options: bn2, head_dropout, extra_fc

    def __post_init__(self) -> None:
        """Refuse, in one line, any value fit could not train with (before any folder exists)."""
        get_spec(self.model)
        check_whole("epochs", self.epochs, 1, MAX_EPOCHS)
        check_whole("batch-size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.lr is not None and not (_is_real(self.lr) and 0 < self.lr < math.inf):
            raise BloodcellsError(f"learning rate must be a positive number, not {self.lr!r}")
        check_whole("seed", self.seed, 0, MAX_SEED)
        check_device_name(self.device)
        check_whole("image size", self.image_size, *IMAGE_SIZES)
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise BloodcellsError(
                f"channels must be 1 (grayscale) or 3 (RGB), not {self.channels!r}"
            )
        check_options(self.model, self.options)

    @classmethod
    def from_saved(cls, saved: Mapping) -> TrainConfig:
        """A config as a run's config.json recorded it, without today's limits.

        Older versions accepted values the checks now refuse (a larger seed, head_dropout 1,
        mps); their runs must stay readable, so only the model name and field names are checked.
        """
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown config fields: {', '.join(map(str, unknown))}")
        config = cls()  # the defaults, then the saved values over them
        vars(config).update(saved)
        config.options = dict(config.options)
        get_spec(config.model)
        return config

    def with_epochs(self, epochs: int) -> TrainConfig:
        """A copy aiming at `epochs`; only the new value is checked (see from_saved)."""
        check_whole("epochs", epochs, 1, MAX_EPOCHS)
        return TrainConfig.from_saved(self.to_dict() | {"epochs": epochs})

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else get_spec(self.model).default_lr

    def to_dict(self) -> dict:
        return asdict(self)


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_whole(name: str, value: object, low: int, high: int) -> None:
    """A BloodcellsError unless `value` is a whole number from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BloodcellsError(f"{name} must be a whole number, not {value!r}")
    if value < low:
        raise BloodcellsError(f"{name} must be at least {low}, not {value}")
    if value > high:
        raise BloodcellsError(f"{name} must be at most {high}, not {value}")


def check_options(model: str, options: object) -> None:
    """A ModelError for options `model` does not take or values it cannot be built with."""
    if not isinstance(options, dict):
        raise ModelError(f"model options must be a dict, not {options!r}")
    spec = get_spec(model)
    unknown = sorted(str(k) for k, v in options.items() if k not in spec.options and v)
    if unknown:
        raise ModelError(
            f"model {model!r} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(spec.options) or 'none'}"
        )
    dropout = options.get("head_dropout", 0.0)
    if not (_is_real(dropout) and 0 <= dropout < 1):
        raise ModelError(f"head_dropout must be from 0 up to (not including) 1, not {dropout!r}")
    extra_fc = options.get("extra_fc", 0)
    if isinstance(extra_fc, bool) or not isinstance(extra_fc, int):
        raise ModelError(f"extra_fc must be a whole number of units, not {extra_fc!r}")
    if not 0 <= extra_fc <= MAX_EXTRA_FC:
        raise ModelError(f"extra_fc must be from 0 to {MAX_EXTRA_FC} units, not {extra_fc}")
    for flag in ("bn2", "pretrained"):
        if not isinstance(options.get(flag, False), bool):
            raise ModelError(f"{flag} must be true or false, not {options[flag]!r}")


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
        return [getattr(e, name) for e in self.epochs]


@dataclass
class Evaluation:
    """A model's outputs on a dataset."""

    loss: float
    probabilities: torch.Tensor  # N×K, on the CPU
    labels: torch.Tensor  # N, on the CPU

    @property
    def predictions(self) -> torch.Tensor:
        return self.probabilities.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).float().mean()) if len(self.labels) else 0.0

    def confusion(self, num_classes: int) -> list[list[int]]:
        flat = self.labels * num_classes + self.predictions
        counts = torch.bincount(flat, minlength=num_classes * num_classes)
        return counts.view(num_classes, num_classes).tolist()


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
    status: str = "running"  # running, finished, diverged, interrupted


class Callback:
    """Hooks fit() calls; override the ones you need."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


def check_device_name(name: str | torch.device | None) -> None:
    """A BloodcellsError unless `name` is None (automatic), cpu, cuda or cuda:N."""
    if isinstance(name, torch.device):
        name = str(name)
    if name and not (isinstance(name, str) and DEVICE_NAME.fullmatch(name)):
        raise BloodcellsError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")


def check_device(name: str | torch.device | None) -> None:
    """A BloodcellsError unless `name` is a device this machine has; cheap, starts no GPU work."""
    name = None if name is None else str(name)
    check_device_name(name)
    if not name or name == "cpu":
        return
    if not torch.cuda.is_available():
        raise BloodcellsError(f"device {name!r} asked for, but no CUDA GPU is available")
    index, count = torch.device(name).index, torch.cuda.device_count()
    if index is not None and index >= count:
        raise BloodcellsError(
            f"device {name!r} asked for, but this machine has {count} CUDA GPU(s): "
            f"cuda:0 to cuda:{count - 1}"
        )


def select_device(name: str | None = None) -> torch.device:
    """`name` if given (see check_device), else CUDA when present, else CPU."""
    check_device(name)
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The config's model, initialised from the config's seed."""
    torch.manual_seed(config.seed)
    return build_model(
        config.model, config.channels, num_classes, config.image_size, **config.options
    )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, as in the lab; the fused kernel where it exists (10-25% faster epochs on a CPU)."""
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=config.learning_rate, fused=fused or None)


def fit(
    model: nn.Module,
    train: Dataset,
    dev: Dataset,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None,
) -> History:
    """Train `model` for config.epochs epochs; with a `history`, continue after its last epoch."""
    device = select_device(config.device)
    model.to(device)
    optimizer = optimizer or make_optimizer(model, config)
    history = history if history is not None else History()
    x_train, y_train = train.to(device).standardized(), train.labels.to(device)
    x_dev, y_dev = dev.to(device).standardized(), dev.labels.to(device)
    state = FitState(model, optimizer, config, train.classes, history, device)
    state.batches = math.ceil(len(y_train) / config.batch_size)
    _call(callbacks, "on_fit_start", state)
    warned = False
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            state.epoch, state.batch = epoch, 0
            start = time.perf_counter()
            good_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            train_loss = train_one_epoch(state, x_train, y_train, callbacks)
            result = evaluate_tensors(model, x_dev, y_dev)
            if not (math.isfinite(train_loss) and math.isfinite(result.loss)):
                model.load_state_dict(good_weights)
                state.status = "diverged"
                bad = train_loss if not math.isfinite(train_loss) else result.loss
                raise TrainingDiverged(diverged_message(bad, epoch, config.learning_rate))
            if not warned and exploded(train_loss, len(train.classes)):
                warned = True
                warnings.warn(
                    explosion_message(train_loss, epoch, len(train.classes), config.learning_rate),
                    TrainingWarning,
                    stacklevel=2,
                )
            history.epochs.append(
                EpochResult(
                    epoch=epoch,
                    train_loss=train_loss,
                    dev_loss=result.loss,
                    dev_accuracy=result.accuracy,
                    seconds=time.perf_counter() - start,
                    confusion=result.confusion(len(train.classes)),
                )
            )
            _call(callbacks, "on_epoch_end", state)
        state.status = "finished"
    except KeyboardInterrupt:
        state.status = "interrupted"
        raise
    finally:
        if state.status == "running":
            state.status = "failed"
        _call(callbacks, "on_fit_end", state)
    return history


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
    guess = math.log(max(num_classes, 2))
    return (
        f"the training loss exploded in epoch {epoch}: {train_loss:.3g} per image, over "
        f"{EXPLOSION_FACTOR}× the {guess:.3g} of a uniform guess; the model may end at chance; "
        f"try a lower learning rate than {lr:g}"
    )


def train_one_epoch(
    state: FitState, x: torch.Tensor, y: torch.Tensor, callbacks: Sequence[Callback] = ()
) -> float:
    """One pass over (x, y) in a shuffle seeded by (seed, epoch); the mean loss per example."""
    model, optimizer, config = state.model, state.optimizer, state.config
    # Seeding per epoch (not once) makes a resumed run draw the same shuffles and dropout masks.
    torch.manual_seed(config.seed * SEED_STRIDE + state.epoch)
    generator = torch.Generator().manual_seed(config.seed * SEED_STRIDE + state.epoch)
    order = torch.randperm(len(y), generator=generator).to(x.device)
    model.train()
    total = torch.zeros((), device=x.device)
    for state.batch, start in enumerate(range(0, len(y), config.batch_size), start=1):
        index = order[start : start + config.batch_size]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(index)
        if callbacks:
            _call(callbacks, "on_batch_end", state)
    return float(total) / len(y)


@torch.no_grad()
def evaluate_tensors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
    """Loss and class probabilities of `model` (in eval mode) on standardized images."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    model.train(was_training)
    loss = float(F.cross_entropy(logits, y, reduction="sum")) / max(len(y), 1)
    return Evaluation(loss, logits.softmax(1).cpu(), y.cpu())


def evaluate(model: nn.Module, dataset: Dataset, device: str | None = None) -> Evaluation:
    """Loss and class probabilities of `model` on every image of `dataset`."""
    device = select_device(device)
    model.to(device)
    data = dataset.to(device)
    return evaluate_tensors(model, data.standardized(), data.labels)


def _call(callbacks: Sequence[Callback], hook: str, state: FitState) -> None:
    for callback in callbacks:
        getattr(callback, hook)(state)
