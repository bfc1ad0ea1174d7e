"""VGG16: torchvision's convolutional features with the lab's head (ImageNet weights optional)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bloodcells.errors import ModelError


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


def vgg16(in_channels: int, num_classes: int, image_size: int, pretrained: bool = False) -> VGG16:
    """The registry's "vgg16"; `pretrained`: ImageNet weights from the local torch cache."""
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
            "bloodcells never downloads; copy the file there or train without pretrained"
        )
    return weights
