"""Unpack one folder of a zip archive without trusting the archive, all or nothing.

Every entry of the archive is checked before a byte is written: no absolute paths or `..`
(zip-slip), no links or other special files, no encrypted entries, at most MAX_ENTRIES entries
and MAX_BYTES once unpacked. Extraction then counts the bytes it really writes, so an entry
that inflates past its declared size stops it too. The folder is unpacked into a
`files.staged_folder`, renamed into place only when everything is in; whatever goes wrong (a
bad entry, a full disk, Ctrl-C) removes the partial copy.
"""

from __future__ import annotations

import errno
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bloodcells.errors import DataError, os_reason
from bloodcells.utils.files import staged_folder

MAX_BYTES = 2 * 1024**3  # unpacked: far more than 32×32 lab patches need; a bomb stops here
MAX_ENTRIES = 500_000  # files and folders in the archive
CHUNK = 1 << 20
IGNORED_TOP = frozenset({"__MACOSX"})  # macOS resource forks, never data
_DRIVE = re.compile(r"^[A-Za-z]:")
# Errors of an entry's own name on this file system (a name too long, a case-insensitive clash),
# not of the disk: the archive is refused, where a full disk is not the archive's fault.
_NAME_ERRORS = frozenset(
    {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL}
)


@dataclass(frozen=True)
class Member:
    """A file of the archive to unpack, and where it goes under the unpacked folder."""

    info: zipfile.ZipInfo
    relative: PurePosixPath


@dataclass(frozen=True)
class Plan:
    """What unpacking `folder` would write: its path in the archive and its files."""

    prefix: PurePosixPath
    members: list[Member]
    total_bytes: int


def plan(
    zf: zipfile.ZipFile,
    folder: str,
    source: str,
    max_bytes: int | None = None,
    max_entries: int | None = None,
) -> Plan:
    """Check the whole archive and list the files under the shallowest folder named `folder`.

    `source` names the archive in error messages. Raises DataError for an unsafe archive
    (nothing is written by this function).
    """
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    max_entries = MAX_ENTRIES if max_entries is None else max_entries
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise DataError(
            f"{source}: refusing an archive of {len(infos)} entries (limit {max_entries})"
        )
    total = 0
    parts_of: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    for info in infos:
        parts = _checked_parts(info, source)
        total += info.file_size
        if total > max_bytes:
            raise DataError(
                f"{source}: refusing an archive that unpacks to more than "
                f"{max_bytes / 1e9:.2f} GB (a zip bomb or not the lab's data)"
            )
        if parts and parts[0] not in IGNORED_TOP:
            parts_of.append((info, parts))
    prefix = _find_folder(parts_of, folder, source)
    members, seen = [], set()
    for info, parts in parts_of:
        if parts[: len(prefix)] != prefix or info.is_dir() or len(parts) == len(prefix):
            continue
        relative = PurePosixPath(*parts[len(prefix) :])
        if relative in seen:
            raise DataError(f"{source}: refusing an archive that holds {info.filename} twice")
        seen.add(relative)
        members.append(Member(info, relative))
    _check_clashes(members, source)
    size = sum(m.info.file_size for m in members)
    return Plan(PurePosixPath(*prefix), members, size)


def _checked_parts(info: zipfile.ZipInfo, source: str) -> tuple[str, ...]:
    """The path parts of one entry, or a DataError when the entry is unsafe."""
    name = info.filename
    shown = _shown(name)
    if "\x00" in name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise DataError(f"{source}: refusing an entry with an absolute path: {shown}")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"{source}: refusing an entry that points outside the folder: {shown}")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise DataError(f"{source}: refusing an archive with a symbolic link: {shown}")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DataError(f"{source}: refusing an entry that is not a file or folder: {shown}")
    if info.flag_bits & 0x1:
        raise DataError(f"{source}: refusing an encrypted entry: {shown}")
    return parts


def _check_clashes(members: list[Member], source: str) -> None:
    """No file may have the name of a folder that another file needs (`a` and `a/b`)."""
    files = {m.relative: m for m in members}
    for member in members:
        for parent in member.relative.parents[:-1]:  # the last one is "."
            if parent in files:
                raise DataError(
                    f"{source}: refusing an archive whose entries clash: "
                    f"{_shown(files[parent].info.filename)} is a file, but "
                    f"{_shown(member.info.filename)} needs a folder of that name"
                )


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


def _find_folder(
    entries: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], folder: str, source: str
) -> tuple[str, ...]:
    """The path parts of the shallowest folder named `folder` that holds files."""
    prefixes = set()
    for info, parts in entries:
        dirs = parts if info.is_dir() else parts[:-1]
        if folder in dirs:
            prefixes.add(parts[: dirs.index(folder) + 1])
    if not prefixes:
        raise DataError(f"{source}: no folder {folder} in the archive; is this the lab's zip?")
    depth = min(len(p) for p in prefixes)
    shallowest = sorted(p for p in prefixes if len(p) == depth)
    if len(shallowest) > 1:
        found = ", ".join("/".join(p) for p in shallowest)
        raise DataError(
            f"{source}: several {folder} folders in the archive ({found}); unzip it yourself"
        )
    return shallowest[0]


def extract(
    zf: zipfile.ZipFile,
    todo: Plan,
    dest: Path,
    source: str,
    finish: Callable[[Path], None] | None = None,
    replace: bool = False,
) -> Path:
    """Unpack `todo` into `dest`, which must not exist (unless `replace`): all or nothing.

    `finish(staging)` may add files before the folder is renamed into place.
    """
    with staged_folder(dest, replace) as staging:
        _unpack(zf, todo, staging, source)
        if finish is not None:
            finish(staging)
    return dest


def _unpack(zf: zipfile.ZipFile, todo: Plan, staging: Path, source: str) -> None:
    root = staging.resolve()
    written = 0
    for member in todo.members:
        target = staging.joinpath(*member.relative.parts)
        if not target.resolve().is_relative_to(root):  # belt and braces after plan()
            raise DataError(f"{source}: refusing {member.info.filename}: outside the folder")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as dst, zf.open(member.info) as src:
                size = 0
                while chunk := src.read(CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if size > member.info.file_size or written > todo.total_bytes:
                        raise DataError(
                            f"{source}: {member.info.filename} unpacks to more than it declares"
                        )
                    dst.write(chunk)
        except (zipfile.BadZipFile, EOFError, NotImplementedError, zipfile.LargeZipFile) as exc:
            raise DataError(
                f"{source}: cannot unpack {member.info.filename} ({exc}); "
                "the archive is damaged or truncated"
            ) from None
        except OSError as exc:
            if exc.errno not in _NAME_ERRORS:  # a full disk, say: not the archive's fault
                raise
            raise DataError(
                f"{source}: refusing {_shown(member.info.filename)}: it cannot be written here "
                f"({os_reason(exc)}); unzip the archive yourself"
            ) from None
