"""Files and folders written as one unit, and output paths checked before any work starts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bloodcells.errors import BloodcellsError, DataError, DataWarning, os_reason

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
# Who fills a staging folder, so that a later one can tell a killed writer's leftovers.
STAGING_WRITER = ".bloodcells-writer.json"


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


def write_json(path: Path, data: object) -> None:
    """`data` as indented JSON (one final newline), written atomically."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def staged_folder(dest: Path, replace: bool = False) -> Iterator[Path]:
    """A hidden sibling `.NAME.partial-XXXX` of `dest` to fill, renamed to `dest` at the end.

    On any error or interrupt the sibling is removed, and so are the parent folders this
    created: `dest` appears complete or not at all. Without `replace`, a `dest` that appeared
    meanwhile is a DataError; with it, an existing `dest` is swapped out, put back if the
    rename fails, and removed once the new one is in place. The sibling records its writer
    (STAGING_WRITER, taken out before the rename): the partial folders of `dest` that a killed
    process left are removed, and one whose writer cannot be told dead is a DataWarning.
    """
    from bloodcells.utils.locks import writer_identity  # (it imports this module)

    created = _make_parents(dest.parent)
    _remove_stale_partials(dest)
    # A sibling is on the same file system, so the final rename is atomic; mkdir (not
    # tempfile.mkdtemp, which makes it owner-only) keeps the user's umask for the result.
    staging = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
    try:
        staging.mkdir()
        write_json(staging / STAGING_WRITER, writer_identity())
        yield staging
        (staging / STAGING_WRITER).unlink(missing_ok=True)
        _move_into_place(staging, dest, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise


def _remove_stale_partials(dest: Path) -> None:
    """Remove the `.NAME.partial-*` folders of `dest` whose writer is gone; warn about those
    whose writer cannot be told (no record, another host); leave a running writer's alone."""
    from bloodcells.utils.locks import writer_alive

    prefix = f".{dest.name}.partial-"
    try:
        partials = [p for p in dest.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return  # the staging folder's own mkdir says what is wrong
    for partial in sorted(partials):
        if partial.is_symlink() or not partial.is_dir():
            continue
        alive = writer_alive(_read_writer(partial / STAGING_WRITER))
        if alive is False:
            shutil.rmtree(partial, ignore_errors=True)
        elif alive is None:
            warnings.warn(
                f"{partial}: left by an earlier run that may still be writing it; remove it "
                "if none is",
                DataWarning,
                stacklevel=4,
            )


def _read_writer(record: Path) -> object:
    """The writer a staging folder records, or None when it records none readable."""
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _move_into_place(staging: Path, dest: Path, replace: bool) -> None:
    """Rename `staging` to `dest`; with `replace`, an existing `dest` is swapped out first."""
    if not replace or not dest.exists():
        if dest.exists() or dest.is_symlink():  # appeared while we worked
            raise DataError(f"{dest}: exists; pass overwrite to replace it")
        staging.rename(dest)
        return
    old = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
    dest.rename(old)
    try:
        staging.rename(dest)
    except BaseException:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; the folders it had to create, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(exist_ok=True)
    return list(reversed(missing))


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
        raise BloodcellsError(f"{path}: cannot create this folder ({os_reason(exc)})") from None
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


def check_apart(src: Path, dest: Path) -> None:
    """A DataError when DEST is SRC, lies inside it or holds it: SRC is only ever read."""
    real_src, real_dest = Path(os.path.realpath(src)), Path(os.path.realpath(dest))
    if real_dest == real_src or real_src in real_dest.parents:
        raise DataError(
            f"{dest}: is inside SRC {src}, which is only read; choose a DEST outside it"
        )
    if real_dest in real_src.parents:
        raise DataError(f"{dest}: holds SRC {src}; choose a DEST outside it")


def check_replaceable(
    folder: Path,
    overwrite: bool,
    *,
    name: str,
    made_by: str,
    marker: str,
    ours: Callable[[Path], bool],
) -> None:
    """`folder` (the command's `name`: DEST, OUT) must be new or, with overwrite, an earlier
    output of `made_by`, which `ours` recognises by its `marker` file; else a DataError."""
    if folder.is_symlink():
        raise DataError(f"{folder}: exists (a link); choose a new {name}")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise DataError(f"{folder}: exists and is not a folder; choose a new {name}")
    if not overwrite:
        raise DataError(
            f"{folder}: exists; choose a new {name}, or add overwrite=True to replace it"
        )
    if any(folder.iterdir()) and not ours(folder):
        raise DataError(
            f"{folder}: exists and was not made by {made_by} (no {marker}); overwrite=True only "
            f"replaces an earlier output of it: remove it yourself or choose a new {name}"
        )
