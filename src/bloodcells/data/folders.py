"""Image folders in the lab's layout, decoded once into a Dataset per split, cached on disk.

ROOT/train/<class>/* and ROOT/test/<class>/*; classes are the sorted folder names of train.
Each image becomes a uint8 (or, for 16-bit sources, float16 in [0, 1]) tensor of shape C×H×W
after the lab's transform: grayscale or RGB, resize to size×size. Scaling to [0, 1] and the
per-image standardization happen on the training device, batch by batch or all at once.
Nothing is skipped silently: unreadable or unsupported files, empty classes and classes with no
test images are listed as Problems (and warned about); only hidden files are ignored. Only
regular files are opened: a named pipe, socket, device or broken link is listed, never read.
Every path a Dataset holds is absolute, below the resolved ROOT, whatever the working folder.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bloodcells.data.cache import cache_dir, cache_key, load_cached, save_cached
from bloodcells.data.dataset import Dataset, Problem, Splits, Transform
from bloodcells.errors import DataError, DataWarning, os_reason
from bloodcells.utils.devices import decode_workers
from bloodcells.utils.validation import MIN_IMAGE_SIZE

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
SPLITS = ("train", "test")
LAYOUT = "expected ROOT/train/<class>/<image> and ROOT/test/<class>/<image>"
# Training makes a float32 standardized copy of the stored uint8 images: 1 + 4 bytes per value.
BYTES_PER_VALUE = 5
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})  # Windows' hidden bookkeeping files
# UnidentifiedImageError is an OSError; PIL's pixel limit stays on and a bomb is skipped, also
# one over the limit that PIL only warns about (its warning would not say which file it is)
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
# warnings.catch_warnings changes process-wide state: one decoding thread at a time inside it
_OPEN_LOCK = threading.Lock()
ProgressCallback = Callable[[int, int], None]  # (done, total)


def load_dataset(
    root: str | Path,
    transform: Transform | None = None,
    cache: bool = True,
    progress: ProgressCallback | None = None,
) -> Splits:
    """Read ROOT/train and ROOT/test into tensors, from the on-disk cache when nothing changed.

    Problems are warned about as DataWarnings; a split that cannot be trained or evaluated on
    (no readable images, fewer than two classes in train) is a DataError. While a split is
    decoded (not read from the cache), `progress(done, total)` hears (0, total) first and then
    each decoded image; it starts again at 0 for the test split.
    """
    transform = transform or Transform()
    root = Path(root).expanduser()
    check_layout(root)
    root = root.resolve()  # paths that outlive the command must not depend on the working folder
    classes, train_files, problems = scan_split(root / "train")
    test_classes, test_files, test_problems = scan_split(root / "test")
    _check_test_classes(root, classes, test_classes)
    check_memory(len(train_files) + len(test_files), transform)
    index = {c: i for i, c in enumerate(classes)}
    train = read_split(train_files, classes, index, transform, problems, cache, progress)
    _warn(train.problems)
    _check_trainable(root / "train", train)
    test = read_split(test_files, classes, index, transform, test_problems, cache, progress)
    test.problems += _untested_classes(root / "test", train, test)
    _warn(test.problems)
    if len(test) == 0:
        raise DataError(f"{root / 'test'}: no readable images, nothing to evaluate on; {LAYOUT}")
    return Splits(root, transform, train, test)


def _check_test_classes(root: Path, classes: list[str], test_classes: list[str]) -> None:
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(
            f"{root / 'test'}: class folder(s) {', '.join(unknown)} are not in "
            f"{root / 'train'}; the train split must have every class the test split has"
        )


def _check_trainable(train_dir: Path, train: Dataset) -> None:
    """Raise a DataError unless the train split has images of at least two classes."""
    if len(train) == 0:
        raise DataError(f"{train_dir}: no readable images; {LAYOUT}")
    present = [c for c, n in train.class_counts().items() if n]
    if len(present) < 2:
        raise DataError(
            f"a classifier needs at least two classes; found only {present[0]} in {train_dir}"
        )


def _untested_classes(test_dir: Path, train: Dataset, test: Dataset) -> list[Problem]:
    """A Problem for each class with train images but no readable test images."""
    tested = test.class_counts()
    return [
        Problem(str(test_dir), f"no images of class {cls} (it is in train)")
        for cls, n in train.class_counts().items()
        if n and not tested[cls]
    ]


def _warn(problems: list[Problem]) -> None:
    for p in problems:
        warnings.warn(str(p), DataWarning, stacklevel=3)


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable, else physical memory), None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(n_images: int, transform: Transform) -> None:
    """Raise a DataError, before any decoding, when `n_images` would not fit in memory."""
    available = available_memory()
    needed = n_images * transform.channels * transform.size**2 * BYTES_PER_VALUE
    if available is None or needed <= available:
        return
    fits = math.isqrt(available // max(1, n_images * transform.channels * BYTES_PER_VALUE))
    advice = f"use a smaller Transform size (at most {fits})"
    if fits < MIN_IMAGE_SIZE:
        advice = "use fewer images"
    raise DataError(
        f"{n_images} images of {transform.channels}×{transform.size}×{transform.size} needs "
        f"about {needed / 1e9:.2f} GB of memory (the stored images and the float32 copy training "
        f"makes), but only {available / 1e9:.2f} GB is available; {advice}"
    )


def check_layout(root: Path) -> None:
    """Raise a DataError that says what to do when `root` is not in the lab's layout."""
    if not root.exists():
        raise DataError(f"{root}: no such folder; {LAYOUT}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; {LAYOUT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if not missing:
        return
    if len(missing) == 2 and any(_image_files(d) for d in subdirs(root)):
        raise DataError(
            f"{root}: class folders but no train/test split; move each class's images into "
            f"{root}/train/<class>/ and {root}/test/<class>/ (e.g. 80% / 20% per class)"
        )
    raise DataError(f"{root / missing[0]}: missing split folder; {LAYOUT}")


def scan_split(split_dir: Path) -> tuple[list[str], list[tuple[Path, str]], list[Problem]]:
    """Class names, (file, class) pairs and problems (empty classes, skipped files) of a split.

    Files directly in the split folder belong to no class and are ignored (e.g. a README).
    """
    classes = [d.name for d in subdirs(split_dir)]
    if not classes:
        raise DataError(f"{split_dir}: no class folders; {LAYOUT}")
    files: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    for cls in classes:
        found = _image_files(split_dir / cls)
        problems.extend(_skipped(split_dir / cls))
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
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Decode the files of one split (or load them from the cache) into a Dataset."""
    cache_file = cache_dir() / f"{cache_key(files, transform, classes)}.pt" if cache else None
    dataset = load_cached(cache_file, classes, files) if cache_file is not None else None
    if dataset is None:
        dataset = decode_files(files, classes, index, transform, progress)
        if cache_file is not None:
            save_cached(dataset, cache_file)
    dataset.problems = problems + dataset.problems
    return dataset


def decode_files(
    files: list[tuple[Path, str]],
    classes: list[str],
    index: dict[str, int],
    transform: Transform,
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Decode every file once; unreadable files are skipped and listed in `problems`."""
    total = len(files)
    decoded = []
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        for result in pool.map(lambda f: _try_decode(f[0], transform), files):
            decoded.append(result)
            if progress:
                progress(len(decoded), total)
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


def decode_image(path: str | Path | BinaryIO, transform: Transform) -> tuple[np.ndarray, str]:
    """One image as a C×H×W array (uint8, or float32 in [0, 1] for 16-bit) and 'mode WxH'.

    A path must name a regular file (or a link to one); anything else is an OSError, unopened.
    """
    if not isinstance(path, str | os.PathLike):
        return _decode(path, transform)
    with open_regular(path) as fp:
        try:
            return _decode(fp, transform)
        except UnidentifiedImageError:  # PIL names the file object, not the file
            raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}") from None


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading, when it is a regular file (or a link to one); else an OSError
    that says what it is. A named pipe is never opened, so never waited on."""
    reason = not_regular(path)
    if reason:
        raise OSError(reason)

    def nonblocking(name: str, flags: int) -> int:
        # a file swapped for a named pipe since the check must not block the open
        fd = os.open(name, flags | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError("not a regular file (it changed while being read)")
        return fd

    return open(path, "rb", opener=nonblocking)


def not_regular(path: str | Path) -> str | None:
    """None for a regular file (or a link to one); else why not, e.g. "a broken link"."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "no such file"
    except OSError as exc:
        return os_reason(exc)
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a device",
        stat.S_ISBLK: "a device",
    }
    kind = next((kind for test, kind in kinds.items() if test(mode)), "a special file")
    return f"{kind}, not a regular file"


