"""bloodcells' benchmark suite (`make bench`): one table of speed ratios measured in one run.

Rows: per-epoch time of the lab's own loop (ImageFolder + DataLoader, batch 8, Adam) against
bloodcells.fit at the lab recipe for SimpleCNN, the advanced CNN and VGG16 (on a subset); each
model's floor (the same epoch at batch 256: what this machine can do) and how close fit comes
to it; the time --recipe fast takes to reach the lab loop's 5-epoch dev accuracy (advanced CNN)
against the lab loop's own time; decoding pbc-wbc cold and warm; memory per 100,000 patches.

Each ratio pairs runs of the same round, and rounds alternate their order; "range" is the
ratio's lowest and highest round, "noise" the (max - min) / median of the timings behind it.

    python benchmarks/bench.py [--quick] [--json FILE] [--rounds N] [--data D] [--wbc D]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from bench_data import DEFAULT_DATA as DEFAULT_WBC
from bench_data import data_rows
from bench_training import DEFAULT_DATA, training_rows
from timing import load_average

from bloodcells._version import versions


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(result: dict) -> str:
    """The results as one fixed-width text table."""
    header = ("row", "lab loop", "bloodcells", "ratio", "range", "noise", "floor", "of floor")
    lines = []
    for model in result.get("training", []):
        for row in model["rows"]:
            floor = row.get("floor_s")
            lines.append(
                (
                    row["row"],
                    _s(row["lab_s"]),
                    _s(row["bloodcells_s"]),
                    _x(row.get("ratio")),
                    row.get("ratio_range", row.get("reached", "")),
                    f"{100 * row['noise']:.0f}%",
                    f"{floor:.2f} s" if floor is not None else "",
                    f"{100 * row['of_floor']:.0f}%" if floor is not None else "",
                )
            )
    data = result.get("data")
    if data:
        decode, warm, memory = data["rows"]
        for row in (decode, warm):
            lines.append(
                (
                    row["row"],
                    f"{row['lab_s']:.2f} s",
                    f"{row['bloodcells_s']:.2f} s = {row['images_per_s']:,.0f} img/s",
                    _x(row["ratio"]),
                    "",
                    f"{100 * row['noise']:.0f}%",
                    "",
                    "",
                )
            )
        lines.append(
            (
                memory["row"],
                "",
                f"{memory['memory_mib']:.0f} MiB gray, {memory['rgb_memory_mib']:.0f} MiB RGB "
                f"(cache file {memory['cache_file_mib']:.0f} MiB; training adds "
                f"{memory['training_copy_mib']:.0f} MiB float32)",
                "",
                "",
                "",
                "",
                "",
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    widths[2] = min(widths[2], 28)
    out = []
    for r in [header, *lines]:
        cells = [str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in
                 enumerate(r)]  # fmt: skip
        out.append("  ".join(cells).rstrip())
        if r is header:
            out.append("-" * len(out[-1]))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="lab-layout dataset")
    parser.add_argument("--wbc", type=Path, default=DEFAULT_WBC, help="class folders of JPEGs")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and images")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write everything here")
    parser.add_argument("--only", default="training,data", help="training, data or both")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    parts = set(args.only.split(","))
    for folder in (
        args.data if "training" in parts else None,
        args.wbc if "data" in parts else None,
    ):
        if folder is not None and not folder.is_dir():
            raise SystemExit(f"{folder}: no such folder (see ../shared/data/README.md)")
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    result: dict = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "versions": versions(),
        "rounds": rounds,
        "quick": args.quick,
        "load_average_start": load_average(),
    }
    say(f"benchmarking ({'quick, ' if args.quick else ''}{rounds} round(s))")
    if "training" in parts:
        result["training"] = training_rows(args.data, args.quick, rounds, say)
    if "data" in parts:
        result["data"] = data_rows(args.wbc, args.quick, say)
    result["load_average_end"] = load_average()
    result["seconds"] = time.perf_counter() - start
    print(
        f"bloodcells benchmark: data {args.data}, torch {result['torch']}, "
        f"{result['threads']} threads, {rounds} round(s), "
        f"load average {result['load_average_start']:.1f} -> {result['load_average_end']:.1f}, "
        f"{result['seconds']:.0f} s"
    )
    print(table(result))
    print(
        "ratio: lab loop s / bloodcells s, median of paired rounds (range: lowest-highest); "
        "floor: the same epoch at batch 256 (best of 1 thread and all); "
        "of floor: floor / bloodcells"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"json: {args.json}")


if __name__ == "__main__":
    main()
