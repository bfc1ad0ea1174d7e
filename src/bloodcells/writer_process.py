"""Whether a run's writer still runs: the process a metrics.json "writer" names, told apart
from a new process that reuses its pid (by the start time Linux records in /proc).
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path


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
