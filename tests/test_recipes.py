"""Recipes (lab, fast), learning-rate schedules, label smoothing, amp and the LR range test."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest
import torch
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data import load_dataset
from bloodcells.errors import BloodcellsError
from bloodcells.runs import resume_training, start_training
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import fit, make_model
from bloodcells.training.lr_find import lr_range_test
from bloodcells.training.recipes import LR_FIND, RECIPE_FIELDS, RECIPES, schedule_factor
from bloodcells.training.records import Callback

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_lab_recipe_is_the_default_and_the_labs_settings():
    config = TrainConfig()
    assert (config.recipe, config.epochs, config.batch_size) == ("lab", 5, 8)
    assert (config.lr, config.schedule, config.label_smoothing, config.amp) == (
        1e-4,
        "none",
        0.0,
        False,
    )
    assert TrainConfig(model="simple").lr == 1e-3  # the model's own learning rate
    assert TrainConfig(model="vgg16").lr == 1e-4


def test_the_fast_recipe_expands_into_concrete_recorded_values():
    config = TrainConfig(model="advanced", recipe="fast")
    saved = config.to_dict()
    assert {k: saved[k] for k in RECIPE_FIELDS} == {
        "epochs": 3,
        "batch_size": 64,
        "lr": LR_FIND["advanced"],
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "augment": "lab",
    }
    assert saved["recipe"] == "fast"
    assert None not in (saved[k] for k in RECIPE_FIELDS)  # nothing left to change later
    for model in ("simple", "vgg16"):
        assert TrainConfig(model=model, recipe="fast").lr == LR_FIND[model]


def test_explicit_values_win_over_the_recipes():
    config = TrainConfig(
        recipe="fast", epochs=7, batch_size=32, lr=1e-3, schedule="cosine", label_smoothing=0.0
    )
    assert (config.epochs, config.batch_size, config.lr) == (7, 32, 1e-3)
    assert (config.schedule, config.label_smoothing) == ("cosine", 0.0)
    assert TrainConfig(epochs=2).batch_size == 8  # the rest still from the (lab) recipe


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_config_rebuilds_from_what_it_records(recipe):
    config = TrainConfig(model="simple", recipe=recipe, seed=3)
    saved = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_saved(saved) == config
    assert TrainConfig(**saved) == config


def test_configs_saved_before_recipes_load_with_the_lab_settings():
    old = {
        "model": "simple", "epochs": 4, "batch_size": 16, "lr": None, "seed": 1,
        "device": None, "image_size": 32, "channels": 1, "options": {},
    }  # fmt: skip
    config = TrainConfig.from_saved(old)
    assert (config.recipe, config.schedule, config.label_smoothing, config.amp) == (
        "lab",
        "none",
        0.0,
        False,
    )
    assert (config.epochs, config.batch_size, config.lr) == (4, 16, None)
    assert config.learning_rate == 1e-3  # None meant the model's default, and still does


BAD = {
    "recipe": ({"recipe": "turbo"}, "unknown recipe 'turbo'; known recipes: lab, fast"),
    "schedule": ({"schedule": "step"}, "unknown schedule 'step'"),
    "smoothing-1": ({"label_smoothing": 1.0}, "label smoothing must be from 0"),
    "smoothing-negative": ({"label_smoothing": -0.1}, "label smoothing must be from 0"),
    "smoothing-text": ({"label_smoothing": "x"}, "label smoothing must be from 0"),
    "amp": ({"amp": "yes"}, "amp must be true or false"),
}


@pytest.mark.parametrize(("overrides", "message"), BAD.values(), ids=BAD)
def test_bad_recipe_settings_are_one_line_errors(overrides, message):
    with pytest.raises(BloodcellsError, match=message) as raised:
        TrainConfig(**overrides)
    assert "\n" not in str(raised.value)


def test_schedules_have_their_documented_shape():
    total = 101
    assert all(schedule_factor("none", s, total) == 1.0 for s in (0, 50, 100))
    assert schedule_factor("cosine", 0, total) == 1.0
    assert schedule_factor("cosine", 50, total) == pytest.approx(0.5)
    assert schedule_factor("cosine", 100, total) == pytest.approx(0.0)
    onecycle = [schedule_factor("onecycle", s, total) for s in range(total)]
    assert onecycle[0] == pytest.approx(1 / 25)
    assert max(onecycle) == pytest.approx(1.0) and onecycle.index(max(onecycle)) == 30
    assert onecycle[-1] == pytest.approx(1 / 25 / 1e4)
    assert all(a <= b for a, b in pairwise(onecycle[:31]))
    assert all(a >= b for a, b in pairwise(onecycle[30:]))
    assert schedule_factor("onecycle", 0, 1) == 1.0  # a single step trains at the peak


class LearningRates(Callback):
    def __init__(self):
        self.seen = []

    def on_batch_end(self, state):
        self.seen.append(state.optimizer.param_groups[0]["lr"])


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def test_fit_follows_the_schedule_step_by_step_across_a_resume(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", recipe="fast", epochs=3, batch_size=16, lr=0.01)
    rates = LearningRates()
    straight = start_training(splits, config, tmp_path / "a", callbacks=[rates])
    steps = 3 * math.ceil(len(splits.train) / 16)
    expected = [0.01 * schedule_factor("onecycle", s, steps) for s in range(steps)]
    assert rates.seen == pytest.approx(expected, rel=1e-12)
    # the same run stopped after epoch 1 and resumed: the same rates, the same numbers
    run_dir = tmp_path / "b"
    run_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        start_training(splits, config, callbacks=[StopAfter(1)], run_dir=run_dir)
    later = LearningRates()
    resumed = resume_training(run_dir, callbacks=[later])
    assert later.seen == pytest.approx(expected[steps // 3 :], rel=1e-12)
    assert resumed.history.column("dev_loss") == straight.history.column("dev_loss")
    assert resumed.config == straight.config


def test_the_lab_recipe_leaves_the_learning_rate_alone(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=1, lr=0.003)
    rates = LearningRates()
    fit(make_model(config, 3), splits.train, splits.test, config, [rates])
    assert set(rates.seen) == {0.003}


def test_label_smoothing_changes_the_training_loss_not_the_dev_loss_definition(easy_root):
    splits = load_dataset(easy_root)
    plain = TrainConfig(model="simple", epochs=1, lr=1e-3)
    smooth = TrainConfig(model="simple", epochs=1, lr=1e-3, label_smoothing=0.1)
    a = fit(make_model(plain, 3), splits.train, splits.test, plain)
    b = fit(make_model(smooth, 3), splits.train, splits.test, smooth)
    assert a.last.train_loss != b.last.train_loss
    assert b.last.train_loss > a.last.train_loss * 0.9  # smoothing keeps the loss from 0


def test_the_fast_recipe_trains_end_to_end(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="advanced", recipe="fast", batch_size=16)
    history = fit(make_model(config, 3), splits.train, splits.test, config)
    assert len(history) == 3 and history.last.dev_accuracy > 0.8


def test_amp_without_a_gpu_is_refused_before_training(easy_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=1, amp=True)
    with pytest.raises(BloodcellsError, match=r"^amp \(bf16 autocast\) needs a CUDA GPU"):
        fit(make_model(config, 3), splits.train, splits.test, config)
    result = invoke("train", "--data", easy_root, "--amp", "--out", easy_root.parent / "runs")
    assert result.exit_code == 2 and "--amp (bf16 autocast) needs a CUDA GPU" in result.output
    assert not (easy_root.parent / "runs").exists()


def test_train_recipe_fast_records_the_expanded_settings(easy_root, tmp_path):
    result = invoke(
        "train", "--data", easy_root, "--model", "simple", "--recipe", "fast",
        "--epochs", "1", "--batch-size", "32", "--out", tmp_path / "runs",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["recipe"] == "fast" and saved["schedule"] == "onecycle"
    assert (saved["epochs"], saved["batch_size"]) == (1, 32)  # the user's, over the recipe's
    assert (saved["lr"], saved["label_smoothing"]) == (LR_FIND["simple"], 0.1)


def test_train_without_a_recipe_records_the_lab_recipe(easy_root, tmp_path):
    result = invoke(
        "train", "--data", easy_root, "--model", "simple", "--epochs", "1",
        "--out", tmp_path / "runs",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run / "config.json").read_text())["config"]
    assert (saved["recipe"], saved["batch_size"], saved["lr"], saved["schedule"]) == (
        "lab",
        8,
        1e-3,
        "none",
    )


def test_resume_refuses_recipe_options(easy_root, tmp_path):
    for option in (["--recipe", "fast"], ["--schedule", "cosine"], ["--label-smoothing", "0.1"]):
        result = invoke("train", "--resume", tmp_path, *option)
        assert result.exit_code == 2 and option[0] in result.output


def test_an_unknown_recipe_is_refused_before_any_folder(easy_root, tmp_path):
    result = invoke("train", "--data", easy_root, "--recipe", "turbo", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "unknown recipe 'turbo'" in result.output
    assert not (tmp_path / "r").exists()


def test_lr_range_test_rises_geometrically_and_suggests_a_rate_inside_it(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", recipe="fast", batch_size=16)
    result = lr_range_test(splits.train, config, start=1e-5, end=10.0, steps=40)
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = {round(b / a, 9) for a, b in pairwise(result.lrs)}
    assert len(ratios) == 1  # geometric
    assert len(result.losses) == len(result.smoothed) == len(result.lrs) <= 40
    assert 1e-5 <= result.suggestion < result.minimum <= result.lrs[-1]
    assert 1e-5 <= result.steepest <= result.minimum
    again = lr_range_test(splits.train, config, start=1e-5, end=10.0, steps=40)
    assert again.losses == result.losses  # seeded: the same curve every time


def test_lr_range_test_refuses_bad_ranges(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", batch_size=16)
    with pytest.raises(BloodcellsError, match="the rates must rise"):
        lr_range_test(splits.train, config, start=1.0, end=1e-3)
    with pytest.raises(BloodcellsError, match="at least 10 steps"):
        lr_range_test(splits.train, config, steps=3)
    with pytest.raises(BloodcellsError, match="fewer than one batch"):
        lr_range_test(splits.train, TrainConfig(model="simple", batch_size=1000))


def test_lr_find_command_prints_a_suggestion_and_plots_the_curve(easy_root, tmp_path):
    result = invoke(
        "lr-find", "--data", easy_root, "--model", "simple", "--batch-size", "16",
        "--steps", "30", "--end", "10", "-o", tmp_path / "lr.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "suggested peak learning rate:" in result.output
    assert "--recipe fast --lr" in result.output
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    bad = invoke("lr-find", "--data", easy_root, "-o", tmp_path / "lr.gif")
    assert bad.exit_code == 2 and "unsupported file type .gif" in bad.output


def test_the_robust_recipe_records_its_augmentation_with_every_strength():
    gray = TrainConfig(model="advanced", recipe="robust")
    assert gray.augment.startswith("flip,scale=1.33") and "stain" not in gray.augment
    assert gray.epochs == 15 and gray.schedule == "cosine" and gray.lr == 1e-3
    rgb = TrainConfig(model="advanced", recipe="robust", channels=3)
    assert "stain=" in rgb.augment and "hue=" in rgb.augment
    assert TrainConfig(model="advanced").augment == "lab"
    assert TrainConfig(model="advanced", augment="flip,blur=0.5").augment == "flip,blur=0.5"
    with pytest.raises(BloodcellsError, match="hue"):
        TrainConfig(model="advanced", augment="hue")  # RGB only, and this is gray


def test_resume_with_augmentation_is_exact(easy_root, tmp_path):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="advanced", epochs=2, augment="robust", lr=1e-3)
    straight = start_training(splits, config, tmp_path / "a")

    class StopAfterOne(Callback):
        def on_epoch_end(self, state) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_training(splits, config, tmp_path / "b", [StopAfterOne()])
    (half,) = (tmp_path / "b").iterdir()
    resumed = resume_training(half)
    a, b = straight.load_model().state_dict(), resumed.load_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = start_training(splits, TrainConfig(model="advanced", epochs=2, lr=1e-3), tmp_path / "c")
    p = plain.load_model().state_dict()
    assert not all(torch.equal(a[k], p[k]) for k in a)  # augmentation changed the training
