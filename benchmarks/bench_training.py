"""Training speed of bloodcells.fit against the lab's own loop, as a ratio measured in one run.

The baseline is the lab's code path: ImageFolder + per-sample PIL transform + DataLoader
(batch 8, shuffle) feeding the same advanced CNN with the same optimizer. Both train the same
number of epochs on the same folder, alternating, so machine noise hits both alike.

    python benchmarks/bench_training.py [--data ../shared/data/pbc32] [--epochs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from bloodcells.data import EPS, Transform, load_dataset
from bloodcells.train import TrainConfig, fit, make_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc32"


def lab_loop_seconds(root: Path, epochs: int, model: nn.Module) -> float:
    """The lab's loop (train + dev pass per epoch), timed from the first image decode."""
    tf = transforms.Compose(
        [
            transforms.Grayscale(),
            transforms.Resize((32, 32)),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: (x - x.mean()) / (x.std() + EPS)),
        ]
    )
    start = time.perf_counter()
    train = DataLoader(datasets.ImageFolder(root / "train", tf), batch_size=8, shuffle=True)
    dev = DataLoader(datasets.ImageFolder(root / "test", tf), batch_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, y in dev:
                criterion(model(x), y).item()
    return time.perf_counter() - start


def bloodcells_seconds(root: Path, epochs: int) -> float:
    """bloodcells.fit on the same data, timed from loading (a warm decode cache)."""
    start = time.perf_counter()
    splits = load_dataset(root, Transform(32, 1))
    config = TrainConfig(model="advanced", epochs=epochs, device="cpu")
    fit(make_model(config, len(splits.classes)), splits.train, splits.test, config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder (see ../shared/data/README.md)")
    load_dataset(args.data, Transform(32, 1))  # fill the decode cache once, as a user's 1st run
    lab, ours = [], []
    for _ in range(args.rounds):
        config = TrainConfig(model="advanced")
        lab.append(lab_loop_seconds(args.data, args.epochs, make_model(config, 4)))
        ours.append(bloodcells_seconds(args.data, args.epochs))
    lab_s, ours_s = statistics.median(lab), statistics.median(ours)
    print(f"data {args.data}, advanced CNN, batch 8, {args.epochs} epochs, {args.rounds} rounds")
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"lab loop (ImageFolder + DataLoader): {lab_s:7.2f} s  (runs: {lab})")
    print(f"bloodcells fit (tensors on device):  {ours_s:7.2f} s  (runs: {ours})")
    print(f"speed-up: {lab_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
