"""files.staged_folder: a folder appears complete or not at all, whatever goes wrong."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bloodcells.errors import DataError, DataWarning
from bloodcells.utils.files import STAGING_WRITER, staged_folder
from bloodcells.utils.locks import writer_identity


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_staged_folder_appears_only_at_the_end(tmp_path):
    dest = tmp_path / "out"
    with staged_folder(dest) as staging:
        (staging / "a.txt").write_text("a")
        assert not dest.exists() and staging.parent == tmp_path
        assert staging.name.startswith(".out.partial-")
    assert names(tmp_path) == ["out"] and names(dest) == ["a.txt"]


def test_an_error_removes_the_staging_folder_and_the_parents_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt), staged_folder(tmp_path / "kept" / "a" / "b" / "out"):
        raise KeyboardInterrupt
    assert names(tmp_path) == ["kept"] and names(tmp_path / "kept") == []


def test_replace_swaps_the_old_folder_out(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with staged_folder(dest, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert names(tmp_path) == ["out"] and names(dest) == ["new.txt"]


def test_an_error_leaves_the_old_folder_as_it_was(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(OSError), staged_folder(dest, replace=True) as staging:
        (staging / "new.txt").write_text("new")
        raise OSError("disk full")
    assert names(tmp_path) == ["out"] and names(dest) == ["old.txt"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    real = Path.rename

    def rename(self, target):
        if self.name.startswith(".out.partial-"):
            raise OSError("cannot rename")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="cannot rename"), staged_folder(dest, replace=True):
        pass
    assert names(tmp_path) == ["out"] and names(dest) == ["old.txt"]


def test_a_folder_that_appears_meanwhile_is_not_replaced(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(DataError, match="out: exists"), staged_folder(dest) as staging:
        (staging / "new.txt").write_text("new")
        dest.mkdir()
        (dest / "theirs.txt").write_text("theirs")
    assert names(tmp_path) == ["out"] and names(dest) == ["theirs.txt"]


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_stale_partial_is_removed_and_a_live_one_left(tmp_path):
    dest = tmp_path / "out"
    stale, live, unknown = (tmp_path / f".out.partial-{k}" for k in ("dead0000", "live0000", "x"))
    for folder in (stale, live, unknown):
        folder.mkdir()
        (folder / "a.png").write_bytes(b"half")
    gone = {"pid": dead_pid(), "host": socket.gethostname(), "process_start": None}
    (stale / STAGING_WRITER).write_text(json.dumps(gone))
    (live / STAGING_WRITER).write_text(json.dumps(writer_identity()))
    other = tmp_path / ".other.partial-dead0000"  # another DEST's: not this one's to remove
    other.mkdir()
    (other / STAGING_WRITER).write_text(json.dumps(gone))
    unknown_warning = r"\.out\.partial-x: left by an earlier run"
    with pytest.warns(DataWarning, match=unknown_warning), staged_folder(dest) as staging:
        assert json.loads((staging / STAGING_WRITER).read_text())["pid"] == os.getpid()
        (staging / "b.png").write_bytes(b"whole")
    assert not stale.exists() and live.is_dir() and unknown.is_dir() and other.is_dir()
    assert sorted(p.name for p in dest.iterdir()) == ["b.png"]  # no writer record left in it
