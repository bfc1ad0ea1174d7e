"""The lab's own data: fetch its zip with pooch and unpack `bloodcells_small` safely.

The zip is fetched once into the cache (`cache_home()/downloads`, a name per URL) with retries
and a progress bar, checked against a sha256 when one is known, then its `bloodcells_small`
folder (wherever it sits in the archive) is unpacked by `safezip`: all or nothing, no path
tricks, no links, a size limit. The folder gets a `.download.json` that records the URL, the
sha256 and the date, so a result can always be traced to the exact bytes it came from.

A transfer stops at `max_size` bytes and when the server sends nothing for `read_timeout`
seconds; whatever stops it (those limits, an error, Ctrl-C or SIGTERM), its partial file is
removed, and a zip that is refused is removed from the cache.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from bloodcells.data.cache import cache_home
from bloodcells.data.folders import SPLITS
from bloodcells.data.sources import safezip
from bloodcells.errors import DataError
from bloodcells.utils.files import check_output_folder, output_folder, write_json
from bloodcells.utils.signals import cleanup_on_sigterm

LAB_URL = "https://user.it.uu.se/~chrav452/workshop_NN_DL_cnn_data.zip"
# The sha256 of the lab's zip. Not known: the machines bloodcells is built on have no network,
# so it could not be measured. Until it is pinned here, every download prints the sha256 of
# what it got and records it in bloodcells_small/.download.json. Once two independent
# downloads agree, put that value here: from then on a changed or damaged file is refused.
LAB_SHA256: str | None = None
DATASETS = ("lab",)
FOLDER = "bloodcells_small"
RECORD = ".download.json"
RETRIES = 2  # pooch retries a failed or corrupt transfer this many times (1 s, 2 s apart)
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 30.0  # a server silent this long has stalled: stop (a stall is not retried)
# The lab's zip is tens of MB. 2 GB leaves room for a mirror of a bigger version of it, and is
# what safezip lets an archive unpack to anyway; a server streaming without end stops here.
MAX_SIZE = 2 * 10**9
MAX_URL = 2048


@dataclass(frozen=True)
class Downloaded:
    """What `download_lab` did."""

    root: Path  # DEST/bloodcells_small
    url: str
    sha256: str
    pinned: bool  # checked against a known sha256 (the pin or sha256)
    cached: bool  # taken from the cache, nothing transferred
    archive: Path  # the zip that was unpacked
    files: int
    bytes: int


def download_lab(
    dest: str | Path = "data",
    url: str = LAB_URL,
    sha256: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = print,
    max_size: int = MAX_SIZE,
    read_timeout: float = READ_TIMEOUT_S,
) -> Downloaded:
    """Fetch the lab's zip (or take it from the cache) and unpack DEST/bloodcells_small.

    `url` may be an http(s):// or file:// URL or a path to a local zip. `sha256` (or the pinned
    LAB_SHA256) must match when given. A download stops at `max_size` bytes, or after
    `read_timeout` seconds without data. Everything is checked before DEST changes; a failure
    leaves DEST as it was and keeps no download that failed its checks.
    """
    source = check_url(url)
    known = check_sha256(sha256) if sha256 is not None else LAB_SHA256
    check_limits(max_size, read_timeout)
    target = _check_target(Path(dest).expanduser(), overwrite)
    with cleanup_on_sigterm():
        if isinstance(source, Path):
            archive, cached, ours = source, False, False
            say(f"using the local archive {archive}")
        else:
            archive, cached = fetch(source, known, progress, say, max_size, read_timeout)
            ours = True
        try:
            digest = file_sha256(archive)
            if known is not None and digest != known:  # a local file (pooch checked downloads)
                raise DataError(
                    f"{archive}: sha256 is {digest}, expected {known}; "
                    "not the lab's zip, or damaged"
                )
            result = _unpack(archive, target, overwrite, url, digest, known is not None)
        except DataError:
            if ours:  # a download that fails its checks is not worth keeping in the cache
                archive.unlink(missing_ok=True)
            raise
    files, size = result
    return Downloaded(target, url, digest, known is not None, cached, archive, files, size)


def check_limits(max_size: int, read_timeout: float) -> None:
    """`max_size` a positive whole number of bytes, `read_timeout` a positive number of seconds."""
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise DataError(f"max_size must be a whole number of bytes above 0, not {max_size!r}")
    if isinstance(read_timeout, bool) or not isinstance(read_timeout, int | float):
        raise DataError(f"read_timeout must be a number of seconds, not {read_timeout!r}")
    if not 0 < read_timeout < float("inf"):
        raise DataError(f"read_timeout must be a number of seconds above 0, not {read_timeout!r}")


def check_url(url: str) -> str | Path:
    """An http(s) URL as is, or the local zip a file:// URL or a path names; else DataError."""
    if not url or len(url) > MAX_URL or not url.isprintable():
        raise DataError(f"'url' must be a URL or a path of 1 to {MAX_URL} printable characters")
    if "://" not in url:
        path = Path(url).expanduser()
        if not path.is_file():
            what = "not a file" if path.exists() else "no such file"
            raise DataError(
                f"{url}: {what}; 'url' takes an http(s):// or file:// URL or a local .zip"
            )
        return path
    if any(c.isspace() for c in url):
        raise DataError(f"{url}: a URL has no spaces (write a space as %20)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DataError(f"{url}: a file:// URL must name a local file (file:///path/to.zip)")
        path = Path(url2pathname(parts.path))
        if not path.is_file():
            raise DataError(f"{url}: {'not a file' if path.exists() else 'no such file'}")
        return path
    if scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"{url}: not a URL bloodcells can fetch; use http(s)://, file:// or a path")
    return url


