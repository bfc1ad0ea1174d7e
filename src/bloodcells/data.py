"""Image folders in the lab's layout, decoded once into tensors, cached on disk.

ROOT/train/<class>/* and ROOT/test/<class>/*; classes are the sorted folder names of train.
Each image becomes a uint8 (or, for 16-bit sources, float16 in [0, 1]) tensor of shape C×H×W
after the lab's transform: grayscale or RGB, resize to size×size. Scaling to [0, 1] and the
per-image standardization happen on the training device, batch by batch or all at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bloodcells.errors import DataError, DataWarning

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
SPLITS = ("train", "test")
LAYOUT = "expected ROOT/train/<class>/<image> and ROOT/test/<class>/<image>"
CACHE_FORMAT = 1  # bump when the cached tensors change meaning
EPS = 1e-6  # the lab's samplewise_standardize epsilon


@dataclass(frozen=True)
class Transform:
    """The lab's image transform: colour mode and square size (scaling/standardizing is fixed)."""

    size: int = 32
    channels: int = 1  # 1: grayscale (PIL "L"), 3: RGB

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), not {self.channels}")
        if self.size < 4:
            raise DataError(f"image size must be at least 4 pixels, not {self.size}")


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
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)  # unbiased, as torch.Tensor.std() in the lab
    return (x - mean) / (std + EPS)


def load_dataset(
    root: str | Path, transform: Transform | None = None, cache: bool = True
) -> Splits:
    """Read ROOT/train and ROOT/test into tensors, from the on-disk cache when nothing changed."""
    transform = transform or Transform()
    root = Path(root).expanduser()
    check_layout(root)
    classes, train_files, problems = scan_split(root / "train")
    test_classes, test_files, test_problems = scan_split(root / "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(
            f"{root / 'test'}: class folder(s) {', '.join(unknown)} are not in "
            f"{root / 'train'}; the train split must have every class the test split has"
        )
    index = {c: i for i, c in enumerate(classes)}
    train = read_split(train_files, classes, index, transform, problems, cache)
    test = read_split(test_files, classes, index, transform, test_problems, cache)
    for p in train.problems + test.problems:
        warnings.warn(str(p), DataWarning, stacklevel=2)
    if len(train) == 0:
        raise DataError(f"{root / 'train'}: no readable images; {LAYOUT}")
    return Splits(root, transform, train, test)


