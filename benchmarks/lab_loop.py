"""The lab's own training loop, the baseline every training figure is a ratio against.

ImageFolder + per-image PIL transform (grayscale or RGB, resize, ToTensor, per-image
standardization) + DataLoader (batch 8, shuffled, in the main process) feeding the model, Adam
at the model's learning rate, cross-entropy, and a dev pass at batch 8 after every epoch: the
lab notebook's code path, on torch's default threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from bloodcells.data import EPS
from bloodcells.models.registry import get_spec
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import make_model

LAB_BATCH = 8


@dataclass
class LabLoopResult:
    """Seconds from the start (model creation, first decode) to the end of each epoch, and
    dev accuracy after each."""

    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.seconds[-1]


def lab_transform(channels: int, size: int = 32) -> transforms.Compose:
    colour = transforms.Grayscale() if channels == 1 else transforms.Lambda(_rgb)
    return transforms.Compose(
        [
            colour,
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: (x - x.mean()) / (x.std() + EPS)),
        ]
    )


def _rgb(image):
    return image.convert("RGB")


def _subset(folder: datasets.ImageFolder, paths: set[str] | None):
    if paths is None:
        return folder
    keep = [i for i, (path, _) in enumerate(folder.samples) if str(Path(path)) in paths]
    return Subset(folder, keep)


def lab_loop(
    root: Path,
    model_name: str,
    epochs: int,
    channels: int = 1,
    seed: int = 0,
    train_paths: set[str] | None = None,
    dev_paths: set[str] | None = None,
    device: str = "cpu",
) -> LabLoopResult:
    """Train `model_name` the lab's way on root/train, evaluating on root/test every epoch.

    `train_paths` / `dev_paths` restrict the splits to those files (the same subsets fit gets).
    """
    config = TrainConfig(model=model_name, channels=channels, seed=seed)
    classes = [d for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith(".")]
    tf = lab_transform(channels)
    result = LabLoopResult()
    start = time.perf_counter()  # model creation counts, as in fit's timings
    model = make_model(config, len(classes)).to(device)
    torch.manual_seed(seed)
    train = _subset(datasets.ImageFolder(root / "train", tf), train_paths)
    dev = _subset(datasets.ImageFolder(root / "test", tf), dev_paths)
    train_loader = DataLoader(train, batch_size=LAB_BATCH, shuffle=True)
    dev_loader = DataLoader(dev, batch_size=LAB_BATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=get_spec(model_name).default_lr)
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in dev_loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                criterion(logits, y).item()
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
        result.seconds.append(time.perf_counter() - start)
        result.accuracy.append(correct / total)
    return result
