"""The lab's three models, built by name: simple, advanced (with the exercise-3 options), vgg16."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bloodcells.errors import ModelError
from bloodcells.models.specs import CATALOGUE


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


MODELS: dict[str, ModelSpec] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Add a model builder to the registry under `name`, described by its CATALOGUE entry."""
    info = CATALOGUE[name]

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelSpec(
            name,
            build,
            info.default_lr,
            info.description,
            info.options,
            info.channels,
            info.parameters,
        )
        return build

    return decorator


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a ModelError listing the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def build_model(
    name: str, in_channels: int = 1, num_classes: int = 5, image_size: int = 32, **options
) -> nn.Module:
    """A freshly initialised model from the registry."""
    spec = get_spec(name)
    unknown = sorted(k for k, v in options.items() if k not in spec.options and v)
    if unknown:
        raise ModelError(
            f"model {name!r} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(spec.options) or 'none'}"
        )
    given = {k: v for k, v in options.items() if k in spec.options}
    return spec.build(in_channels, num_classes, image_size, **given)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flat_features(layers: nn.Module, in_channels: int, image_size: int) -> int:
    """How many features `layers` produce for one image: derived, never hard-coded."""
    try:
        with torch.no_grad():
            out = layers(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError):  # a kernel or BatchNorm with too little image left
        out = None
    if out is None or out.numel() == 0:
        raise ModelError(
            f"{image_size}×{image_size} images are too small for this model's layers; "
            "use a larger --size (the lab uses 32)"
        )
    return out.numel()


class SimpleCNN(nn.Module):
    """The lab's first CNN: one 2×2 filter, valid conv → max-pool 2 → flatten → linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 5, image_size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=2)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        features = flat_features(nn.Sequential(self.conv, self.pool), in_channels, image_size)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.conv(x))))


@register("simple")
def simple(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return SimpleCNN(in_channels, num_classes, image_size)


@register("advanced")
def advanced(
    in_channels: int,
    num_classes: int,
    image_size: int,
    bn2: bool = False,
    head_dropout: float = 0.0,
    extra_fc: int = 0,
) -> nn.Sequential:
    """The lab's advanced CNN as an nn.Sequential (so model[0] and model[5] are its convs).

    Exercise 3: `bn2` adds BatchNorm after the second conv block (a), `head_dropout` adds
    Dropout between the linear layers (b, the lab uses 0.3), `extra_fc` adds a third linear
    layer of that many units before the classifier (c, the lab uses 32).
    """
    filters = 16
    block2: list[nn.Module] = [nn.Conv2d(filters, filters * 2, kernel_size=3), nn.ReLU()]
    if bn2:
        block2.append(nn.BatchNorm2d(filters * 2))
    convs = nn.Sequential(
        nn.Conv2d(in_channels, filters, kernel_size=3),
        nn.ReLU(),
        nn.BatchNorm2d(filters),
        nn.MaxPool2d(2),
        nn.Dropout(0.2),
        *block2,
        nn.MaxPool2d(2),
        nn.Dropout(0.2),
        nn.Flatten(),
    )
    hidden = filters * 8
    head: list[nn.Module] = [nn.Linear(flat_features(convs, in_channels, image_size), hidden)]
    head.append(nn.ReLU())
    if head_dropout:
        head.append(nn.Dropout(head_dropout))
    if extra_fc:
        head += [nn.Linear(hidden, extra_fc), nn.ReLU()]
        hidden = extra_fc
    head.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*convs, *head)


class VGG16(nn.Module):
    """torchvision's VGG16 features with the lab's head; 1-channel input is repeated to 3."""

    def __init__(self, features: nn.Module, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.classifier(self.avgpool(self.features(x)))


@register("vgg16")
def vgg16(in_channels: int, num_classes: int, image_size: int, pretrained: bool = False) -> VGG16:
    from torchvision.models import vgg16 as tv_vgg16

    if in_channels not in (1, 3):
        raise ModelError(f"vgg16 takes 1 or 3 channels, not {in_channels}")
    if image_size < 32:
        raise ModelError(
            f"vgg16 needs images of at least 32×32 (five 2× poolings), not {image_size}"
        )
    weights = _local_imagenet_weights() if pretrained else None
    return VGG16(tv_vgg16(weights=weights).features, in_channels, num_classes)


def _local_imagenet_weights():
    """VGG16's ImageNet weights if they are already in the torch cache; never downloads."""
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.exists():
        raise ModelError(
            f"pretrained VGG16 weights are not in the local torch cache ({cached}) and "
            "bloodcells never downloads; copy the file there or train without --pretrained"
        )
    return weights
