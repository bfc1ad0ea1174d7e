"""The models by name: the registry of the lab's three networks and build_model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bloodcells.errors import ModelError
from bloodcells.models.cnn import advanced, simple
from bloodcells.models.specs import CATALOGUE
from bloodcells.models.vgg import vgg16
from bloodcells.utils.validation import check_model_options

# How each model of the catalogue is built: (in_channels, num_classes, image_size, **options).
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "simple": simple,
    "advanced": advanced,
    "vgg16": vgg16,
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it, its default learning rate, what it is."""

    name: str
    build: Callable[..., nn.Module]
    default_lr: float
    description: str
    options: tuple[str, ...] = ()
    channels: int = 1  # the colour mode the lab trains it on: 1 grayscale, 3 RGB
    parameters: int = 0  # in the default configuration of `bloodcells models` (model_specs)


MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(
        name,
        BUILDERS[name],
        info.default_lr,
        info.description,
        info.options,
        info.channels,
        info.parameters,
    )
    for name, info in CATALOGUE.items()
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a ModelError listing the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def build_model(
    name: str, in_channels: int = 1, num_classes: int = 5, image_size: int = 32, **options
) -> nn.Module:
    """A freshly initialised model from the registry (drawn from torch's global generator)."""
    spec = get_spec(name)
    check_model_options(name, options, spec.options)
    given = {k: v for k, v in options.items() if k in spec.options}
    return spec.build(in_channels, num_classes, image_size, **given)


def count_parameters(model: nn.Module) -> int:
    """The number of values in `model`'s parameters."""
    return sum(p.numel() for p in model.parameters())
