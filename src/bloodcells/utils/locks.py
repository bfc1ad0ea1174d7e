"""Who writes a run or sweep folder: the lock a writer holds on it for the command's life,
and whether the process a metrics.json "writer" names still runs (told apart from a new
process that reuses its pid by the start time Linux records in /proc).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bloodcells.errors import RunError, os_reason

try:
    import fcntl
except ImportError:  # Windows: folders go unlocked (metrics.json's writer is still checked)
    fcntl = None

LOCK_FILE = ".writer.lock"

_held: dict[Path, list] = {}  # folder -> [its lock file's descriptor, holds in this process]
_held_guard = threading.Lock()


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold `folder` for writing while in the block; another process gets a RunError.

    An flock on FOLDER/.writer.lock: the OS drops it when the process ends however it ends
    (kill -9 too), so no stale lock is left. The file keeps the holder's writer_identity and
    command, for the error another process gets. Nested holds in one process share the lock.
    `what` names the folder in that error ("run", "sweep").
    """
    key = Path(folder).resolve()
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_lock(key, Path(folder), what), 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if not _held[key][1]:
                fd = _held.pop(key)[0]
                if fd is not None:
                    os.close(fd)  # drops the flock


def _lock(folder: Path, shown: Path, what: str) -> int | None:
    """The open lock file of `folder` (a descriptor), flocked; None where the OS cannot lock.
    Errors name the folder as `shown` (as the user gave it)."""
    if fcntl is None:
        return None
    file = folder / LOCK_FILE
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(
            f"{shown / LOCK_FILE}: {os_reason(exc)}; cannot lock the {what} for writing"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64 * 1024).decode("utf-8", "replace")
        os.close(fd)
        raise RunError(
            f"{shown}: {describe_holder(holder)} is writing this {what} right now; "
            "wait for it to finish or stop it first"
        ) from None
    except OSError:  # a file system without flock (some network mounts): go on unlocked
        os.close(fd)
        return None
    record = writer_identity() | {"command": shlex.join(sys.argv)}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
    except OSError:  # a full disk: the lock holds all the same, only "who" goes unsaid
        pass
    return fd


def describe_holder(record: str) -> str:
    """A lock file's holder in words: "process 12 on host h since 2025-01-01T10:00:00+00:00
    (bloodcells train ...)"; "another process" when it does not say."""
    try:
        holder = json.loads(record)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, TypeError, KeyError):
        return "another process"  # it has the lock but has not written who it is yet
    text = f"process {pid} on host {host}"
    if holder.get("started"):
        text += f" since {holder['started']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def writer_identity() -> dict:
    """This process, as metrics.json records its writer: pid, host, start times."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "process_start": process_start(os.getpid()),
    }


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def writer_alive(writer: object) -> bool | None:
    """Whether the process in a metrics.json "writer" still runs: True, False, None (unknown)."""
    if not isinstance(writer, dict) or writer.get("host") != socket.gethostname():
        return None
    pid = writer.get("pid")
    if os.name != "posix" or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None  # (on Windows, os.kill would end the process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    except OSError:
        return None
    started = writer.get("process_start")
    now = process_start(pid)
    if started is None or now is None:
        return True
    return now == started  # another start time: the pid was reused by a new process