def check_sha256(value: str) -> str:
    """A sha256 as 64 lowercase hex digits (an optional `sha256:` prefix is dropped)."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        shown = value if len(value) <= 80 and value.isprintable() else repr(value[:80])
        raise DataError(f"'sha256' must be 64 hexadecimal digits, not {shown}")
    return digest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cache_name(url: str) -> str:
    """The cache file of a URL: a short hash of the URL, then its file name."""
    name = PurePosixPath(urlsplit(url).path).name or "download.zip"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def fetch(
    url: str,
    known: str | None,
    progress: bool,
    say: Callable[[str], None],
    max_size: int = MAX_SIZE,
    read_timeout: float = READ_TIMEOUT_S,
) -> tuple[Path, bool]:
    """The zip at `url` in the cache (downloaded unless already there): (path, cached)."""
    import pooch
    import requests

    cache = output_folder(cache_home() / "downloads")
    fname = cache_name(url)
    path = cache / fname
    cached = path.is_file() and (known is None or file_sha256(path) == known)
    say(f"using the cached download of {url}" if cached else f"downloading {url}")
    registry = pooch.create(
        path=cache,
        base_url="",
        registry={fname: f"sha256:{known}" if known else None},
        urls={fname: url},
        retry_if_failed=RETRIES,
    )
    bar = _RichBar("downloading") if progress else False
    downloader = _LimitedDownloader(bar, max_size, read_timeout)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # our own lines say what happens
    try:
        registry.fetch(fname, downloader=downloader)
    except _TooBig:
        raise DataError(
            f"the download from {url} passed the size limit of {_size(max_size)} and was "
            "stopped, nothing was kept; check the URL, or allow a larger max size if the file "
            "really is that big"
        ) from None
    except _Stalled:
        raise DataError(
            f"the server of {url} was reached but stopped sending (nothing for "
            f"{read_timeout:g} s), nothing was kept; try again later, or point 'url' at a mirror"
        ) from None
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise DataError(
            f"{url}: the server answered HTTP {status}; check the URL, or point 'url' at a mirror"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise DataError(
            f"could not reach {url} ({_reason(exc)}); this machine may have no network: "
            "point 'url' at a mirror (an http(s):// or file:// URL, or a local .zip)"
        ) from None
    except requests.exceptions.ChunkedEncodingError:
        raise DataError(
            f"the download from {url} was cut off before its end; "
            "try again later, or point 'url' at a mirror"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise DataError(
            f"the download from {url} failed ({_reason(exc)}); "
            "try again later, or point 'url' at a mirror"
        ) from None
    except ValueError as exc:  # pooch: the sha256 does not match
        # pooch removed the new download; an older one in the cache does not match either
        path.unlink(missing_ok=True)
        got = re.search(r"but got ([0-9a-f]{64})", str(exc))
        raise DataError(
            f"{url}: sha256 of the download is {got[1] if got else 'different'}, expected "
            f"{known}; the file changed or was damaged, nothing was kept"
        ) from None
    finally:
        logger.setLevel(level)
        if bar:
            bar.close()
    return path, cached


class _TooBig(Exception):
    """The transfer passed max_size (not a requests error: pooch must not retry it)."""


class _Stalled(Exception):
    """The server stopped sending for read_timeout seconds (not retried either)."""


class _LimitedDownloader:
    """pooch's HTTPDownloader, stopped at `max_size` bytes and at a stalled server."""

    def __init__(self, bar: object, max_size: int, read_timeout: float) -> None:
        import pooch

        self.max_size = max_size
        timeout = (CONNECT_TIMEOUT_S, read_timeout)
        hooks = {"response": self._check_length}
        self._http = pooch.HTTPDownloader(progressbar=bar, timeout=timeout, hooks=hooks)

    def __call__(self, url: str, output_file: str, pooch: object, check_only: bool = False):
        import requests

        if check_only:
            return self._http(url, output_file, pooch, check_only=True)
        with open(output_file, "w+b") as file:
            try:
                self._http(url, _Capped(file, self.max_size), pooch)
            except requests.exceptions.ReadTimeout:
                raise _Stalled from None
            except requests.exceptions.ConnectionError as exc:
                if _read_timed_out(exc):  # requests reports a stall mid-body this way
                    raise _Stalled from None
                raise
        return None

    def _check_length(self, response, *args, **kwargs) -> None:
        """Refuse at once a response that announces more than max_size bytes."""
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_size:
            response.close()
            raise _TooBig


