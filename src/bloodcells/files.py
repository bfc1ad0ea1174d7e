"""Files written as one unit, and output paths checked before any work starts."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

from bloodcells.errors import BloodcellsError

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    write_together(path.parent, {path.name: data})


def write_together(folder: Path, files: Mapping[str, bytes | str]) -> None:
    """Write every file to a temporary name, then rename them into place in the given order.

    Nothing is replaced until everything is written; whatever fails (a full disk, Ctrl-C), no
    temporary file is left behind.
    """
    temps: dict[str, Path] = {}
    try:
        for name, data in files.items():
            temps[name] = folder / f".{name}.tmp{os.getpid()}"
            temps[name].write_bytes(data.encode() if isinstance(data, str) else data)
        for name in files:
            os.replace(temps[name], folder / name)
            del temps[name]
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def torch_bytes(obj: object) -> bytes:
    """What torch.save writes for `obj`."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch_atomic(obj: object, path: Path) -> None:
    """torch.save `obj` to `path` atomically."""
    write_atomic(path, torch_bytes(obj))


def check_output_folder(path: str | Path) -> Path:
    """`path` if it is, or can be made, a writable folder; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BloodcellsError(f"{path}: exists and is not a folder; choose another")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise BloodcellsError(f"{path}: cannot be made, {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BloodcellsError(f"{path}: cannot be made here, {existing} is not writable")
    return path


def output_folder(path: str | Path) -> Path:
    """`path` as a folder to write into: created if missing, or a one-line error."""
    path = check_output_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BloodcellsError(f"{path}: cannot create this folder ({_reason(exc)})") from None
    return path


def output_file(
    path: str | Path, default_name: str, suffixes: tuple[str, ...] = FIGURE_SUFFIXES
) -> Path:
    """Where to write one output file: `path`, or `path/default_name` when it is a folder.

    Checked before any work starts: a known suffix, a parent that is (or can become) a
    writable folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if path.suffix.lower() not in suffixes:
        raise BloodcellsError(
            f"{path}: unsupported file type {path.suffix or '(none)'}; use {', '.join(suffixes)}"
        )
    check_output_folder(path.parent)
    return path


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
