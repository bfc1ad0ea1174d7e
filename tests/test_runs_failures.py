"""Run folders under failure: a full disk mid-save, damaged files, one clear error each."""

from __future__ import annotations

import csv
import errno
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bloodcells.data import load_dataset
from bloodcells.errors import RunError
from bloodcells.runs import load_run, resume_training, start_training
from bloodcells.training.loop import TrainConfig
from bloodcells.utils.locks import LOCK_FILE

EPOCH_FILES = ("weights.pt", "history.csv", "metrics.json", "checkpoint.pt")


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"model": "advanced", "epochs": 3, "lr": 1e-3, **overrides})


def fail_epoch_file_write(monkeypatch, number: int, error: OSError) -> None:
    """Make the `number`th write of an epoch file write half its data, then raise `error`."""
    real = Path.write_bytes
    count = 0

    def write_bytes(self: Path, data: bytes) -> int:
        nonlocal count
        if not any(self.name.startswith(f".{name}.tmp") for name in EPOCH_FILES):
            return real(self, data)
        count += 1
        if count == number:
            real(self, data[: len(data) // 2])
            raise error
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def assert_consistent_at(run_dir: Path, epoch: int) -> None:
    """Every file of the run folder holds the same, finished `epoch`; no temporary files."""
    weights = torch.load(run_dir / "weights.pt", weights_only=True)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert weights.keys() == checkpoint["model"].keys()
    for name, value in weights.items():
        assert torch.equal(value, checkpoint["model"][name]), name
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epoch + 1))
    assert [e["epoch"] for e in checkpoint["history"]] == list(range(1, epoch + 1))
    assert json.loads((run_dir / "metrics.json").read_text())["epoch"] == epoch
    kept = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    assert kept == sorted(("config.json", *EPOCH_FILES))


def test_a_full_disk_mid_epoch_keeps_the_last_whole_epoch(easy_root, tmp_path, monkeypatch):
    splits = load_dataset(easy_root)
    # 4 files an epoch: the 7th write is the third file (metrics.json) of epoch 2
    fail_epoch_file_write(monkeypatch, 7, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RunError) as raised:
        start_training(splits, config(), out=tmp_path / "runs")
    assert str(raised.value).endswith(
        ": no space left on device while saving epoch 2; the run folder still holds epoch 1"
    )
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__context__ is raised.value.__cause__  # no second error on top
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert_consistent_at(run_dir, 1)
    monkeypatch.undo()
    assert len(load_run(run_dir).history) == 1
    assert [e.epoch for e in resume_training(run_dir).history.epochs] == [1, 2, 3]


def test_a_failed_first_save_says_no_epoch_is_kept(easy_root, tmp_path, monkeypatch):
    splits = load_dataset(easy_root)
    fail_epoch_file_write(monkeypatch, 4, OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(RunError, match="permission denied while saving epoch 1; the run folder "):
        start_training(splits, config(), out=tmp_path / "runs")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert [p.name for p in run_dir.iterdir() if p.name != LOCK_FILE] == ["config.json"]
    with pytest.raises(RunError, match="no finished epoch"):
        load_run(run_dir)


def test_an_interrupt_while_saving_leaves_no_temporary_files(easy_root, tmp_path, monkeypatch):
    splits = load_dataset(easy_root)
    fail_epoch_file_write(monkeypatch, 6, KeyboardInterrupt())  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        start_training(splits, config(), out=tmp_path / "runs")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert_consistent_at(run_dir, 1)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only); one epoch of the advanced CNN fits, its next save does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]
    try:
        mounted = subprocess.run(mount, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True, timeout=10)


def test_a_really_full_disk_keeps_the_last_whole_epoch(easy_root, small_disk):
    splits = load_dataset(easy_root)
    with pytest.raises(RunError, match="no space left on device while saving epoch 2; the run"):
        start_training(splits, config(), out=small_disk)
    (run_dir,) = small_disk.iterdir()
    assert_consistent_at(run_dir, 1)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the two-epoch `trained` run, free to damage."""
    run, _ = trained
    return Path(shutil.copytree(run.path, tmp_path / run.path.name))


def damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "garbage":
        file.write_bytes(bytes(range(256)) * 4)
    elif how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    else:
        file.write_bytes(b"")


HOW = ("garbage", "truncated", "empty")


def damaged_message(file: Path) -> str:
    return rf"^{file}: unreadable \(.+\); the run folder is damaged$"


@pytest.mark.parametrize("how", HOW)
def test_damaged_weights_are_a_run_error(run_copy, how):
    damage(run_copy / "weights.pt", how)
    run = load_run(run_copy)
    with pytest.raises(RunError, match=damaged_message(run_copy / "weights.pt")):
        run.load_model()


@pytest.mark.parametrize("file", ["checkpoint.pt", "metrics.json", "config.json"])
@pytest.mark.parametrize("how", HOW)
def test_damaged_run_files_are_a_run_error(run_copy, file, how):
    damage(run_copy / file, how)
    with pytest.raises(RunError, match=damaged_message(run_copy / file)):
        load_run(run_copy)
    with pytest.raises(RunError, match=damaged_message(run_copy / file)):
        resume_training(run_copy, epochs=3)


def test_weights_of_another_model_are_a_run_error(run_copy):
    torch.save(torch.nn.Linear(2, 2).state_dict(), run_copy / "weights.pt")
    with pytest.raises(RunError, match="does not fit the run's model"):
        load_run(run_copy).load_model()


def test_a_checkpoint_that_does_not_fit_is_a_run_error_on_resume(run_copy):
    checkpoint = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "optimizer": {"state": {}}}, run_copy / "checkpoint.pt")
    with pytest.raises(RunError, match=r"checkpoint\.pt: unreadable \(does not fit the run"):
        resume_training(run_copy, epochs=3)
    torch.save({**checkpoint, "model": {"w": torch.zeros(1)}}, run_copy / "checkpoint.pt")
    with pytest.raises(RunError, match=r"checkpoint\.pt: unreadable \(does not fit the run"):
        resume_training(run_copy, epochs=3)
    torch.save([1, 2, 3], run_copy / "checkpoint.pt")
    with pytest.raises(RunError, match="not a checkpoint"):
        load_run(run_copy)
