"""What `predict` reads: image files, folders searched recursively, glob patterns, arrays.

A path that exists is taken as it is, even when its name holds glob characters
(`cells [final]/`); only a path that does not exist is tried as a pattern (`cells/*.png`,
`runs/**/*.jpg`). Hidden files and folders (`.DS_Store`, `.git/`) are ignored, as when training;
files of other types (`notes.txt`, `a.gif`) are skipped and counted, never silently dropped.
An image name that is not a regular file (a broken link, a named pipe) is listed like any
image, and load_image gives its reason without opening it: an `unreadable` row, wherever found.

Every image becomes a raw float32 C×H×W tensor in [0, 1], decoded exactly as training decodes
(data.decode_image with the run's Transform) and scaled as training scales (data.to_unit).
"""

from __future__ import annotations

import glob
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bloodcells.data import Transform, decode_image, to_unit
from bloodcells.data.folders import DECODE_ERRORS, IMAGE_SUFFIXES, is_hidden
from bloodcells.errors import BloodcellsError
from bloodcells.utils.devices import decode_workers

# A bound on the images of one predict call: a million cells is a large sample; ten million
# paths still fit in memory (about 1.5 GB of strings), more is almost surely a wrong folder.
MAX_INPUTS = 10_000_000


@dataclass
class FoundImages:
    """The image files found, in order, and what was skipped."""

    files: list[str]
    skipped: Counter = field(default_factory=Counter)  # suffix ("(none)" if none) -> files

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def skipped_summary(self) -> str:
        """'3 files skipped, not images (.txt 2, .gif 1)', or '' when none were."""
        if not self.skipped:
            return ""
        kinds = ", ".join(f"{suffix} {n}" for suffix, n in self.skipped.most_common())
        n = self.skipped_count
        return f"{n} file{'s' if n != 1 else ''} skipped, not a supported image type ({kinds})"