def check_layout(root: Path) -> None:
    """Raise a DataError that says what to do when `root` is not in the lab's layout."""
    if not root.exists():
        raise DataError(f"{root}: no such folder; {LAYOUT}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; {LAYOUT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if not missing:
        return
    if len(missing) == 2 and any(_image_files(d) for d in _subdirs(root)):
        raise DataError(
            f"{root}: class folders but no train/test split; move each class's images into "
            f"{root}/train/<class>/ and {root}/test/<class>/ (e.g. 80% / 20% per class)"
        )
    raise DataError(f"{root / missing[0]}: missing split folder; {LAYOUT}")


def scan_split(split_dir: Path) -> tuple[list[str], list[tuple[Path, str]], list[Problem]]:
    """Class names, (file, class) pairs and problems (empty classes) of one split folder."""
    classes = [d.name for d in _subdirs(split_dir)]
    if not classes:
        raise DataError(f"{split_dir}: no class folders; {LAYOUT}")
    files: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    for cls in classes:
        found = _image_files(split_dir / cls)
        if not found:
            problems.append(Problem(str(split_dir / cls), "empty class folder (no images)"))
        files.extend((f, cls) for f in found)
    return classes, files, problems


def read_split(
    files: list[tuple[Path, str]],
    classes: list[str],
    index: dict[str, int],
    transform: Transform,
    problems: list[Problem],
    cache: bool = True,
) -> Dataset:
    """Decode the files of one split (or load them from the cache) into a Dataset."""
    cache_file = cache_dir() / f"{cache_key(files, transform)}.pt" if cache else None
    dataset = None
    if cache_file is not None and cache_file.exists():
        try:
            dataset = _from_cache(cache_file, classes)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            cache_file.unlink(missing_ok=True)
    if dataset is None:
        dataset = decode_files(files, classes, index, transform)
        if cache_file is not None:
            _to_cache(dataset, cache_file)
    dataset.problems = problems + dataset.problems
    return dataset


def decode_files(
    files: list[tuple[Path, str]],
    classes: list[str],
    index: dict[str, int],
    transform: Transform,
) -> Dataset:
    """Decode every file once; unreadable files are skipped and listed in `problems`."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda f: _try_decode(f[0], transform), files))
    arrays, labels, paths, sources, problems = [], [], [], Counter(), []
    for (path, cls), result in zip(files, decoded, strict=True):
        if isinstance(result, str):
            problems.append(Problem(str(path), f"skipped, cannot be read as an image ({result})"))
            continue
        array, source = result
        arrays.append(array)
        labels.append(index[cls])
        paths.append(str(path))
        sources[source] += 1
    return Dataset(
        images=_stack(arrays, transform),
        labels=torch.tensor(labels, dtype=torch.long),
        classes=list(classes),
        paths=paths,
        sources=dict(sorted(sources.items())),
        problems=problems,
    )


def decode_image(path: str | Path, transform: Transform) -> tuple[np.ndarray, str]:
    """One image as a C×H×W array (uint8, or float32 in [0, 1] for 16-bit) and 'mode WxH'."""
    with Image.open(path) as im:
        im.load()
        source = f"{im.mode} {im.width}x{im.height}"
        size = (transform.size, transform.size)
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            array = _high_bit_depth(im, size)
        else:
            im = im.convert("L" if transform.channels == 1 else "RGB")
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            array = np.asarray(im)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if array.shape[0] != transform.channels:
        array = np.repeat(array, transform.channels, axis=0)
    return np.ascontiguousarray(array), source


def _high_bit_depth(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A 16-bit (or float) grayscale image as float32 in [0, 1], resized in float precision."""
    array = np.asarray(im, dtype=np.float32)
    if im.mode != "F":
        array = array / 65535.0
    resized = Image.fromarray(np.clip(array, 0.0, 1.0), mode="F")
    if resized.size != size:
        resized = resized.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def cache_home() -> Path:
    """bloodcells' cache folder: $BLOODCELLS_CACHE, else the user's cache folder."""
    env = os.environ.get("BLOODCELLS_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bloodcells"))


def cache_dir() -> Path:
    """Where decoded datasets are cached."""
    return cache_home() / "datasets"


def cache_key(files: Iterable[tuple[Path, str]], transform: Transform) -> str:
    """A hash of the file list, sizes, mtimes and the transform: any change makes a new key."""
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, transform.size, transform.channels]).encode())
    for path, cls in files:
        st = path.stat()
        h.update(f"{path.resolve()}\0{cls}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _try_decode(path: Path, transform: Transform) -> tuple[np.ndarray, str] | str:
    try:
        return decode_image(path, transform)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _stack(arrays: list[np.ndarray], transform: Transform) -> torch.Tensor:
    if not arrays:
        return torch.zeros((0, transform.channels, transform.size, transform.size), torch.uint8)
    if all(a.dtype == np.uint8 for a in arrays):
        return torch.from_numpy(np.stack(arrays))
    unit = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in arrays]
    return torch.from_numpy(np.stack(unit)).to(torch.float16)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )


def _image_files(folder: Path) -> list[Path]:
    """Image files by suffix; hidden files (.DS_Store, ._* resource forks) are ignored."""
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )


def _to_cache(dataset: Dataset, cache_file: Path) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "images": dataset.images,
        "labels": dataset.labels,
        "paths": dataset.paths,
        "sources": dataset.sources,
        "problems": [[p.path, p.message] for p in dataset.problems],
    }
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, cache_file)


def _from_cache(cache_file: Path, classes: list[str]) -> Dataset:
    payload = torch.load(cache_file, weights_only=True)
    return Dataset(
        images=payload["images"],
        labels=payload["labels"],
        classes=list(classes),
        paths=list(payload["paths"]),
        sources=dict(payload["sources"]),
        problems=[Problem(path, message) for path, message in payload["problems"]],
    )
