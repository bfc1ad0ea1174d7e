"""TrainConfig: everything that decides a training run, checked when it is made.

A config names a recipe (bloodcells.training.recipes: "lab", the default, "fast" or "robust"); every
recipe setting left at None (epochs, batch_size, lr, schedule, label_smoothing, augment) is
filled from it when the config is made, so a config always holds concrete values and
config.json records them.
An explicit value wins over the recipe's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import torch

from bloodcells.errors import BloodcellsError
from bloodcells.models.registry import build_model, get_spec
from bloodcells.ops.augment import Augmenter
from bloodcells.training.recipes import RECIPE_FIELDS, SCHEDULES, get_recipe
from bloodcells.utils.devices import check_device_name
from bloodcells.utils.validation import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_SEED,
    check_channels,
    check_epochs,
    check_flag,
    check_fraction,
    check_image_size,
    check_model_options,
    check_positive,
    check_whole,
)

# Each epoch reseeds with seed * SEED_STRIDE + epoch: distinct for epochs 1..MAX_EPOCHS, and
# at most about 4.3e13, far below the 2**63 torch's generators take.
SEED_STRIDE = MAX_EPOCHS


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
        spec = get_spec(self.model)
        recipe = get_recipe(self.recipe).settings_for(self.model)
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, recipe[name])
        check_epochs(self.epochs)
        check_whole("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.lr is not None:
            check_positive("learning rate", self.lr)
        check_whole("seed", self.seed, 0, MAX_SEED)
        check_device_name(self.device)
        check_image_size(self.image_size)
        check_channels(self.channels)
        check_model_options(self.model, self.options, spec.options)
        if self.schedule not in SCHEDULES:
            raise BloodcellsError(f"unknown schedule {self.schedule!r}; use {', '.join(SCHEDULES)}")
        check_fraction("label smoothing", self.label_smoothing)
        check_flag("amp", self.amp)
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
        check_epochs(epochs)
        return TrainConfig.from_saved(self.to_dict() | {"epochs": epochs})

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else get_spec(self.model).default_lr

    def to_dict(self) -> dict:
        return asdict(self)


def check_buildable(config: TrainConfig) -> None:
    """A ModelError unless config's model can be built at its image size with its options
    (built on the meta device: nothing is allocated or initialised)."""
    with torch.device("meta"):
        build_model(config.model, config.channels, 2, config.image_size, **config.options)