def find_images(inputs: Sequence[str | Path] | str | Path, limit: int = MAX_INPUTS) -> FoundImages:
    """Every image file named by `inputs`: files, folders (recursive) and glob patterns.

    Files are listed in the order given, each folder sorted; a file named twice is listed
    once. A BloodcellsError when an input does not exist, a pattern matches nothing, nothing
    is an image, or there are more than `limit` images.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if not inputs:
        raise BloodcellsError("no INPUT given: name image files, folders or glob patterns")
    found = FoundImages([])
    seen: set[str] = set()
    for item in inputs:
        for path in _expand(str(item)):
            for file in _walk(path):
                key = os.path.normpath(file)
                if key in seen:
                    continue
                seen.add(key)
                suffix = os.path.splitext(file)[1].lower()
                if suffix not in IMAGE_SUFFIXES:
                    found.skipped[suffix or "(none)"] += 1
                    continue
                found.files.append(file)
                if len(found.files) > limit:
                    raise BloodcellsError(
                        f"more than {limit:,} images in {_names(inputs)}; predict on fewer "
                        "at a time (e.g. one folder per call)"
                    )
    if not found.files:
        skipped = f"; {found.skipped_summary()}" if found.skipped else ""
        raise BloodcellsError(
            f"no images in {_names(inputs)} (supported: {', '.join(sorted(IMAGE_SUFFIXES))})"
            f"{skipped}"
        )
    return found


def _expand(item: str) -> list[str]:
    """`item` itself when it exists, else the paths its glob pattern matches (sorted)."""
    if os.path.lexists(item):
        return [item]
    if not glob.has_magic(item):
        raise BloodcellsError(f"{item}: no such file or folder")
    matches = sorted(glob.glob(_escape_existing(item), recursive=True))
    if not matches:
        raise BloodcellsError(f"{item}: no file matches this pattern")
    return matches


def _escape_existing(pattern: str) -> str:
    """`pattern` with its longest leading run of existing folders escaped, so that in
    `cells [final]/*.png` the folder `cells [final]` is a name, not a character class."""
    parts = pattern.split(os.sep)
    literal = 0
    for i in range(1, len(parts)):
        prefix = os.sep.join(parts[:i])
        if prefix and not os.path.isdir(prefix):
            break
        literal = i
    if not os.sep.join(parts[:literal]):
        return pattern
    return os.sep.join([glob.escape(os.sep.join(parts[:literal])), *parts[literal:]])


def _walk(path: str) -> Iterable[str]:
    """The file at `path`, or the visible files of the folder `path`, recursively, sorted
    (a broken link among them, as in a folder: load_image says what it is)."""
    if not os.path.isdir(path):
        yield path
        return
    for folder, dirs, files in os.walk(path, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            if not is_hidden(name):
                yield os.path.join(folder, name)


def _raise(exc: OSError) -> None:
    raise exc  # an unreadable folder is an error (a one-line OSError), not a silent gap


def _names(inputs: Sequence[str | Path]) -> str:
    shown = ", ".join(str(i) for i in list(inputs)[:3])
    return shown + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")


def load_image(path: str, transform: Transform) -> torch.Tensor | str:
    """One file as a raw float32 C×H×W image in [0, 1], as training stores and scales it;
    the reason as a string when it cannot be read (or is not a regular file: never opened)."""
    try:
        array, _ = decode_image(path, transform)
    except DECODE_ERRORS as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return unit_image(array)


def read_images(paths: Sequence[str], transform: Transform) -> torch.Tensor:
    """The readable ones of `paths` as raw images N×C×H×W in [0, 1] (decoded in threads)."""
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        decoded = list(pool.map(lambda p: load_image(p, transform), paths))
    images = [d for d in decoded if not isinstance(d, str)]
    if not images:
        raise BloodcellsError("none of the images can be read")
    return torch.stack(images)


def unit_image(array: np.ndarray) -> torch.Tensor:
    """A decoded image as float32 in [0, 1]: uint8 / 255 (to_unit), or for a 16-bit source
    through float16, the precision the training Dataset stores such images in."""
    tensor = torch.from_numpy(np.require(array, requirements="W"))  # PIL's arrays are read-only
    if tensor.dtype != torch.uint8:
        tensor = tensor.to(torch.float16)
    return to_unit(tensor)


def in_memory(images, transform: Transform) -> tuple[torch.Tensor | None, list[str]]:
    """Raw images and row names when `images` are arrays or PIL images; (None, []) for paths."""
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, list | tuple) and images and isinstance(images[0], Image.Image):
        if not all(isinstance(im, Image.Image) for im in images):
            raise BloodcellsError("mix of PIL images and other inputs; pass one kind")
        arrays = [unit_image(decode_image(_lossless(im), transform)[0]) for im in images]
        return torch.stack(arrays), [f"[{i}]" for i in range(len(arrays))]
    if not isinstance(images, np.ndarray | torch.Tensor):
        return None, []
    if isinstance(images, np.ndarray):
        images = np.require(images, requirements="W")  # (torch warns about read-only arrays)
    tensor = torch.as_tensor(images).detach().cpu()
    if tensor.dim() == 3:
        tensor = tensor[None]
    expected = (transform.channels, transform.size, transform.size)
    if tensor.dim() != 4 or tuple(tensor.shape[1:]) != expected:
        raise BloodcellsError(
            f"images of shape {tuple(tensor.shape)}; the model takes "
            f"N×{'×'.join(map(str, expected))} (or pass files, which are converted and resized)"
        )
    if tensor.dtype == torch.uint8:
        tensor = to_unit(tensor)
    elif not tensor.is_floating_point():
        raise BloodcellsError(f"images of type {tensor.dtype}; pass uint8 or float in [0, 1]")
    else:
        tensor = tensor.float()
        if len(tensor) and (tensor.min() < 0 or tensor.max() > 1):
            raise BloodcellsError(
                "float images must be in [0, 1] (raw pixels / 255), not standardized"
            )
    return tensor, [f"[{i}]" for i in range(len(tensor))]


def _lossless(image) -> io.BytesIO:
    """A PIL image as an in-memory TIFF, so that decode_image treats it as it treats files."""
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    buffer.seek(0)
    return buffer
