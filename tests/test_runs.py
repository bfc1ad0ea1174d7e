"""Run folders: what is written, atomically, read back, and resumed after an interruption."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from bloodcells.data import load_dataset
from bloodcells.errors import BloodcellsError, RunError
from bloodcells.evaluation.core import evaluate
from bloodcells.runs import load_run, resume_training, start_training
from bloodcells.training.config import TrainConfig
from bloodcells.training.records import Callback
from bloodcells.utils.files import write_atomic
from bloodcells.utils.locks import LOCK_FILE, folder_lock
from tests.helpers import invoke, one_line_error

HOLD = """
import sys, time
from bloodcells.utils.locks import folder_lock
with folder_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(60)
"""


@contextmanager
def held_by_another_process(folder: Path):
    """`folder` locked by a second Python process, as another bloodcells command holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"model": "advanced", "epochs": 3, "lr": 1e-3, **overrides})


def test_a_run_folder_holds_config_history_metrics_and_weights(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    run = start_training(splits, config(), out=tmp_path / "runs")
    assert run.path.parent == tmp_path / "runs" and run.path.name.endswith("-advanced")
    info = json.loads((run.path / "config.json").read_text())
    assert info["classes"] == splits.classes and info["config"]["seed"] == 0
    assert info["parameters"] > 0 and "torch" in info["versions"]
    rows = list(csv.DictReader((run.path / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epoch"] == 3
    assert set(metrics["per_class"]) == set(splits.classes)
    # metrics.json agrees with evaluating the saved weights from scratch
    result = evaluate(run.load_model(), splits.test)
    assert metrics["accuracy"] == pytest.approx(result.accuracy)
    assert metrics["confusion_matrix"] == result.confusion()
    assert not list(run.path.glob(".*tmp*"))


def test_weights_load_with_weights_only(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1), out=tmp_path)
    state = torch.load(run.path / "weights.pt", weights_only=True)
    assert "0.weight" in state


def test_two_runs_never_share_a_folder(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    a = start_training(splits, config(epochs=1, model="simple"), out=tmp_path)
    b = start_training(splits, config(epochs=1, model="simple"), out=tmp_path)
    assert a.path != b.path and (a.path / "weights.pt").exists()


class InterruptAt(Callback):
    """Simulates Ctrl-C in the middle of an epoch."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_batch_end(self, state) -> None:
        if (state.epoch, state.batch) == self.at:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_gives_the_uninterrupted_numbers(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    straight = start_training(splits, config(epochs=4), out=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        start_training(splits, config(epochs=4), out=tmp_path / "b", callbacks=[InterruptAt(3, 2)])
    (interrupted,) = (tmp_path / "b").iterdir()
    kept = load_run(interrupted)
    assert len(kept.history) == 2  # every finished epoch, nothing of the broken one
    assert kept.metrics.status == "interrupted"
    resumed = resume_training(interrupted, epochs=4)
    assert resumed.history.column("dev_loss") == straight.history.column("dev_loss")
    assert resumed.history.column("train_loss") == straight.history.column("train_loss")
    assert resumed.metrics.accuracy == straight.metrics.accuracy
    assert resumed.config.epochs == 4 and resumed.metrics.status == "finished"


def test_resume_beyond_a_finished_run_continues_it(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=2), out=tmp_path)
    with pytest.raises(RunError, match="already has 2 epochs"):
        resume_training(run.path, epochs=2)
    longer = resume_training(run.path, epochs=3)
    assert [e.epoch for e in longer.history.epochs] == [1, 2, 3]


def test_resume_without_epochs_trains_to_the_runs_own_target(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    with pytest.raises(KeyboardInterrupt):
        start_training(splits, config(epochs=3), out=tmp_path / "r", callbacks=[InterruptAt(2, 1)])
    (run_dir,) = (tmp_path / "r").iterdir()
    assert len(load_run(run_dir).history) == 1
    resumed = resume_training(run_dir)
    assert [e.epoch for e in resumed.history.epochs] == [1, 2, 3]
    assert resumed.metrics.status == "finished" and resumed.config.epochs == 3
    with pytest.raises(RunError, match=r"finished.*pass epochs above 3"):
        resume_training(run_dir)
    with pytest.raises(TypeError):  # the run's own model, learning rate, seed: nothing else
        resume_training(run_dir, epochs=4, lr=1.0)  # type: ignore[call-arg]
    with pytest.raises(BloodcellsError, match="epochs must be at most"):
        resume_training(run_dir, epochs=10**9)


def test_files_are_replaced_atomically(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_atomic(target, '{"epoch": 1}')

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("bloodcells.utils.files.os.replace", crash)
    with pytest.raises(OSError):
        write_atomic(target, '{"epoch": 2, "half')
    assert json.loads(target.read_text()) == {"epoch": 1}


def test_every_epoch_leaves_a_complete_readable_run(easy_root, tmp_path):
    seen = []

    class ReadBack(Callback):
        def on_epoch_end(self, state):
            seen.append(len(load_run(run_dir).history))

    from bloodcells.runs import RunWriter, new_run_dir
    from bloodcells.training.loop import fit, make_model

    splits = load_dataset(easy_root)
    run_dir = new_run_dir(tmp_path, "advanced")
    cfg = config()
    model = make_model(cfg, 3)
    fit(model, splits.train, splits.test, cfg, [RunWriter(run_dir, easy_root), ReadBack()])
    assert seen == [1, 2, 3]


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path)


def test_evaluating_on_data_with_other_classes_is_refused(easy_root, tmp_path):
    from conftest import write_layout

    run = start_training(load_dataset(easy_root), config(epochs=1), out=tmp_path / "runs")
    other = write_layout(tmp_path / "other", classes=("x", "y"), per_class=(2, 2))
    with pytest.raises(RunError, match="differ from the run's"):
        run.load_data(other)


def test_a_run_whose_writer_was_killed_reads_as_interrupted(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1, model="simple"), out=tmp_path)
    writer = run.metrics.writer
    assert writer["pid"] == os.getpid() and writer["host"] == socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has any more (a kill -9 leaves the same)
    metrics_file = run.path / "metrics.json"
    saved = json.loads(metrics_file.read_text())
    written = {**saved, "status": "running", "writer": {**writer, "pid": gone.pid}}
    metrics_file.write_text(json.dumps(written))
    assert load_run(run.path).metrics.status == "interrupted"
    assert json.loads(metrics_file.read_text())["status"] == "running"  # only read, not changed
    resumed = resume_training(run.path, epochs=2)
    assert resumed.metrics.status == "finished"


def test_a_running_writer_is_told_apart_from_a_reused_pid(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1, model="simple"), out=tmp_path)
    metrics_file = run.path / "metrics.json"
    saved = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**saved, "status": "running"}))
    assert load_run(run.path).metrics.status == "running"  # this process: alive
    if saved["writer"]["process_start"] is None:
        pytest.skip("no /proc here: process start times are unknown")
    reused = {**saved["writer"], "process_start": saved["writer"]["process_start"] - 1}
    metrics_file.write_text(json.dumps({**saved, "status": "running", "writer": reused}))
    assert load_run(run.path).metrics.status == "interrupted"


def test_another_process_training_the_run_is_not_resumed_over(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1, model="simple"), out=tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        metrics_file = run.path / "metrics.json"
        saved = json.loads(metrics_file.read_text())
        writer = {"pid": other.pid, "host": socket.gethostname(), "process_start": None}
        metrics_file.write_text(json.dumps({**saved, "status": "running", "writer": writer}))
        with pytest.raises(RunError, match=f"process {other.pid} is training this run"):
            resume_training(run.path, epochs=2)
    finally:
        other.kill()
        other.wait()


def test_configs_older_versions_wrote_still_load(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1), out=tmp_path)
    info = json.loads((run.path / "config.json").read_text())
    old = {"seed": 2**40, "device": "mps", "batch_size": 100_000, "epochs": 20_000}
    info["config"] |= old | {"options": {"head_dropout": 1.0}}
    (run.path / "config.json").write_text(json.dumps(info))
    loaded = load_run(run.path)
    assert loaded.config.seed == 2**40 and loaded.config.options == {"head_dropout": 1.0}
    assert loaded.config.with_epochs(30).epochs == 30 and loaded.config.seed == 2**40


def test_a_config_with_an_unknown_model_or_field_is_a_damaged_run(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1, model="simple"), out=tmp_path)
    info = json.loads((run.path / "config.json").read_text())
    for config_ in ({**info["config"], "model": "gone"}, {**info["config"], "colour": 1}):
        (run.path / "config.json").write_text(json.dumps({**info, "config": config_}))
        with pytest.raises(RunError, match=r"config\.json: unreadable .*damaged"):
            load_run(run.path)


@pytest.mark.parametrize(
    "bad",
    [{"device": "mps"}, {"image_size": 4}, {"options": {"extra_fc": 4097}}],
    ids=["device", "image-size", "option"],
)
def test_a_refused_config_or_model_leaves_no_run_folder(easy_root, tmp_path, bad):
    splits = load_dataset(easy_root)
    out = tmp_path / "runs"
    with pytest.raises(BloodcellsError):  # ModelError is one
        start_training(splits, config(**bad), out=out)
    assert not out.exists() or not list(out.iterdir())


def test_a_missing_gpu_is_refused_before_any_run_folder(easy_root, tmp_path, monkeypatch):
    splits = load_dataset(easy_root)
    cfg = config(device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BloodcellsError, match="no CUDA GPU"):
        start_training(splits, cfg, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_run_another_process_writes_is_not_resumed_until_that_process_dies(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1, model="simple"), out=tmp_path)
    with held_by_another_process(run.path) as holder:
        with pytest.raises(RunError) as error:
            resume_training(run.path, epochs=2)
        message = str(error.value)
        assert message.startswith(f"{run.path}: process {holder.pid} on host ")
        assert socket.gethostname() in message and " since 20" in message
        assert f"(-c {run.path}) is writing this run right now; wait" in message  # its command
        one_line_error(invoke("train", "--resume", run.path), f"process {holder.pid} on host")
        holder.kill()  # kill -9: the OS drops its lock, nothing stale is left
        holder.wait()
        assert len(resume_training(run.path, epochs=2).history) == 2
    assert len(load_run(run.path).history) == 2


def test_a_new_run_into_a_locked_folder_is_refused_and_a_finished_one_is_unlocked(
    easy_root, tmp_path
):
    fcntl = pytest.importorskip("fcntl")
    splits = load_dataset(easy_root)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / LOCK_FILE, "w") as other:  # another open file: another holder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunError, match="another process is writing this run right now"):
            start_training(splits, config(epochs=1, model="simple"), run_dir=run_dir)
    assert not (run_dir / "config.json").exists()
    run = start_training(splits, config(epochs=1, model="simple"), run_dir=run_dir)
    with open(run.path / LOCK_FILE) as after:
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when training ended
        assert json.loads(after.read())["pid"] == os.getpid()  # who held it last


def test_nested_holds_in_one_process_share_the_lock(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with (
        folder_lock(tmp_path, "run"),
        folder_lock(tmp_path, "run"),
        open(tmp_path / LOCK_FILE) as other,
        pytest.raises(BlockingIOError),
    ):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / LOCK_FILE) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # both holds ended: free


def test_a_run_stopped_before_its_target_says_so(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    with pytest.raises(KeyboardInterrupt):
        start_training(splits, config(epochs=3), out=tmp_path / "r", callbacks=[InterruptAt(2, 1)])
    (run_dir,) = (tmp_path / "r").iterdir()
    run = load_run(run_dir)
    assert run.interrupted and (run.epochs_done, run.epochs_target) == (1, 3)
    result = invoke("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert f"note: {run_dir} was interrupted at epoch 1 of 3" in result.stderr
    finished = resume_training(run_dir)
    assert not finished.interrupted and finished.epochs_done == finished.epochs_target == 3
    assert "interrupted" not in invoke("evaluate", run_dir).stderr


def test_a_killed_writer_reads_as_an_interrupted_run(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=1, model="simple"), out=tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    metrics_file = run.path / "metrics.json"
    saved = json.loads(metrics_file.read_text())
    writer = {**saved["writer"], "pid": gone.pid}
    metrics_file.write_text(json.dumps({**saved, "status": "running", "writer": writer}))
    info = json.loads((run.path / "config.json").read_text())
    info["config"]["epochs"] = 4  # killed while resumed to 4 epochs, before epoch 2 was saved
    (run.path / "config.json").write_text(json.dumps(info))
    run = load_run(run.path)
    assert run.interrupted and (run.epochs_done, run.epochs_target) == (1, 4)


def test_the_data_root_is_recorded_absolute_and_found_from_another_folder(tmp_path, monkeypatch):
    from conftest import write_layout

    (tmp_path / "elsewhere").mkdir()
    write_layout(tmp_path / "here" / "easy", per_class=(8, 4))
    monkeypatch.chdir(tmp_path / "here")
    run = start_training(load_dataset("easy"), config(epochs=1, model="simple"), out="runs")
    info = json.loads((run.path / "config.json").read_text())
    assert info["data_root"] == str((tmp_path / "here" / "easy").resolve())
    run_dir = (tmp_path / "here" / run.path).resolve()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_run(run_dir).load_data().classes == ["bar", "disc", "square"]
    result = invoke("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert len(resume_training(run_dir, epochs=2).history) == 2
