"""`data download lab` against a local HTTP server that serves zips the tests build."""

from __future__ import annotations

import hashlib
import http.server
import inspect
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.cli.fetch import data_download, parse_size
from bloodcells.data.sources import download, safezip
from bloodcells.data.sources.download import download_lab
from bloodcells.errors import DataError
from bloodcells.utils.signals import cleanup_on_sigterm

runner = CliRunner()
CLASSES = ("B", "T", "neutrophil")


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def lab_entries(prefix: str = "data/bloodcells_small") -> list[tuple[str, bytes]]:
    """A tiny lab layout: 4 train and 2 test PNGs per class, under `prefix`."""
    entries = []
    for split, count in (("train", 4), ("test", 2)):
        for cls in CLASSES:
            for i in range(count):
                entries.append((f"{prefix}/{split}/{cls}/{cls}_{i}.png", png(len(entries))))
    return entries


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def good_zip() -> bytes:
    extras = [("data/README.txt", b"the lab's data"), ("__MACOSX/data/._x", b"fork")]
    return make_zip([*lab_entries(), *extras])


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so that the mode bits count
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


class Server:
    """Serves `routes` on 127.0.0.1: path -> bytes, or a list of bytes/'cut' per request."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: dict[str, int] = {}
        self.release = threading.Event()  # ends the answers that stall
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                n = server.requests.get(self.path, 0)
                server.requests[self.path] = n + 1
                body = server.routes.get(self.path)
                if isinstance(body, list):
                    body = body[min(n, len(body) - 1)]
                if callable(body):  # writes its own answer
                    body(self)
                    return
                if body is None:
                    self.send_error(404)
                    return
                cut = isinstance(body, tuple)  # (bytes, "cut"): promise all, send half
                data = body[0] if cut else body
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if cut else data)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.release = self.release  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, body: object) -> str:
        self.routes[path] = body
        return self.url(path)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_retries(monkeypatch):
    """Retries wait between tries; only the retry test wants them."""
    monkeypatch.setattr(download, "RETRIES", 0)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/workshop_NN_DL_cnn_data.zip"


def cached_files(cache: Path) -> list[Path]:
    folder = cache / "downloads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def left_over(parent: Path) -> list[str]:
    """Anything a failed download may have left: the folder itself or hidden partials."""
    if not parent.exists():
        return []
    return sorted(p.name for p in parent.iterdir())


def one_line_error(result, message: str) -> None:
    """Exit code 2 and one line on stderr (stdout may have said what was being tried)."""
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1, result.output


# --- a good download ---------------------------------------------------------------------


def test_good_zip_is_unpacked_with_a_record_of_its_sha256(server, tmp_path, private_cache):
    body = good_zip()
    url = server.serve("/workshop_NN_DL_cnn_data.zip", body)
    dest = tmp_path / "new" / "data"
    got = download_lab(dest, url, progress=False, say=lambda s: None)

    root = dest / "bloodcells_small"
    assert got.root == root and not got.pinned and not got.cached
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(CLASSES)
    assert len(list((root / "test" / "B").iterdir())) == 2
    assert got.files == len(lab_entries())
    assert not (dest / "README.txt").exists() and not (root / "__MACOSX").exists()
    record = json.loads((root / ".download.json").read_text())
    assert record["url"] == url
    assert record["sha256"] == got.sha256 == hashlib.sha256(body).hexdigest()
    assert record["archive_folder"] == "data/bloodcells_small"
    assert left_over(dest) == ["bloodcells_small"]  # no partial folder beside it
    assert [p.name for p in cached_files(private_cache)] == [download.cache_name(url)]


def test_the_cache_is_used_and_overwrite_replaces(server, tmp_path):
    url = server.serve("/lab.zip", good_zip())
    download_lab(tmp_path, url, progress=False, say=lambda s: None)
    with pytest.raises(DataError, match="exists; remove it, or pass overwrite=True"):
        download_lab(tmp_path, url, progress=False, say=lambda s: None)
    (tmp_path / "bloodcells_small" / "train" / "B" / "mine.png").write_bytes(png(99))
    said = []
    got = download_lab(tmp_path, url, overwrite=True, progress=False, say=said.append)
    assert got.cached and said == [f"using the cached download of {url}"]
    assert server.requests["/lab.zip"] == 1  # the second and third came from the cache
    assert not (got.root / "train" / "B" / "mine.png").exists()
    assert left_over(tmp_path) == ["bloodcells_small"]


def test_cli_prints_sha256_and_the_data_info_summary(server, tmp_path):
    body = good_zip()
    url = server.serve("/lab.zip", body)
    dest = tmp_path / "odd [data] ;$(x)"
    result = runner.invoke(app, ["data", "download", "lab", "--dest", str(dest), "--url", url])
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(body).hexdigest()
    assert f"sha256 {digest} (not pinned yet" in result.output
    assert f"--sha256 {digest}" in result.output
    assert str(dest / "bloodcells_small") in result.output  # printed as typed, not as markup
    assert "neutrophil" in result.output and "problems: 0" in result.output
    assert "next: bloodcells lab --data" in result.output


def test_a_matching_sha256_is_accepted(server, tmp_path, monkeypatch):
    body = good_zip()
    url = server.serve("/lab.zip", body)
    digest = hashlib.sha256(body).hexdigest()
    got = download_lab(tmp_path / "a", url, f"SHA256:{digest.upper()}", say=lambda s: None)
    assert got.pinned and got.sha256 == digest
    monkeypatch.setattr(download, "LAB_SHA256", digest)  # the pin, once it is known
    result = runner.invoke(
        app, ["data", "download", "lab", "--dest", str(tmp_path / "b"), "--url", url]
    )
    assert result.exit_code == 0, result.output
    assert f"sha256 {digest} (as expected)" in result.output


def test_local_path_and_file_url_need_no_server(tmp_path, private_cache):
    archive = tmp_path / "my zips [1]" / "lab.zip"
    archive.parent.mkdir()
    archive.write_bytes(good_zip())
    got = download_lab(tmp_path / "a", str(archive), say=lambda s: None)
    assert (got.root / "train" / "T").is_dir() and got.archive == archive
    got = download_lab(tmp_path / "b", archive.as_uri(), say=lambda s: None)
    assert (got.root / "test" / "T").is_dir()
    assert cached_files(private_cache) == []  # a local file is not copied into the cache
    assert archive.exists()


def test_a_transfer_cut_off_once_is_retried(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 1)
    body = good_zip()
    url = server.serve("/lab.zip", [(body, "cut"), body])
    got = download_lab(tmp_path, url, progress=False, say=lambda s: None)
    assert server.requests["/lab.zip"] == 2
    assert got.sha256 == hashlib.sha256(body).hexdigest()


# --- bad archives and bad transfers: one line, nothing left behind ----------------------------


def zip_slip() -> bytes:
    return make_zip([*lab_entries(), ("data/bloodcells_small/../../evil.txt", b"pwned")])


def absolute() -> bytes:
    return make_zip([*lab_entries(), ("/tmp/evil.txt", b"pwned")])


def backslash_slip() -> bytes:
    return make_zip([*lab_entries(), ("data\\bloodcells_small\\..\\..\\evil.txt", b"pwned")])


def with_symlink() -> bytes:
    link = symlink_entry("data/bloodcells_small/train/B/link.png", "/etc/passwd")
    return make_zip([*lab_entries(), link])


def truncated_zip() -> bytes:
    body = good_zip()
    return body[: len(body) // 2]


def no_folder() -> bytes:
    return make_zip(lab_entries("data/other_cells"))


def not_lab_layout() -> bytes:
    return make_zip([("data/bloodcells_small/B/x.png", png(0))])


def name_clash() -> bytes:
    folder = "data/bloodcells_small/train/B"
    return make_zip([*lab_entries(), (f"{folder}/a", b"a file"), (f"{folder}/a/b.png", png(7))])


def name_too_long() -> bytes:
    return make_zip([*lab_entries(), (f"data/bloodcells_small/train/B/{'x' * 300}.png", png(7))])


BAD = {
    "file/folder clash": (
        name_clash,
        "data/bloodcells_small/train/B/a is a file, but data/bloodcells_small/train/B/a/b.png "
        "needs a folder of that name",
    ),
    "name too long": (name_too_long, "cannot be written here"),
    "zip-slip": (zip_slip, "points outside the folder"),
    "absolute path": (absolute, "absolute path"),
    "backslash zip-slip": (backslash_slip, "points outside the folder"),
    "symlink": (with_symlink, "symbolic link"),
    "truncated zip": (truncated_zip, "not a readable zip"),
    "no bloodcells_small": (no_folder, "no folder bloodcells_small in the archive"),
    "not the lab layout": (not_lab_layout, "has no train/<class>/ images"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_archive_is_refused_and_leaves_nothing(server, tmp_path, private_cache, case):
    build, message = BAD[case]
    url = server.serve("/lab.zip", build())
    parent = tmp_path / "work"
    parent.mkdir()
    dest = parent / "data"
    with pytest.raises(DataError, match=message):
        download_lab(dest, url, progress=False, say=lambda s: None)
    assert not dest.exists()
    assert left_over(parent) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert cached_files(private_cache) == []  # a rejected download is not kept


def test_a_transfer_cut_off_is_one_line_and_leaves_nothing(server, tmp_path, private_cache):
    url = server.serve("/lab.zip", (good_zip(), "cut"))
    result = runner.invoke(
        app, ["data", "download", "lab", "--dest", str(tmp_path / "d"), "--url", url]
    )
    one_line_error(result, f"the download from {url} was cut off")
    assert left_over(tmp_path) == [] and cached_files(private_cache) == []


def test_a_hash_mismatch_is_one_line_and_leaves_nothing(server, tmp_path, private_cache):
    body = good_zip()
    url = server.serve("/lab.zip", body)
    wrong = hashlib.sha256(b"another file").hexdigest()
    args = ["data", "download", "lab", "--dest", str(tmp_path / "d"), "--url", url]
    result = runner.invoke(app, [*args, "--sha256", wrong])
    one_line_error(result, f"sha256 of the download is {hashlib.sha256(body).hexdigest()}")
    assert f"expected {wrong}" in result.output
    assert left_over(tmp_path) == [] and cached_files(private_cache) == []


def test_a_hash_mismatch_of_a_local_zip_keeps_the_users_file(tmp_path):
    archive = tmp_path / "lab.zip"
    archive.write_bytes(good_zip())
    with pytest.raises(DataError, match="not the lab's zip, or damaged"):
        download_lab(tmp_path / "d", str(archive), "0" * 64, say=lambda s: None)
    assert archive.exists() and not (tmp_path / "d").exists()


def test_too_big_and_too_many_entries_are_refused(server, tmp_path, monkeypatch):
    url = server.serve("/lab.zip", good_zip())
    monkeypatch.setattr(safezip, "MAX_BYTES", 10_000)
    with pytest.raises(DataError, match=r"unpacks to more than 0\.00 GB"):
        download_lab(tmp_path / "a", url, progress=False, say=lambda s: None)
    monkeypatch.setattr(safezip, "MAX_BYTES", 10**9)
    monkeypatch.setattr(safezip, "MAX_ENTRIES", 5)
    with pytest.raises(DataError, match="archive of 20 entries"):
        download_lab(tmp_path / "b", url, progress=False, say=lambda s: None)
    assert left_over(tmp_path) == []


def test_an_entry_whose_size_field_lies_is_refused(tmp_path):
    """A crafted size field (a zip bomb's trick) is not trusted: unpacking stops."""
    archive = tmp_path / "lab.zip"
    archive.write_bytes(make_zip(lab_entries()))
    with zipfile.ZipFile(archive) as zf:
        todo = safezip.plan(zf, "bloodcells_small", "lab.zip")
        todo.members[1].info.file_size = 10  # claims 10 bytes, holds a whole PNG
        with pytest.raises(DataError, match=r"damaged or truncated|more than it declares"):
            safezip.extract(zf, todo, tmp_path / "out" / "bloodcells_small", "lab.zip")
    assert not (tmp_path / "out").exists()


def test_unreachable_url_is_one_line_naming_the_url_and_url_option(tmp_path):
    url = closed_port_url()
    result = runner.invoke(
        app, ["data", "download", "lab", "--dest", str(tmp_path / "d"), "--url", url]
    )
    one_line_error(result, f"could not reach {url}")
    assert "--url" in result.output and "mirror" in result.output
    assert left_over(tmp_path) == []


def test_http_error_is_one_line(server, tmp_path):
    url = server.url("/missing.zip")
    result = runner.invoke(
        app, ["data", "download", "lab", "--dest", str(tmp_path / "d"), "--url", url]
    )
    one_line_error(result, "the server answered HTTP 404")


def test_an_existing_dest_is_refused_before_downloading(server, tmp_path):
    url = server.serve("/lab.zip", good_zip())
    (tmp_path / "bloodcells_small").mkdir()
    result = runner.invoke(app, ["data", "download", "lab", "--dest", str(tmp_path), "--url", url])
    one_line_error(result, "bloodcells_small: exists")
    assert server.requests == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cells"], "unknown data set cells; available: lab"),
        (["lab", "--sha256", "abc"], "--sha256 must be 64 hexadecimal digits, not abc"),
        (["lab", "--url", "ftp://example.org/x.zip"], "not a URL bloodcells can fetch"),
        (["lab", "--url", "nowhere [1].zip"], "nowhere [1].zip: no such file"),
        (["lab", "--url", "http://x/\x1b[31m.zip"], "--url must be a URL or a path"),
        (["lab", "--url", "file://host/x.zip"], "must name a local file"),
        (["lab", "--url", "/dev/null"], "/dev/null: not a file"),
        (["lab", "--url", "http://exa mple.org/x.zip"], "a URL has no spaces"),
        (["lab", "--url", "x" * 3000], "--url must be a URL or a path of 1 to 2048"),
        (["lab", "--max-size", "lots"], "--max-size must be a size such as 500MB"),
        (["lab", "--max-size", "0"], "--max-size must be a size such as 500MB"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["data", "download", *args, "--dest", str(tmp_path / "d")])
    one_line_error(result, message)
    assert left_over(tmp_path) == []


def test_interrupt_mid_extraction_leaves_no_half_folder(server, tmp_path, monkeypatch):
    url = server.serve("/lab.zip", good_zip())
    opened = []
    real_open = zipfile.ZipFile.open

    def open_then_interrupt(self, *args, **kwargs):
        opened.append(args[0])
        if len(opened) == 3:
            raise KeyboardInterrupt
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_then_interrupt)
    dest = tmp_path / "new" / "data"
    result = runner.invoke(app, ["data", "download", "lab", "--dest", str(dest), "--url", url])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output
    assert len(opened) == 3
    assert left_over(tmp_path) == []  # not even the parent folders it made


