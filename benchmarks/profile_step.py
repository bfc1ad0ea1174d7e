"""Profile training steps of one model with torch.profiler: where a batch-8 step's time goes.

    python benchmarks/profile_step.py --model advanced [--batch 8] [--steps 50]
        [--threads 1] [--layout fit|nchw|channels_last] [--data ../shared/data/pbc32]

`--layout fit` (the default) and no `--threads` profile the step as bloodcells.fit runs it
(one thread and channels_last for the advanced CNN); the others profile the alternatives.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from bloodcells.data import Transform, load_dataset
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import (
    CHANNELS_LAST_MODELS,
    make_model,
    make_optimizer,
    training_threads,
)
from bloodcells.utils.devices import cpu_threads

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="advanced")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="default: as fit chooses")
    parser.add_argument("--layout", choices=("fit", "nchw", "channels_last"), default="fit")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    channels = 3 if args.model == "vgg16" else 1
    splits = load_dataset(args.data, Transform(32, channels), progress=False)
    config = TrainConfig(model=args.model, channels=channels, batch_size=args.batch)
    model = make_model(config, len(splits.classes))
    optimizer = make_optimizer(model, config)
    x, y = splits.train.standardized(), splits.train.labels
    layout = args.layout
    if layout == "fit":
        layout = "channels_last" if args.model in CHANNELS_LAST_MODELS else "nchw"
    if layout == "channels_last":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    threads = args.threads or training_threads(model, config, torch.device("cpu"))
    order = torch.randperm(len(y))

    def step(i: int) -> None:
        start = (i * args.batch) % (len(y) - args.batch)
        index = order[start : start + args.batch]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    with cpu_threads(threads):
        for i in range(20):  # warm-up: oneDNN primitives, allocator
            step(i)
        begin = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(args.steps):
                step(i)
        seconds = time.perf_counter() - begin
    print(
        f"{args.model}, batch {args.batch}, {threads or torch.get_num_threads()} thread(s), "
        f"{layout}: {1000 * seconds / args.steps:.2f} ms per step under the profiler"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
