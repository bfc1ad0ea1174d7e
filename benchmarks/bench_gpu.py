"""The lab on a CUDA GPU: s/epoch of every model at the lab recipe (batch 8, 5 epochs, all the
data), eager and with torch.compile(mode="reduce-overhead") (CUDA graphs), with and without
bf16 autocast (--amp); the fast recipe's time to the lab's 5-epoch accuracy against the lab's
own DataLoader loop on the same GPU; peak GPU memory of each run. benchmarks/gpu.sh runs it.

    python benchmarks/bench_gpu.py --data D [--budget 400] [--json FILE]

Every section is timed against a budget (seconds): once it is spent, the rest is skipped and
said so, so the script ends in time; a section that fails prints its error and the rest go on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from bench_training import Clock
from lab_loop import LabLoopResult, lab_loop
from torch import nn

from bloodcells.data import Transform, load_dataset
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import fit, make_model

LAB_IMAGES = 16_742  # the lab's training set; s/epoch is also given scaled to it
MODELS = ("simple", "advanced", "vgg16")


class CompiledTraining(nn.Module):
    """`net` compiled with CUDA graphs (reduce-overhead) for training steps, eager for the dev
    pass: its batches differ in size, and a graph's output is overwritten by the next replay."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        object.__setattr__(self, "compiled", torch.compile(net, mode="reduce-overhead"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(x) if self.training else self.net(x)


DEVICE = "cuda"


def _sync() -> None:
    if DEVICE != "cpu":
        torch.cuda.synchronize()


def gpu_run(root: Path, model: str, compiled: bool = False, **settings) -> dict:
    """One fit on the GPU: per-epoch seconds, dev accuracy, peak memory, compile included."""
    channels = 3 if model == "vgg16" else 1
    splits = load_dataset(root, Transform(32, channels), progress=False)
    config = TrainConfig(model=model, channels=channels, device=DEVICE, **settings)
    net = make_model(config, len(splits.classes)).to(DEVICE)
    if compiled:
        net = CompiledTraining(net)
    _sync()
    if DEVICE != "cpu":
        torch.cuda.reset_peak_memory_stats()
    result = LabLoopResult()
    start = time.perf_counter()
    history = fit(net, splits.train, splits.test, config, [Clock(start, result)])
    _sync()
    epochs = history.column("seconds")
    steady = epochs[1:] or epochs  # the first epoch holds warm-up and compilation
    per_epoch = statistics.median(steady)
    return {
        "model": model,
        "compiled": compiled,
        "settings": settings,
        "train_images": len(splits.train),
        "epoch_seconds": epochs,
        "s_per_epoch": per_epoch,
        "s_per_epoch_at_lab_size": per_epoch * LAB_IMAGES / len(splits.train),
        "first_epoch_s": epochs[0],
        "accuracy": history.column("dev_accuracy"),
        "wall": result.seconds,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if DEVICE != "cpu" else 0,
    }


def time_to(result_wall: list[float], accuracy: list[float], target: float) -> float | None:
    return next((s for s, a in zip(result_wall, accuracy, strict=True) if a >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=400.0, help="seconds for all sections")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, no compile: a check")
    args = parser.parse_args()
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; benchmarks/bench.py is the CPU suite")
    start = time.perf_counter()
    out: dict = {
        "gpu": torch.cuda.get_device_name() if DEVICE != "cpu" else "none (dry run)",
        "torch": torch.__version__,
        "data": str(args.data),
        "runs": [],
        "skipped": [],
        "failed": [],
    }
    print(f"{out['gpu']}, torch {torch.__version__}, data {args.data}", flush=True)
    load_dataset(args.data, Transform(32, 1), progress=False)  # decode once, outside timings
    load_dataset(args.data, Transform(32, 3), progress=False)

    def section(name: str, fn):
        if time.perf_counter() - start > args.budget:
            out["skipped"].append(name)
            print(f"skipped (budget spent): {name}", flush=True)
            return None
        try:
            value = fn()
        except Exception as exc:  # a failing section must not stop the others
            out["failed"].append({"section": name, "error": repr(exc)})
            print(f"FAILED {name}: {exc!r}", flush=True)
            traceback.print_exc()
            return None
        if isinstance(value, dict) and "s_per_epoch" in value:
            out["runs"].append({"section": name, **value})
            print(
                f"{name:42s} {value['s_per_epoch']:7.3f} s/epoch "
                f"({value['s_per_epoch_at_lab_size']:6.2f} s at {LAB_IMAGES:,} images), "
                f"first epoch {value['first_epoch_s']:6.2f} s, "
                f"dev acc {value['accuracy'][-1]:.3f}, peak {value['peak_memory_mib']:,.0f} MiB",
                flush=True,
            )
        return value

    eager = {m: section(f"lab recipe, eager, {m}", lambda m=m: gpu_run(args.data, m)) for m in
             MODELS}  # fmt: skip
    target = eager["advanced"]["accuracy"][-1] if eager.get("advanced") else None
    lab = section(
        "lab's own loop (DataLoader), advanced, 5 epochs",
        lambda: {"lab": lab_loop(args.data, "advanced", 5, device=DEVICE)},
    )
    amps = (False,) if DEVICE == "cpu" else (False, True)
    for amp in amps:
        fast = section(
            f"--recipe fast{' --amp' if amp else ''}, advanced",
            lambda amp=amp: gpu_run(args.data, "advanced", recipe="fast", amp=amp),
        )
        if fast and target is not None:
            reached = time_to(fast["wall"], fast["accuracy"], target)
            line = f"  time to the lab recipe's 5-epoch accuracy {target:.3f}: "
            line += "not reached" if reached is None else f"{reached:.2f} s"
            if lab and reached:
                lab_s = lab["lab"].seconds[-1]
                line += f" (lab's loop {lab_s:.2f} s: {lab_s / reached:.1f}x sooner)"
            print(line, flush=True)
            fast["time_to_target_s"] = reached
    if DEVICE != "cpu":
        for m in ("advanced", "vgg16"):
            section(f"lab recipe, eager, --amp, {m}", lambda m=m: gpu_run(args.data, m, amp=True))
        for m in MODELS:  # last: compiling takes the longest and the budget may stop it
            section(
                f"lab recipe, compiled (reduce-overhead), {m}",
                lambda m=m: gpu_run(args.data, m, compiled=True),
            )
    if lab:
        result = lab["lab"]
        print(f"lab's own loop: {result.seconds[-1]:.2f} s for 5 epochs, acc {result.accuracy}")
        out["lab_loop"] = {"seconds": result.seconds, "accuracy": result.accuracy}
    out["seconds"] = time.perf_counter() - start
    print(f"done in {out['seconds']:.0f} s; skipped: {out['skipped'] or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"json: {args.json}")
    if out["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
