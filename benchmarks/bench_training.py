"""Training rows of the suite: per-epoch time of the lab's loop against bloodcells.fit for each
model, each model's floor (the same epoch at a large batch), and the time the fast recipe takes
to reach the lab loop's 5-epoch dev accuracy. Every ratio pairs runs of one round; rounds
alternate their order (timing.alternate), so a slow spell of a shared machine hits both sides.

    python benchmarks/bench_training.py [--data ../shared/data/pbc32] [--quick]
(`make bench` runs these rows inside benchmarks/bench.py's table.)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab_loop import LabLoopResult, lab_loop
from timing import Ratio, alternate, load_average, median, noise

from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import fit, make_model
from bloodcells.training.records import Callback
from bloodcells.utils.devices import cpu_threads

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc32"
FLOOR_BATCH = 256


@dataclass
class Plan:
    """How one model is measured: epochs per run, and subsets (images per class) if any."""

    model: str
    channels: int
    epochs: int
    train_per_class: int | None = None
    dev_per_class: int | None = None

    def describe(self, splits: Splits) -> str:
        train, dev = self.subsets(splits)
        return f"{len(train)} train / {len(dev)} dev images, {self.epochs} epoch(s) per run"

    def subsets(self, splits: Splits):
        train, dev = splits.train, splits.test
        if self.train_per_class is not None:
            train = train.per_class_subset(self.train_per_class, 0)
        if self.dev_per_class is not None:
            dev = dev.per_class_subset(self.dev_per_class, 0)
        return train, dev


# The lab's 5 epochs (whose accuracy is the fast recipe's target); VGG16 on a subset.
PLANS = {
    "simple": Plan("simple", 1, 5),
    "advanced": Plan("advanced", 1, 5),
    "vgg16": Plan("vgg16", 3, 2, train_per_class=40, dev_per_class=50),
}
QUICK_PLANS = {
    "simple": Plan("simple", 1, 5),
    "advanced": Plan("advanced", 1, 5),
    "vgg16": Plan("vgg16", 3, 1, train_per_class=16, dev_per_class=25),
}


class Clock(Callback):
    """Seconds since `start` and dev accuracy at the end of every epoch."""

    def __init__(self, start: float, result: LabLoopResult) -> None:
        self.start, self.result = start, result

    def on_epoch_end(self, state) -> None:
        self.result.seconds.append(time.perf_counter() - self.start)
        self.result.accuracy.append(state.history.last.dev_accuracy)


def fit_run(root: Path, plan: Plan, threads: int | None = None, **settings) -> LabLoopResult:
    """bloodcells.fit from a warm decode cache: seconds from load_dataset to each epoch's end.

    `settings` go to TrainConfig (epochs: the plan's unless given; None: the recipe's).
    """
    result = LabLoopResult()
    start = time.perf_counter()
    splits = load_dataset(root, Transform(32, plan.channels), progress=False)
    train, dev = plan.subsets(splits)
    settings = {"epochs": plan.epochs} | settings
    config = TrainConfig(model=plan.model, channels=plan.channels, device="cpu", **settings)
    with cpu_threads(threads):
        fit(make_model(config, len(splits.classes)), train, dev, config, [Clock(start, result)])
    return result


def per_epoch(runs: list[LabLoopResult]) -> list[float]:
    return [r.total / len(r.seconds) for r in runs]


def measure_model(root: Path, plan: Plan, rounds: int, say=print) -> dict:
    """Lab loop vs fit at the lab recipe, and the floor; for the advanced CNN also the fast
    recipe's time to the lab loop's accuracy. Raw runs and the summary row(s)."""
    splits = load_dataset(root, Transform(32, plan.channels), progress=False)
    train, dev = plan.subsets(splits)
    subset = plan.train_per_class is not None
    train_paths = set(train.paths) if subset else None
    dev_paths = set(dev.paths) if plan.dev_per_class is not None else None
    say(f"  {plan.model}: {plan.describe(splits)}, {rounds} round(s)")
    floor_epochs = plan.epochs  # the same fixed costs (loading, model) per epoch as "fit"
    jobs = {
        "lab": lambda: lab_loop(
            root, plan.model, plan.epochs, plan.channels, 0, train_paths, dev_paths
        ),
        "fit": lambda: fit_run(root, plan),
        "floor-1-thread": lambda: fit_run(
            root, plan, threads=1, epochs=floor_epochs, batch_size=FLOOR_BATCH
        ),
        "floor-all-threads": lambda: fit_run(
            root, plan, epochs=floor_epochs, batch_size=FLOOR_BATCH
        ),
    }
    if plan.model == "advanced":
        jobs["fast"] = lambda: fit_run(root, plan, recipe="fast", epochs=None)
    load_before = load_average()
    raw = alternate(jobs, rounds)
    load_after = load_average()
    lab_s, fit_s = per_epoch(raw["lab"]), per_epoch(raw["fit"])
    floors = {k: per_epoch(raw[k]) for k in ("floor-1-thread", "floor-all-threads")}
    floor_name = min(floors, key=lambda k: median(floors[k]))
    floor = median(floors[floor_name])
    ratio = Ratio.paired(lab_s, fit_s)
    rows = [
        {
            "row": f"epoch {plan.model} (batch 8{', subset' if subset else ''})",
            "lab_s": median(lab_s),
            "bloodcells_s": median(fit_s),
            "ratio": ratio.median,
            "ratio_range": ratio.spread,
            "noise": max(noise(lab_s), noise(fit_s)),
            "floor_s": floor,
            "floor_threads": floor_name,
            "of_floor": floor / median(fit_s),
        }
    ]
    if "fast" in raw:
        rows.append(time_to_accuracy_row(raw["lab"], raw["fast"], plan))
    return {
        "model": plan.model,
        "plan": asdict(plan),
        "train_images": len(train),
        "dev_images": len(dev),
        "load_average": [load_before, load_after],
        "runs": {k: [asdict(r) for r in v] for k, v in raw.items()},
        "rows": rows,
    }


def time_to(result: LabLoopResult, target: float) -> float | None:
    """Seconds until the first epoch whose dev accuracy reaches `target` (None: never)."""
    return next(
        (s for s, a in zip(result.seconds, result.accuracy, strict=True) if a >= target), None
    )


def time_to_accuracy_row(lab: list[LabLoopResult], fast: list[LabLoopResult], plan: Plan) -> dict:
    target = lab[0].accuracy[-1]  # the lab loop is seeded: the same accuracy every round
    lab_s = [r.total for r in lab]
    fast_s = [time_to(r, target) for r in fast]
    reached = [s for s in fast_s if s is not None]
    row = {
        "row": f"time to lab's {plan.epochs}-epoch acc {target:.3f}, {plan.model}, --recipe fast",
        "target": target,
        "lab_s": median(lab_s),
        "bloodcells_s": median(reached) if reached else None,
        "fast_final_accuracy": [r.accuracy[-1] for r in fast],
        "reached": f"{len(reached)}/{len(fast_s)} rounds",
        "noise": max(noise(lab_s), noise(reached) if reached else 0.0),
    }
    if len(reached) == len(fast_s):
        ratio = Ratio.paired(lab_s, fast_s)
        row |= {"ratio": ratio.median, "ratio_range": ratio.spread}
    return row


def training_rows(root: Path, quick: bool, rounds: int, say=print) -> list[dict]:
    plans = QUICK_PLANS if quick else PLANS
    load_dataset(root, Transform(32, 1), progress=False)  # fill the decode cache once, as a
    load_dataset(root, Transform(32, 3), progress=False)  # user's first run would
    return [measure_model(root, plan, rounds, say) for plan in plans.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    print(json.dumps(training_rows(args.data, args.quick, rounds), indent=2))


if __name__ == "__main__":
    main()
