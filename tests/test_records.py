"""The run folder's typed record: config.json and metrics.json as earlier versions wrote them
load, and what loads is written back with the same keys and values."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bloodcells.errors import RunError
from bloodcells.evaluation import UnlikePolicy
from bloodcells.inference.predictor import Predictor
from bloodcells.runs import RunInfo, RunMetrics, SweepMember, load_run
from bloodcells.runs.record import read_info, read_metrics

# config.json and metrics.json exactly as bloodcells wrote them before the record was typed
# (a sweep member, resumed once; the unlike-training policy without its dev share)
OLD_CONFIG = {
    "config": {
        "model": "simple",
        "epochs": 2,
        "batch_size": 8,
        "lr": 0.001,
        "seed": 0,
        "device": "cpu",
        "image_size": 32,
        "channels": 1,
        "options": {},
        "recipe": "lab",
        "schedule": "none",
        "label_smoothing": 0.0,
        "amp": False,
        "augment": "none",
    },
    "classes": ["bar", "disc", "square"],
    "data_root": "/data/easy",
    "transform": {"size": 32, "channels": 1},
    "parameters": 12345,
    "device": "cpu",
    "learning_rate": 0.001,
    "created": "2025-01-02T03:04:05+00:00",
    "command": ["bloodcells", "sweep", "--data", "/data/easy"],
    "versions": {"bloodcells": "0.1.0", "torch": "2.8.0"},
    "sweep": {
        "folder": "sweep-0123456789",
        "variant": "base",
        "seed": 0,
        "trained": "stacked",
        "stack_size": 4,
    },
    "resumed": ["2025-01-02T04:00:00+00:00"],
}
OLD_METRICS = {
    "n": 36,
    "accuracy": 0.75,
    "balanced_accuracy": 0.75,
    "majority_baseline": 0.3333333333333333,
    "chance": 0.3333333333333333,
    "per_class": {
        c: {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 12}
        for c in ("bar", "disc", "square")
    },
    "classes": ["bar", "disc", "square"],
    "confusion_matrix": [[9, 2, 1], [1, 9, 2], [2, 1, 9]],
    "loss": 0.61,
    "unlike_training": {
        "score": "energy",
        "percentile": 95.0,
        "threshold": -3.25,
        "pixel_range": {
            "mean": [0.4, 0.6],
            "std": [0.1, 0.2],
            "percentiles": [0.5, 99.5],
            "images": 120,
        },
    },
    "epoch": 2,
    "epochs": 2,
    "status": "finished",
    "dev_loss": 0.61,
    "train_loss": 0.7,
    "train_seconds": 3.5,
    "writer": {"pid": 1, "host": "elsewhere", "started": "2025-01-02T04:00:00+00:00"},
}


def test_a_config_json_an_earlier_version_wrote_loads_typed_and_writes_back_the_same():
    info = RunInfo.from_dict(json.loads(json.dumps(OLD_CONFIG)))
    assert info.config.model == "simple" and info.classes == ["bar", "disc", "square"]
    assert info.parameters == 12345 and info.learning_rate == 0.001
    assert info.sweep == SweepMember("sweep-0123456789", "base", 0, "stacked", 4)
    assert info.resumed == ["2025-01-02T04:00:00+00:00"]
    assert info.to_dict() == OLD_CONFIG
    assert list(info.to_dict()) == list(OLD_CONFIG)  # the keys in the order they were written


def test_a_metrics_json_an_earlier_version_wrote_loads_typed_and_writes_back_the_same():
    metrics = RunMetrics.from_dict(json.loads(json.dumps(OLD_METRICS)))
    assert metrics.accuracy == 0.75 and metrics.status == "finished" and metrics.epoch == 2
    assert metrics.per_class["disc"]["support"] == 12
    policy = metrics.unlike_training
    assert policy.threshold == -3.25 and policy.pixel_range["std"] == [0.1, 0.2]
    assert policy.dev_flagged is None  # not recorded then
    assert metrics.to_dict() == OLD_METRICS | {
        "unlike_training": OLD_METRICS["unlike_training"] | {"dev_flagged": None}
    }
    assert list(metrics.to_dict()) == list(OLD_METRICS)


def test_keys_this_version_does_not_know_are_kept():
    info = RunInfo.from_dict(OLD_CONFIG | {"lab": {"name": "x"}})
    assert info.extra == {"lab": {"name": "x"}} and info.to_dict()["lab"] == {"name": "x"}
    metrics = RunMetrics.from_dict(OLD_METRICS | {"macro_f1": 0.7})
    assert metrics.extra == {"macro_f1": 0.7} and metrics.to_dict()["macro_f1"] == 0.7


def test_a_run_without_metrics_or_a_policy_reads_as_empty(tmp_path):
    empty = read_metrics(tmp_path / "metrics.json")
    assert empty == RunMetrics() and empty.to_dict() == {}
    bare = RunMetrics.from_dict({k: v for k, v in OLD_METRICS.items() if k != "unlike_training"})
    assert bare.unlike_training is None and "unlike_training" not in bare.to_dict()


def test_the_policy_flags_and_says_what_is_off():
    off = UnlikePolicy()
    assert off.notes("why") == [
        "unlike-training by energy score is off: the model has no recorded threshold",
        "unlike-training by brightness and contrast is off: no training image statistics: why",
    ]
    saved = OLD_METRICS["unlike_training"] | {"dev_flagged": 0.05}
    policy = UnlikePolicy.from_dict(saved)
    assert policy.notes("why") == [] and policy.to_dict() == saved
    checkers = torch.tensor([0.35, 0.65]).repeat(8).view(1, 4, 4)  # mean 0.5, std 0.155
    images = torch.stack([torch.full((1, 4, 4), 0.5), checkers])
    low_energy = torch.tensor([[10.0, 0.0], [10.0, 0.0]])  # energy about -10: below -3.25
    assert policy.flags(images, low_energy).tolist() == [True, False]  # std 0: no contrast
    assert policy.flags(images, torch.zeros(2, 2)).tolist() == [True, True]  # energy -0.69
    assert off.flags(images, torch.zeros(2, 2)).tolist() == [False, False]


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("config.json", json.dumps({"classes": ["a"]})),  # no config
        ("config.json", json.dumps([1, 2])),
        ("metrics.json", json.dumps({"unlike_training": "high"})),
        ("metrics.json", json.dumps(["accuracy", 0.5])),
    ],
    ids=["no-config", "config-a-list", "policy-a-string", "metrics-a-list"],
)
def test_a_record_that_is_no_record_is_a_damaged_run(tmp_path, file, text):
    (tmp_path / file).write_text(text)
    read = read_info if file == "config.json" else read_metrics
    with pytest.raises(RunError, match=rf"{file}: unreadable \(.+\); the run folder is damaged"):
        read(tmp_path / file)


def test_a_run_folder_written_before_the_policy_was_whole_still_predicts(trained, tmp_path):
    """A run from before the dev share and pixel range were recorded: predict and export read
    what there is, say what is off, and recompute nothing (no data needed)."""
    run = trained[0]
    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    saved = json.loads((old / "metrics.json").read_text())
    saved["unlike_training"] = {
        k: v for k, v in saved["unlike_training"].items() if k not in ("pixel_range", "dev_flagged")
    }
    (old / "metrics.json").write_text(json.dumps(saved))
    info = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps(info | {"data_root": str(tmp_path / "gone")}))
    loaded = load_run(old)
    assert loaded.metrics.accuracy == run.metrics.accuracy
    predictor = Predictor.from_path(old)
    assert predictor.unlike_threshold == run.metrics.unlike_training.threshold
    assert predictor.pixel_range is None and predictor.dev_flagged_share() is None
    assert any("brightness and contrast is off" in note for note in predictor.notes)


def test_a_new_run_records_the_whole_policy(trained):
    run, splits = trained
    saved = json.loads((run.path / "metrics.json").read_text())["unlike_training"]
    assert set(saved) == {"score", "percentile", "threshold", "pixel_range", "dev_flagged"}
    assert run.metrics.unlike_training == UnlikePolicy.from_dict(saved)
    assert run.info == read_info(run.path / "config.json")
    assert run.info.data_root == str(splits.root.resolve()) and run.info.sweep is None
