"""A dataset in memory: images as one tensor, labels, class names, and where each came from.

Images are stored as decoded (uint8, or float16 in [0, 1] for 16-bit sources), N×C×H×W.
Scaling to [0, 1] and the lab's per-image standardization happen on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bloodcells.errors import BloodcellsError, DataError
from bloodcells.utils.validation import check_channels, check_image_size

EPS = 1e-6  # the lab's samplewise_standardize epsilon


@dataclass(frozen=True)
class Transform:
    """The lab's image transform: colour mode and square size (scaling/standardizing is fixed)."""

    size: int = 32
    channels: int = 1  # 1: grayscale (PIL "L"), 3: RGB

    def __post_init__(self) -> None:
        check_channels(self.channels, DataError)
        check_image_size(self.size, DataError, name="size")


@dataclass(frozen=True)
class Problem:
    """Something found while reading a dataset: skipped files, empty classes."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Dataset:
    """One split as tensors: images N×C×H×W, labels N, and where each image came from."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str]
    sources: dict[str, int] = field(default_factory=dict)  # "mode WxH" -> count
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with images and labels on `device`."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def subset(self, index: torch.Tensor | list[int]) -> Dataset:
        """The images at `index`, in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            images=self.images[index.to(self.images.device)],
            labels=self.labels[index.to(self.labels.device)],
            paths=[self.paths[i] for i in index.tolist()],
        )

    def standardized(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Float32 images (all, or those at `index`) after the lab's per-image standardization."""
        images = self.images if index is None else self.images[index]
        return standardize(to_unit(images))

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels.cpu(), minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))

    def random_indices(self, n: int, seed: int = 0) -> list[int]:
        """Up to `n` distinct image indices, drawn by a generator seeded with `seed`."""
        if len(self) == 0:
            raise BloodcellsError("the dataset has no images to show")
        rng = np.random.default_rng(seed)
        return rng.choice(len(self), size=min(n, len(self)), replace=False).tolist()

    def per_class_subset(self, per_class: int, seed: int = 0) -> Dataset:
        """At most `per_class` images of each class (seeded), in their original order."""
        generator = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        keep = []
        for k in range(len(self.classes)):
            idx = torch.nonzero(labels == k).flatten()
            keep.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
        return self.subset(torch.cat(keep).sort().values)


@dataclass
class Splits:
    """A dataset root read in the lab's layout: the train and test splits, one class mapping."""

    root: Path
    transform: Transform
    train: Dataset
    test: Dataset

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def problems(self) -> list[Problem]:
        return self.train.problems + self.test.problems

    def train_subset(self, per_class: int, seed: int = 0) -> Splits:
        """The same splits with at most `per_class` training images of each class (seeded)."""
        return replace(self, train=self.train.per_class_subset(per_class, seed))

    def summary(self) -> dict:
        """Classes, counts per class and split, image sizes and modes seen, problems found."""
        return {
            "root": str(self.root),
            "classes": self.classes,
            "class_to_idx": {c: i for i, c in enumerate(self.classes)},
            "counts": {"train": self.train.class_counts(), "test": self.test.class_counts()},
            "sources": {"train": self.train.sources, "test": self.test.sources},
            "transform": {"size": self.transform.size, "channels": self.transform.channels},
            "problems": [str(p) for p in self.problems],
        }


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Stored images as float32 in [0, 1] (what ToTensor gives)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def standardize(x: torch.Tensor) -> torch.Tensor:
    """The lab's per-image standardization, (x - mean) / (std + 1e-6), over each C×H×W image."""
    if len(x) == 0:
        return x
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)  # unbiased, as torch.Tensor.std() in the lab
    return (x - mean) / (std + EPS)
