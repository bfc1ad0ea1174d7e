"""Files written as one unit, and output paths checked before any work starts."""

from __future__ import annotations

import io
import os
from pathlib import Path

from bloodcells.errors import BloodcellsError

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_torch_atomic(obj: object, path: Path) -> None:
    """torch.save `obj` to `path` atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


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
