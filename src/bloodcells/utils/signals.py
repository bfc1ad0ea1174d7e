"""SIGTERM handled as Ctrl-C is: the cleanups of a command run before it ends."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM ends the process as Ctrl-C would, running every cleanup on the way.

    By default SIGTERM kills at once, leaving a half download (pooch's `tmp*` in the cache) or
    a half-unpacked folder. Here it raises SystemExit(143), the exit code of a terminated
    process. Only in the main thread, and only where nobody else has set a handler.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
