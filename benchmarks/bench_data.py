"""Data rows of the suite: decoding pbc-wbc (4,000 JPEGs 360×363) into 32×32 patches with an
empty cache (cold) and from the cache (warm), against the lab's per-epoch PIL decode of the
same files, and the memory 100,000 cached 32×32 patches take.

Cold means no bloodcells cache (a private, empty BLOODCELLS_CACHE); the files themselves are in
the OS page cache after the first read, as on any machine that has read them once.

    python benchmarks/bench_data.py [--data ../shared/data/pbc-wbc/all] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from lab_loop import lab_transform
from timing import median, noise
from torch.utils.data import DataLoader
from torchvision import datasets

from bloodcells.data import Transform
from bloodcells.data.cache import cache_dir
from bloodcells.data.folders import read_split, scan_split

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc-wbc" / "all"
PATCHES = 100_000
MIB = 2**20


@contextmanager
def private_cache():
    """An empty BLOODCELLS_CACHE for the block, removed after it."""
    before = os.environ.get("BLOODCELLS_CACHE")
    with tempfile.TemporaryDirectory(prefix="bloodcells-bench-") as folder:
        os.environ["BLOODCELLS_CACHE"] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                del os.environ["BLOODCELLS_CACHE"]
            else:
                os.environ["BLOODCELLS_CACHE"] = before


def lab_decode_seconds(root: Path, limit: int | None) -> float:
    """One pass of the lab's ImageFolder + DataLoader (batch 8) over the files: its per-epoch
    decoding cost."""
    folder = datasets.ImageFolder(root, lab_transform(1))
    if limit is not None:
        folder.samples = folder.samples[:limit]
    start = time.perf_counter()
    for _ in DataLoader(folder, batch_size=8):
        pass
    return time.perf_counter() - start


def data_rows(root: Path, quick: bool, say=print) -> dict:
    classes, files, _ = scan_split(root)
    limit = 1000 if quick else None
    files = files[:limit] if limit else files
    index = {c: i for i, c in enumerate(classes)}
    n = len(files)
    say(f"  data: {n} files of {root}")
    rows: list[dict] = []
    out: dict = {"files": n, "root": str(root), "rows": rows}
    transform = Transform(32, 1)
    with private_cache():
        start = time.perf_counter()
        dataset = read_split(files, classes, index, transform, [], cache=True, progress=False)
        cold = time.perf_counter() - start
        cache_bytes = sum(f.stat().st_size for f in cache_dir().glob("*.pt"))
        warm = []
        for _ in range(3):
            start = time.perf_counter()
            read_split(files, classes, index, transform, [], cache=True, progress=False)
            warm.append(time.perf_counter() - start)
    lab = [lab_decode_seconds(root, limit) for _ in range(1 if quick else 2)]
    rows.append(
        {
            "row": f"decode {n} JPEGs -> 32x32 gray, cold (lab: one epoch's decode)",
            "lab_s": median(lab),
            "bloodcells_s": cold,
            "images_per_s": n / cold,
            "lab_images_per_s": n / median(lab),
            "ratio": median(lab) / cold,
            "noise": noise(lab),
        }
    )
    rows.append(
        {
            "row": f"load {n} patches from the cache, warm",
            "lab_s": median(lab),
            "bloodcells_s": median(warm),
            "images_per_s": n / median(warm),
            "ratio": median(lab) / median(warm),
            "noise": noise(warm),
        }
    )
    per_image = dataset.images[0].numel() * dataset.images.element_size()
    rows.append(
        {
            "row": f"memory per {PATCHES:,} cached 32x32 patches",
            "memory_mib": per_image * PATCHES / MIB,
            "rgb_memory_mib": 3 * per_image * PATCHES / MIB,
            "cache_file_mib": cache_bytes / n * PATCHES / MIB,
            "training_copy_mib": 4 * per_image * PATCHES / MIB,
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(data_rows(args.data, args.quick), indent=2))


if __name__ == "__main__":
    main()
