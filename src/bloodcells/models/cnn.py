"""The lab's two CNNs: SimpleCNN (one 2×2 filter) and the advanced CNN with exercise 3's options."""

from __future__ import annotations

import torch
from torch import nn

from bloodcells.errors import ModelError


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
            "use a larger image size (the lab uses 32)"
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


def simple(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The registry's "simple": SimpleCNN."""
    return SimpleCNN(in_channels, num_classes, image_size)


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