class _Capped:
    """A file that refuses to grow past `limit` bytes: what pooch writes a download into."""

    def __init__(self, file, limit: int) -> None:
        self._file = file
        self._left = limit

    def write(self, data: bytes) -> int:
        self._left -= len(data)
        if self._left < 0:
            raise _TooBig
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


def _read_timed_out(exc: Exception) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _reason(exc: Exception) -> str:
    """The useful end of a requests error: 'Connection refused', 'timed out', ..."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] ([^'\")\]]+)", r"(Read timed out|timed out)", r"(\w+Error)"):
        found = re.search(pattern, text)
        if found:
            return found[1].strip().rstrip(".")
    return type(exc).__name__


def _check_target(dest: Path, overwrite: bool) -> Path:
    check_output_folder(dest)
    target = dest / FOLDER
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise DataError(f"{target}: exists and is not a folder; move it away first")
    if target.exists() and not overwrite:
        raise DataError(f"{target}: exists; remove it, or pass overwrite=True to replace it")
    return target


def _unpack(
    archive: Path, target: Path, overwrite: bool, url: str, digest: str, pinned: bool
) -> tuple[int, int]:
    source = str(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            todo = safezip.plan(zf, FOLDER, source)
            _check_layout(todo, source)

            def record(staging: Path) -> None:
                info = {
                    "url": url,
                    "sha256": digest,
                    "sha256_checked": pinned,
                    "archive": str(archive.resolve()),
                    "unpacked_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "archive_folder": str(todo.prefix),
                    "files": len(todo.members),
                    "bytes": todo.total_bytes,
                }
                write_json(staging / RECORD, info)

            safezip.extract(zf, todo, target, source, finish=record, replace=overwrite)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{archive}: not a readable zip ({exc}); damaged, cut short, or not a zip at all"
        ) from None
    return len(todo.members), todo.total_bytes


def _check_layout(todo: safezip.Plan, source: str) -> None:
    """The folder must hold train/<class>/<file> and test/<class>/<file>."""
    tops = {m.relative.parts[0] for m in todo.members if len(m.relative.parts) >= 3}
    missing = [s for s in SPLITS if s not in tops]
    if missing:
        raise DataError(
            f"{source}: {todo.prefix} has no {missing[0]}/<class>/ images; "
            "not the lab's layout (bloodcells_small/train/<class>, bloodcells_small/test/<class>)"
        )


class _RichBar:
    """pooch's progress-bar protocol (total, update, reset, close) drawn by rich on stderr."""

    def __init__(self, label: str) -> None:
        columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        console = Console(stderr=True)
        self._progress = Progress(*columns, console=console, transient=True)
        self._shown = console.is_terminal  # in a log or a pipe, no bar
        self._task = None
        self.total = 0

    def update(self, n: int) -> None:
        if not self._shown:
            return
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total or None)
        self._progress.advance(self._task, n)

    def reset(self) -> None:
        if self._task is not None:
            self._progress.reset(self._task, total=self.total or None)

    def close(self) -> None:
        if self._task is not None:  # stop() of a bar never started would print a blank line
            self._progress.remove_task(self._task)
            self._task = None
            self._progress.stop()
