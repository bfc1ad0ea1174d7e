"""Throughput of `bloodcells predict` against the lab's loop and against decoding alone.

Three ways through the same folder of JPEGs (../shared/data/pbc-wbc/all, 4,000 images of
360×363 by default), all to grayscale 32×32 with PIL bilinear, alternating so that machine
noise hits each alike; the median of the rounds is reported:

- predict: what `bloodcells predict` does: find the files, decode in a thread pool one chunk
  ahead of the model, standardize, run the advanced CNN, flag, write the CSV;
- lab loop: torchvision ImageFolder + DataLoader (batch 8) with the lab's transform
  (Grayscale, Resize, ToTensor, per-image standardization), model forward only;
- decode only: PIL open + convert + resize and nothing else, the floor of this machine; once
  in one thread and once in the same thread pool predict uses (the fair floor for predict).

Wall-clock images/s and their ratios are the figures asked for; CPU milliseconds per image
are printed too, because on a machine shared with other work they are far steadier.

The model is an untrained advanced CNN unless --model names a run folder or an exported file:
the work per image is the same. PIL's Image.draft (JPEG DCT downscaling) is not used: it
changes the pixels, so predictions would no longer be those of the training preprocessing.

    python benchmarks/bench_predict.py [--data DIR] [--rounds 2] [--model RUN] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from bloodcells.data import EPS, Transform
from bloodcells.data.inputs import find_images
from bloodcells.inference.csv_output import write_predictions
from bloodcells.inference.predictor import CHUNK, Predictor
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import make_model
from bloodcells.utils.devices import decode_workers

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc-wbc" / "all"
SIZE = 32


def decode_one(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)


def decode_only_seconds(files: list[str], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for f in files:
            decode_one(f)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(decode_one, files, chunksize=64):
                pass
    return time.perf_counter() - start


def lab_loop_seconds(root: Path, model: torch.nn.Module) -> float:
    tf = transforms.Compose(
        [
            transforms.Grayscale(),
            transforms.Resize((SIZE, SIZE)),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: (x - x.mean()) / (x.std() + EPS)),
        ]
    )
    start = time.perf_counter()
    loader = DataLoader(datasets.ImageFolder(root, tf), batch_size=8)
    model.eval()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    return time.perf_counter() - start


def predict_seconds(root: Path, predictor: Predictor, out: Path) -> float:
    start = time.perf_counter()
    found = find_images([root])
    write_predictions(predictor, found.files, out / "predictions.csv", CHUNK, overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=Path, help="A run folder or exported file.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder (see ../shared/data/README.md)")
    torch.manual_seed(0)
    if args.model:
        predictor = Predictor.from_path(args.model)
        model = None
    else:
        model = make_model(TrainConfig(model="advanced"), 4).eval()
        predictor = Predictor.from_model(model, ["a", "b", "c", "d"], Transform(SIZE, 1))
    if predictor.transform != Transform(SIZE, 1):
        raise SystemExit("the benchmark's references are grayscale 32×32; pick such a model")
    lab_model = model if model is not None else make_model(TrainConfig(model="advanced"), 4)
    files = find_images([args.data]).files
    workers = decode_workers()
    decode_only_seconds(files[:200], 1)  # warm the file cache and PIL
    times: dict[str, list[float]] = {"predict": [], "lab": [], "decode1": [], "decodeN": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "predict": lambda: predict_seconds(args.data, predictor, Path(tmp)),
            "lab": lambda: lab_loop_seconds(args.data, lab_model),
            "decode1": lambda: decode_only_seconds(files, 1),
            "decodeN": lambda: decode_only_seconds(files, workers),
        }
        for _ in range(args.rounds):
            for key, run in runs.items():
                start = time.process_time()
                times[key].append(run())
                cpu[key].append(time.process_time() - start)
    n = len(files)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    # CPU time per image: steadier than wall time on a machine that others are using too
    cpu_ms = {k: 1000 * statistics.median(v) / n for k, v in cpu.items()}
    result = {
        "images": n,
        "data": str(args.data),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "decode_workers": workers,
        "rounds": args.rounds,
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "cpu_ms_per_image": {k: round(v, 4) for k, v in cpu_ms.items()},
        "seconds": times,
        "predict_vs_decode_only_threads": rate["predict"] / rate["decodeN"],
        "predict_vs_decode_only_1_thread": rate["predict"] / rate["decode1"],
        "predict_vs_lab_loop": rate["predict"] / rate["lab"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{n} images in {args.data}, {args.rounds} rounds (median), {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, decode workers {workers}")  # fmt: skip
    labels = {
        "predict": "bloodcells predict (CSV written)",
        "lab": "lab loop (ImageFolder + DataLoader, batch 8)",
        "decode1": "decode only, 1 thread",
        "decodeN": f"decode only, {workers} threads",
    }
    for key, label in labels.items():
        print(f"{label:46s} {rate[key]:8.1f} images/s  {cpu_ms[key]:6.3f} CPU ms/image")
    ratios = (
        (f"predict / decode only ({workers} threads)", "predict_vs_decode_only_threads"),
        ("predict / decode only (1 thread)", "predict_vs_decode_only_1_thread"),
        ("predict / lab loop", "predict_vs_lab_loop"),
    )
    for label, key in ratios:
        print(f"{label:46s} {result[key]:8.2f}")


if __name__ == "__main__":
    main()
