"""The catalogue of models, without torch: names, descriptions, learning rates, parameter counts.

`bloodcells models` prints this table, so it must import in a blink; models.registry builds
the networks from it. The parameter counts are those of the default configuration the table
shows (the model's own channels, 5 classes, 32×32, no options); tests/test_models.py builds
every model and checks them, so they cannot go stale.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE_CLASSES = 5
TABLE_SIZE = 32


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, before anything is built."""

    name: str
    default_lr: float
    description: str
    parameters: int  # at `channels`, TABLE_CLASSES classes, TABLE_SIZE², no options
    options: tuple[str, ...] = ()
    channels: int = 1  # the colour mode the lab trains it on: 1 grayscale, 3 RGB


CATALOGUE: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("simple", 1e-3, "the lab's SimpleCNN: one 2×2 filter", 1_135),
        ModelInfo(
            "advanced",
            1e-4,
            "the lab's advanced CNN: 2 conv blocks, BatchNorm, Dropout",
            153_061,
            options=("bn2", "head_dropout", "extra_fc"),
        ),
        ModelInfo(
            "vgg16",
            1e-4,
            "torchvision VGG16, head 512→1024→classes",
            15_245_125,
            options=("pretrained",),
            channels=3,
        ),
    )
}
