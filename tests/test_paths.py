"""Paths that outlive a command are absolute; only regular files are ever opened."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from bloodcells.data import Transform, cache_dir, load_dataset
from bloodcells.data.inputs import find_images, load_image
from bloodcells.errors import DataWarning
from bloodcells.inference.predictor import Predictor
from tests.conftest import write_layout
from tests.helpers import invoke


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A simple CNN trained for one epoch with a relative --data; its lab folder and cache."""
    lab, cache = tmp_path_factory.mktemp("lab"), tmp_path_factory.mktemp("cache")
    write_layout(lab / "rel" / "easy", per_class=(6, 3))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLOODCELLS_CACHE", str(cache))
        mp.chdir(lab)
        args = ("--data", "rel/easy", "--model", "simple", "--epochs", "1", "--out", "runs")
        result = invoke("train", *args)
        assert result.exit_code == 0, result.output
    (run,) = (lab / "runs").iterdir()
    return run, lab, cache


def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere" / "deeper"
    folder.mkdir(parents=True)
    return folder


def test_dataset_paths_are_absolute_and_the_same_from_any_working_folder(tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    root = write_layout(lab / "rel" / "easy", per_class=(3, 2))
    monkeypatch.chdir(lab)
    gray = load_dataset("rel/easy")
    assert gray.root == root.resolve()
    for path in gray.train.paths + gray.test.paths:
        assert os.path.isabs(path) and Path(path).is_relative_to(root.resolve())
    monkeypatch.chdir(elsewhere(tmp_path))
    cached = load_dataset(os.path.relpath(root))  # another spelling: the same cache, same paths
    rgb = load_dataset(root, Transform(channels=3))
    assert cached.test.paths == gray.test.paths == rgb.test.paths
    assert cached.train.paths == gray.train.paths


def test_a_cache_file_with_relative_paths_is_not_trusted(tmp_path, monkeypatch):
    root = write_layout(tmp_path / "easy", per_class=(3, 2))
    monkeypatch.chdir(tmp_path)
    expected = load_dataset(root).test.paths
    for file in cache_dir().glob("*.pt"):  # as an older version kept them
        payload = torch.load(file, weights_only=True)
        payload["paths"] = [os.path.relpath(p) for p in payload["paths"]]
        torch.save(payload, file)
    assert load_dataset(root).test.paths == expected


def test_robustness_of_a_run_trained_on_a_relative_root_from_two_folders(
    relative_run, tmp_path, monkeypatch
):
    run, lab, cache = relative_run
    monkeypatch.setenv("BLOODCELLS_CACHE", str(cache))  # what training cached, read again
    assert json.loads((run / "config.json").read_text())["data_root"] == str(lab / "rel" / "easy")
    for cwd in (lab, elsewhere(tmp_path)):
        monkeypatch.chdir(cwd)
        result = invoke("robustness", run, "--per-class", "1", "--json")
        assert result.exit_code == 0, result.output


def release(fifo: Path) -> None:
    """Open `fifo` for writing and close it: a reader blocked on it goes on."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def finishes(fn, fifo: Path, timeout: float = 20.0):
    """fn()'s result; a test failure, not a hang, when it waits on the named pipe `fifo`."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        release(fifo)
        thread.join(timeout)
        pytest.fail(f"{fifo}: opened and waited on")
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_among_inputs_is_an_unreadable_row(relative_run, tmp_path):
    run, lab, _ = relative_run
    cells = tmp_path / "cells"
    cells.mkdir()
    Image.open(next((lab / "rel/easy/test/disc").iterdir())).save(cells / "cell.png")
    os.mkfifo(cells / "pipe.png")
    found = find_images([cells])
    assert [os.path.basename(f) for f in found.files] == ["cell.png", "pipe.png"]
    reason = finishes(lambda: load_image(str(cells / "pipe.png"), Transform()), cells / "pipe.png")
    assert reason == "a named pipe (FIFO), not a regular file"
    predictor = Predictor.from_path(run)
    rows = finishes(lambda: predictor.predict([cells]).rows, cells / "pipe.png")
    statuses = {os.path.basename(r["path"]): r["status"] for r in rows}
    assert statuses["pipe.png"] == "unreadable" and statuses["cell.png"] != "unreadable"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_in_a_class_folder_is_listed_and_never_opened(tmp_path):
    write_layout(tmp_path, per_class=(3, 2))
    pipe = tmp_path / "train" / "disc" / "pipe.png"
    os.mkfifo(pipe)
    with pytest.warns(DataWarning) as caught:
        splits = finishes(lambda: load_dataset(tmp_path), pipe)
    expected = f"{pipe}: skipped, a named pipe (FIFO), not a regular file"
    assert expected in [str(w.message) for w in caught]
    assert expected in splits.summary()["problems"] and len(splits.train) == 9


def test_a_broken_link_is_an_unreadable_row_by_folder_glob_or_name(relative_run, tmp_path):
    run, lab, _ = relative_run
    cells = tmp_path / "cells"
    cells.mkdir()
    Image.open(next((lab / "rel/easy/test/disc").iterdir())).save(cells / "cell.png")
    (cells / "gone.png").symlink_to(tmp_path / "nowhere.png")
    predictor = Predictor.from_path(run)
    for given in ([cells], [str(cells / "*.png")], [cells / "cell.png", cells / "gone.png"]):
        found = find_images(given)
        assert [os.path.basename(f) for f in found.files] == ["cell.png", "gone.png"]
        rows = {os.path.basename(r["path"]): r for r in predictor.predict(given).rows}
        assert rows["gone.png"]["status"] == "unreadable", given
        assert rows["cell.png"]["status"] != "unreadable"
    assert load_image(str(cells / "gone.png"), Transform()) == "a broken link"


def test_a_broken_link_in_a_class_folder_is_listed(tmp_path):
    write_layout(tmp_path, per_class=(3, 2))
    link = tmp_path / "train" / "disc" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    with pytest.warns(DataWarning, match=r"gone\.png: skipped, a broken link"):
        splits = load_dataset(tmp_path)
    assert len(splits.train) == 9