# --- limits: size, stalls, SIGTERM ------------------------------------------------------------


def endless_zeros(handler) -> None:
    """No Content-Length, zeros until the client hangs up (or 20 MB)."""
    handler.send_response(200)
    handler.end_headers()
    for _ in range(320):
        try:
            handler.wfile.write(bytes(1 << 16))
        except OSError:  # the client stopped reading
            return


def promises_a_terabyte(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10**12))
    handler.end_headers()
    handler.wfile.write(bytes(1000))


def headers_then_silence(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(bytes(100))
    handler.wfile.flush()
    handler.server.release.wait(10)


def silence(handler) -> None:
    handler.server.release.wait(10)


@pytest.mark.parametrize("answer", [endless_zeros, promises_a_terabyte])
def test_a_download_stops_at_max_size_and_keeps_nothing(
    server, tmp_path, private_cache, monkeypatch, answer
):
    monkeypatch.setattr(download, "RETRIES", 1)  # a size limit is not worth another try
    url = server.serve("/lab.zip", answer)
    with pytest.raises(DataError, match=r"passed the size limit of 100 kB and was stopped"):
        download_lab(tmp_path / "d", url, progress=False, say=lambda s: None, max_size=100_000)
    assert server.requests["/lab.zip"] == 1
    assert left_over(tmp_path) == [] and cached_files(private_cache) == []


def test_max_size_option_reaches_the_download(server, tmp_path, private_cache):
    url = server.serve("/lab.zip", endless_zeros)
    args = ["data", "download", "lab", "--dest", str(tmp_path / "d"), "--url", url]
    one_line_error(runner.invoke(app, [*args, "--max-size", "64kB"]), "size limit of 64 kB")
    assert cached_files(private_cache) == []
    default = inspect.signature(data_download).parameters["max_size"].default
    assert parse_size(default) == download.MAX_SIZE  # the option and the library agree


@pytest.mark.parametrize("answer", [headers_then_silence, silence])
def test_a_stalled_server_is_named_as_reached_and_stopped(
    server, tmp_path, private_cache, monkeypatch, answer
):
    monkeypatch.setattr(download, "RETRIES", 1)  # a stall is not retried
    url = server.serve("/lab.zip", answer)
    with pytest.raises(DataError, match=r"was reached but stopped sending \(nothing for 0.3 s\)"):
        download_lab(tmp_path / "d", url, progress=False, say=lambda s: None, read_timeout=0.3)
    assert server.requests["/lab.zip"] == 1
    assert left_over(tmp_path) == [] and cached_files(private_cache) == []


def test_python_errors_name_the_parameters(tmp_path):
    with pytest.raises(DataError, match=r"^'url' must be a URL or a path of 1 to 2048"):
        download_lab(tmp_path, "x" * 3000, say=lambda s: None)
    with pytest.raises(DataError, match=r"^'sha256' must be 64 hexadecimal digits, not abc"):
        download.check_sha256("abc")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_size": 0}, "max_size must be a whole number of bytes above 0, not 0"),
        ({"max_size": 1.5}, "max_size must be a whole number"),
        ({"read_timeout": float("nan")}, "read_timeout must be a number of seconds above 0"),
        ({"read_timeout": "5"}, "read_timeout must be a number of seconds"),
    ],
)
def test_bad_limits_are_refused_before_anything(server, tmp_path, limits, message):
    url = server.serve("/lab.zip", good_zip())
    with pytest.raises(DataError, match=message):
        download_lab(tmp_path / "d", url, say=lambda s: None, **limits)
    assert server.requests == {}


