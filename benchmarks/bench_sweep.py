"""A sweep's training time: K seeds of the advanced CNN stacked (fit_stacked) against K fits.

Both do exactly what a sweep does per run: one epoch at batch 8 on the same data, then the dev
pass, with the same thread setting fit uses (one thread for the lab's models on a CPU). The
headline is 8 seeds, 1 epoch each; then how the ratio grows with the stack size K. A stacked
run's time is the stack's wall time divided by K (what a sweep pays per run).

    python benchmarks/bench_sweep.py [--data ../shared/data/pbc32] [--seeds 8]
        [--ks 1,2,4,8,16] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bloodcells.data import Transform, load_dataset
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import fit, make_model, make_optimizer
from bloodcells.training.stacked.fit import Member, fit_stacked

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc32"


def config(seed: int, batch_size: int) -> TrainConfig:
    return TrainConfig(model="advanced", epochs=1, batch_size=batch_size, seed=seed, device="cpu")


def sequential_seconds(splits, seeds: list[int], batch_size: int) -> list[float]:
    """Each seed trained alone with fit, one after another: seconds per run."""
    times = []
    for seed in seeds:
        c = config(seed, batch_size)
        start = time.perf_counter()
        fit(make_model(c, len(splits.classes)), splits.train, splits.test, c)
        times.append(time.perf_counter() - start)
    return times


def stacked_seconds(splits, seeds: list[int], batch_size: int) -> float:
    """All seeds trained as one stack: the stack's wall time (model building included)."""
    start = time.perf_counter()
    members = []
    for seed in seeds:
        c = config(seed, batch_size)
        model = make_model(c, len(splits.classes))
        members.append(Member(model, make_optimizer(model, c), c))
    fit_stacked(members, splits.train, splits.test)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=8, help="the headline stack size")
    parser.add_argument("--ks", default="1,2,4,8,16", help="stack sizes for the growth table")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="repeat and take medians")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder (see ../shared/data/README.md)")
    splits = load_dataset(args.data, Transform(32, 1))
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    seeds = list(range(args.seeds))
    alone_rounds, stack_rounds = [], []
    for _ in range(args.rounds):  # alternating, so machine noise hits both alike
        alone_rounds.append(sum(sequential_seconds(splits, seeds, args.batch_size)))
        stack_rounds.append(stacked_seconds(splits, seeds, args.batch_size))
    alone_s, stack_s = statistics.median(alone_rounds), statistics.median(stack_rounds)
    per_run_alone = alone_s / len(seeds)

    growth = []
    for k in ks:
        ks_seeds = list(range(100, 100 + k))  # other seeds than the headline's
        stack_k = statistics.median(
            stacked_seconds(splits, ks_seeds, args.batch_size) for _ in range(args.rounds)
        )
        growth.append(
            {
                "k": k,
                "stack_seconds": stack_k,
                "seconds_per_run": stack_k / k,
                "ratio": per_run_alone / (stack_k / k),
            }
        )
    result = {
        "data": str(args.data),
        "train_images": len(splits.train),
        "dev_images": len(splits.test),
        "model": "advanced",
        "batch_size": args.batch_size,
        "epochs": 1,
        "seeds": len(seeds),
        "sequential_seconds": alone_s,
        "stacked_seconds": stack_s,
        "ratio": alone_s / stack_s,
        "sequential_seconds_per_run": per_run_alone,
        "growth": growth,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "rounds": args.rounds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"data {args.data} ({len(splits.train)} train, {len(splits.test)} dev), advanced CNN, "
        f"batch {args.batch_size}, 1 epoch; torch {torch.__version__}, {os.cpu_count()} cores, "
        f"load average {load_before:.1f} before"
    )
    print(f"{len(seeds)} seeds one after another (fit): {alone_s:7.1f} s  (rounds: {alone_rounds})")
    print(
        f"{len(seeds)} seeds stacked (fit_stacked):    {stack_s:7.1f} s  (rounds: {stack_rounds})"
    )
    print(f"speed-up: {alone_s / stack_s:.2f}x")
    print(f"\nper run, alone: {per_run_alone:.2f} s; stacked, by stack size K:")
    print("    K   stack s   s per run   speed-up")
    for g in growth:
        print(
            f"{g['k']:5d} {g['stack_seconds']:9.1f} {g['seconds_per_run']:11.2f} {g['ratio']:9.2f}x"
        )


if __name__ == "__main__":
    main()
