"""Run folders: what is written, atomically, read back, and resumed after an interruption."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from bloodcells.data import load_dataset
from bloodcells.errors import RunError
from bloodcells.runs import load_run, resume_training, start_training, write_atomic
from bloodcells.train import Callback, TrainConfig, evaluate


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
    assert metrics["confusion_matrix"] == result.confusion(3)
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
    assert kept.metrics["status"] == "interrupted"
    resumed = resume_training(interrupted, epochs=4)
    assert resumed.history.column("dev_loss") == straight.history.column("dev_loss")
    assert resumed.history.column("train_loss") == straight.history.column("train_loss")
    assert resumed.metrics["accuracy"] == straight.metrics["accuracy"]
    assert resumed.config.epochs == 4 and resumed.metrics["status"] == "finished"


def test_resume_beyond_a_finished_run_continues_it(easy_root, tmp_path):
    run = start_training(load_dataset(easy_root), config(epochs=2), out=tmp_path)
    with pytest.raises(RunError, match="already has 2 epochs"):
        resume_training(run.path)
    longer = resume_training(run.path, epochs=3)
    assert [e.epoch for e in longer.history.epochs] == [1, 2, 3]


def test_files_are_replaced_atomically(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_atomic(target, '{"epoch": 1}')

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("bloodcells.runs.os.replace", crash)
    with pytest.raises(OSError):
        write_atomic(target, '{"epoch": 2, "half')
    assert json.loads(target.read_text()) == {"epoch": 1}


def test_every_epoch_leaves_a_complete_readable_run(easy_root, tmp_path):
    seen = []

    class ReadBack(Callback):
        def on_epoch_end(self, state):
            seen.append(len(load_run(run_dir).history))

    from bloodcells.runs import RunWriter, new_run_dir
    from bloodcells.train import fit, make_model

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