def _open_image(fp: BinaryIO) -> Image.Image:
    """Image.open, with PIL's decompression-bomb warning raised as an error (file unread)."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(fp)


def _decode(fp: BinaryIO, transform: Transform) -> tuple[np.ndarray, str]:
    with _open_image(fp) as im:
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


def _try_decode(path: Path, transform: Transform) -> tuple[np.ndarray, str] | str:
    try:
        return decode_image(path, transform)
    except DECODE_ERRORS as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _stack(arrays: list[np.ndarray], transform: Transform) -> torch.Tensor:
    if not arrays:
        return torch.zeros(0, transform.channels, transform.size, transform.size, dtype=torch.uint8)
    if all(a.dtype == np.uint8 for a in arrays):
        return torch.from_numpy(np.stack(arrays))
    unit = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in arrays]
    return torch.from_numpy(np.stack(unit)).to(torch.float16)


def subdirs(folder: Path) -> list[Path]:
    """The folders in `folder` whose names do not start with ".", sorted by name."""
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted."""
    return sorted(f for f in folder.iterdir() if is_image_file(f))


def is_image_file(path: Path) -> bool:
    """A file with an image suffix that is not hidden (.DS_Store, ._* resource forks)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(path.name) and path.is_file()


def _skipped(folder: Path) -> list[Problem]:
    """A Problem for each visible entry of a class folder that is not an image file (a folder,
    a named pipe, a broken link, another type of file)."""
    supported = ", ".join(sorted(IMAGE_SUFFIXES))
    problems = []
    for entry in sorted(folder.iterdir()):
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            problems.append(Problem(str(entry), "skipped, a folder inside a class folder"))
        elif reason := not_regular(entry):
            problems.append(Problem(str(entry), f"skipped, {reason}"))
        elif entry.suffix.lower() not in IMAGE_SUFFIXES:
            kind = entry.suffix or "no file extension"
            message = f"skipped, not a supported image type ({kind}); supported: {supported}"
            problems.append(Problem(str(entry), message))
    return problems


def is_hidden(name: str) -> bool:
    """A hidden file or folder name: a leading "." or one of Windows' SYSTEM_FILES."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES
