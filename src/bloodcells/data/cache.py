"""The on-disk cache of decoded datasets: one file per split, keyed by everything that
changes its meaning (files, sizes, mtimes, transform, class order). The files are absolute
paths, stored as they are hashed: a cache made from any working folder reads the same."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from bloodcells.data.dataset import Dataset, Problem, Transform
from bloodcells.errors import DataWarning, os_reason
from bloodcells.utils.files import save_torch_atomic

CACHE_FORMAT = 3  # bump when the cached tensors or paths change meaning (3: absolute paths)


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


def cache_key(
    files: Iterable[tuple[Path, str]], transform: Transform, classes: Sequence[str]
) -> str:
    """A hash of the files (absolute paths, as the Dataset keeps them), sizes, mtimes, transform
    and class order: any change, a new key."""
    header = [CACHE_FORMAT, transform.size, transform.channels, list(classes)]
    h = hashlib.sha256(json.dumps(header).encode())
    for path, cls in files:
        st = path.stat()
        h.update(f"{path}\0{cls}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def save_cached(dataset: Dataset, cache_file: Path) -> None:
    """Write `dataset` to the cache; a cache that cannot be written is a warning, not an error."""
    payload = {
        "images": dataset.images,
        "labels": dataset.labels,
        "classes": dataset.classes,
        "paths": dataset.paths,
        "sources": dataset.sources,
        "problems": [[p.path, p.message] for p in dataset.problems],
    }
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(payload, cache_file)
    except OSError as exc:
        warnings.warn(f"{cache_file}: not cached ({os_reason(exc)})", DataWarning, stacklevel=3)


def load_cached(
    cache_file: Path, classes: list[str], files: Iterable[tuple[Path, str]]
) -> Dataset | None:
    """The cached dataset of `files`, or None when there is none or it cannot be trusted (then
    removed): made for other classes, or holding a path that is not one of `files` (such as
    the relative paths older versions kept)."""
    if not cache_file.exists():
        return None
    try:
        payload = torch.load(cache_file, weights_only=True)
        if payload["classes"] != classes:  # labels index the classes they were made for
            raise ValueError(f"{cache_file} was made for classes {payload['classes']}")
        if not set(payload["paths"]) <= {str(path) for path, _ in files}:
            raise ValueError(f"{cache_file} was made for other files")
        return Dataset(
            images=payload["images"],
            labels=payload["labels"],
            classes=list(classes),
            paths=list(payload["paths"]),
            sources=dict(payload["sources"]),
            problems=[Problem(path, message) for path, message in payload["problems"]],
        )
    except Exception:  # a damaged or foreign cache file is rebuilt, never trusted
        cache_file.unlink(missing_ok=True)
        return None