def test_a_wrong_sha256_also_removes_an_older_cached_download(server, tmp_path, private_cache):
    url = server.serve("/lab.zip", good_zip())
    download_lab(tmp_path / "a", url, progress=False, say=lambda s: None)
    assert len(cached_files(private_cache)) == 1
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(DataError, match=f"expected {wrong}"):
        download_lab(tmp_path / "b", url, wrong, progress=False, say=lambda s: None)
    assert cached_files(private_cache) == []


def test_sigterm_inside_cleanup_on_sigterm_unwinds_like_ctrl_c(tmp_path):

    partial = tmp_path / "tmp-partial"
    with pytest.raises(SystemExit) as stopped, cleanup_on_sigterm():
        try:
            partial.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once
        finally:
            partial.unlink()
    assert stopped.value.code == 143 and not partial.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back afterwards


def test_sigterm_mid_download_leaves_nothing_in_the_cache(server, tmp_path):

    def slow_zeros(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**9))
        handler.end_headers()
        while not handler.server.release.is_set():
            try:
                handler.wfile.write(bytes(1 << 14))
            except OSError:
                return
            time.sleep(0.02)

    url = server.serve("/lab.zip", slow_zeros)
    cache = tmp_path / "cache"
    code = (
        "import sys; from bloodcells.data.sources.download import download_lab; "
        "download_lab(sys.argv[1], sys.argv[2], progress=False)"
    )
    env = {**os.environ, "BLOODCELLS_CACHE": str(cache)}
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d"), url], env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in cached_files(cache) if p.is_file()):
            assert child.poll() is None and time.monotonic() < deadline, "no download started"
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 143
    finally:
        child.kill()
    assert cached_files(cache) == [] and left_over(tmp_path) == ["cache"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2 * 10**9),
        ("500mb", 500 * 10**6),
        ("1.5 G", 1_500_000_000),
        ("64kB", 64_000),
        ("3KiB", 3 * 1024),
        ("100", 100),
    ],
)
def test_max_size_reads_units(text, size):
    assert parse_size(text) == size
