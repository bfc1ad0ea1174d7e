"""TrainConfig: everything that decides a training run, checked when it is made.

A config names a recipe (bloodcells.training.recipes: "lab", the default, "fast" or "robust"); every
recipe setting left at None (epochs, batch_size, lr, schedule, label_smoothing, augment) is
filled from it when the config is made, so a config always holds concrete values and
config.json records them.
An explicit value wins over the recipe's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from numbers import Real

from bloodcells.errors import BloodcellsError, ModelError
from bloodcells.models.registry import get_spec
from bloodcells.ops.augment import Augmenter
from bloodcells.training.recipes import RECIPE_FIELDS, SCHEDULES, get_recipe
from bloodcells.utils.devices import check_device_name

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_SEED = 2**32 - 1
# Each epoch reseeds with seed * SEED_STRIDE + epoch: distinct for epochs 1..MAX_EPOCHS, and
# at most about 4.3e13, far below the 2**63 torch's generators take.
SEED_STRIDE = MAX_EPOCHS
IMAGE_SIZES = (4, 512)
MAX_EXTRA_FC = 4096


@dataclass
class TrainConfig:
    """Everything that decides a training run, saved as the run's config.json."""

    model: str = "advanced"
    # None: the recipe's value (the lab recipe: 5 epochs, batch 8, the model's learning rate)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None  # None in a config saved before recipes: the model's default
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU
    image_size: int = 32
    channels: int = 1
    options: dict = field(default_factory=dict)  # model options: bn2, head_dropout, extra_fc
    recipe: str = "lab"  # where the settings left at None come from (bloodcells.training.recipes)
    schedule: str | None = None  # learning rate per step: none, onecycle, cosine
    label_smoothing: float | None = None  # of the training loss (the dev loss has none)
    amp: bool = False  # bf16 autocast of the training steps (CUDA only)
    augment: str | None = None  # bloodcells.ops.augment spec, recorded with every strength

    def __post_init__(self) -> None:
        """Fill the recipe's settings, then refuse, in one line, any value fit could not
        train with (before any folder exists)."""
        get_spec(self.model)
        recipe = get_recipe(self.recipe).settings_for(self.model)
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, recipe[name])
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
        if self.schedule not in SCHEDULES:
            raise BloodcellsError(f"unknown schedule {self.schedule!r}; use {', '.join(SCHEDULES)}")
        smoothing = self.label_smoothing
        if not (_is_real(smoothing) and 0 <= smoothing < 1):
            raise BloodcellsError(
                f"label smoothing must be from 0 up to (not including) 1, not {smoothing!r}"
            )
        if not isinstance(self.amp, bool):
            raise BloodcellsError(f"amp must be true or false, not {self.amp!r}")
        self.augment = Augmenter.from_spec(self.augment, self.channels).spec

    @classmethod
    def from_saved(cls, saved: Mapping) -> TrainConfig:
        """A config as a run's config.json recorded it, without today's limits.

        Older versions accepted values the checks now refuse (a larger seed, head_dropout 1,
        mps); their runs must stay readable, so only the model name and field names are checked.
        Fields a config saved before them lacks take the values those runs trained with: the
        lab recipe, no schedule, no label smoothing, no amp.
        """
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown config fields: {', '.join(map(str, unknown))}")
        get_spec(saved.get("model", cls.model))
        config = cls(model=saved.get("model", cls.model))  # the lab's values, then the saved
        vars(config).update(saved)
        config.options = dict(config.options)
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
