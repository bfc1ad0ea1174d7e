"""Recipes: named sets of training settings that a TrainConfig expands into concrete values.

A recipe decides the settings a user rarely wants to pick one by one: epochs, batch size,
learning rate, learning-rate schedule and label smoothing. `TrainConfig(recipe="fast")` fills
every one of these fields the caller left at None from the recipe, so the config (and the
run's config.json) always holds concrete values and a run is reproducible from its config
alone. Precedence: an explicit value > the recipe's value for the model > the recipe's value.

- lab: the lab's own recipe, unchanged: 5 epochs at batch 8, Adam at the model's learning
  rate (1e-3 SimpleCNN, 1e-4 the others), no schedule, plain cross-entropy.
- robust: the model to bring to another lab's cells: the robust augmentations
  (bloodcells.ops.augment: flips, zoom, shift, blur, gamma, noise; stain, hue and saturation for
  RGB), 15 epochs, a cosine schedule from 1e-3 (README: its robustness table).
- fast: the quickest way to the lab's accuracy with the same model: 3 epochs at batch 64,
  OneCycle (30% of the steps rising from peak/25, then a cosine down to peak/2.5e5; Adam's
  betas not cycled) to a peak learning rate chosen with `bloodcells lr-find` on pbc32 (see
  LR_FIND), label smoothing 0.1. On pbc32 the advanced CNN passes the lab's 5-epoch dev
  accuracy after its second epoch, ~5× sooner than the lab's loop (benchmarks/README.md).

A schedule spans the config's epochs, step by step: a run resumed to its own target continues
it exactly; one extended with more epochs (--resume --epochs N) follows the schedule of N.

A value may be a mapping from model name to value (with "*" for any other model) or a
callable of the model's registry entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bloodcells.errors import BloodcellsError
from bloodcells.models.registry import ModelSpec, get_spec

SCHEDULES = ("none", "onecycle", "cosine")
# OneCycle's shape, as torch.optim.lr_scheduler.OneCycleLR's defaults (momentum not cycled).
ONECYCLE_WARMUP = 0.3  # share of the steps spent rising to the peak
ONECYCLE_DIV = 25.0  # the first step's learning rate is peak / ONECYCLE_DIV
ONECYCLE_FINAL_DIV = 1e4  # the last step's learning rate is first / ONECYCLE_FINAL_DIV

# The peak learning rates of the fast recipe: what `bloodcells lr-find --data pbc32 --model M`
# (the fast recipe's batch 64 and label smoothing, seed 0) suggested, to one significant digit.
LR_FIND = {"simple": 5e-2, "advanced": 4e-3, "vgg16": 2e-4}
# The robust recipe's starting learning rate: augmented batches are harder, and at the lab's
# 1e-4 the augmented advanced CNN underfit on pbc32 (clean dev accuracy 0.77); VGG16 keeps
# its own rate.
ROBUST_LR = {"vgg16": 1e-4, "*": 1e-3}


@dataclass(frozen=True)
class Recipe:
    """A named set of TrainConfig settings (see the module's docstring)."""

    name: str
    description: str
    settings: Mapping[str, object]

    def settings_for(self, model: str) -> dict:
        """The recipe's concrete values for `model`."""
        spec = get_spec(model)
        return {field: _resolve(value, spec) for field, value in self.settings.items()}


def _resolve(value: object, spec: ModelSpec) -> object:
    if isinstance(value, Mapping):
        return value[spec.name] if spec.name in value else value["*"]
    if callable(value):
        return value(spec)
    return value


def _model_lr(spec: ModelSpec) -> float:
    return spec.default_lr


RECIPES: dict[str, Recipe] = {
    "lab": Recipe(
        "lab",
        "the lab's: 5 epochs at batch 8, Adam at the model's learning rate",
        {
            "epochs": 5,
            "batch_size": 8,
            "lr": _model_lr,
            "schedule": "none",
            "label_smoothing": 0.0,
            "augment": "lab",
        },
    ),
    "fast": Recipe(
        "fast",
        "3 epochs at batch 64, OneCycle to an lr-find peak, label smoothing 0.1",
        {
            "epochs": 3,
            "batch_size": 64,
            "lr": LR_FIND,
            "schedule": "onecycle",
            "label_smoothing": 0.1,
            "augment": "lab",
        },
    ),
    "robust": Recipe(
        "robust",
        "15 epochs at batch 8, cosine from lr 1e-3, the robust augmentations",
        {
            "epochs": 15,
            "batch_size": 8,
            "lr": ROBUST_LR,
            "schedule": "cosine",
            "label_smoothing": 0.0,
            "augment": "robust",
        },
    ),
}
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "schedule", "label_smoothing", "augment")


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or a one-line error listing the known ones."""
    if not isinstance(name, str) or name not in RECIPES:
        raise BloodcellsError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def schedule_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate of step `step` (from 0) of `total`, as a fraction of the peak."""
    if schedule == "none" or total <= 1:
        return 1.0
    t = min(step, total - 1) / (total - 1)
    if schedule == "cosine":
        return _cosine(1.0, 0.0, t)
    if schedule == "onecycle":
        first = 1.0 / ONECYCLE_DIV
        last = first / ONECYCLE_FINAL_DIV
        if t < ONECYCLE_WARMUP:
            return _cosine(first, 1.0, t / ONECYCLE_WARMUP)
        return _cosine(1.0, last, (t - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP))
    raise BloodcellsError(f"unknown schedule {schedule!r}; use {', '.join(SCHEDULES)}")


def _cosine(start: float, end: float, t: float) -> float:
    """From `start` (t=0) to `end` (t=1) along half a cosine."""
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2
