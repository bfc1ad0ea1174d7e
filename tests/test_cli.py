"""The command line through typer's test runner: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import warnings

import pytest
from typer.testing import CliRunner

from bloodcells.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "command",
    [[], ["data"], ["data", "info"], ["models"], ["shapes"], ["train"], ["evaluate"]],
)
def test_every_command_has_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_data_info_prints_the_class_table(easy_root):
    result = invoke("data", "info", easy_root)
    assert result.exit_code == 0, result.output
    for text in ("bar", "disc", "square", "40", "12", "problems: 0", "L 32x32 (120)"):
        assert text in result.output


def test_models_lists_parameter_counts():
    result = invoke("models")
    assert result.exit_code == 0
    for text in ("simple", "1,135", "advanced", "153,061", "vgg16", "15,245,125"):
        assert text in result.output


def test_the_cli_shows_warnings_its_way_only_while_a_command_runs(monkeypatch):
    import bloodcells.cli.models as models_cli
    from bloodcells.errors import DataWarning

    class WarningTable(models_cli.Table):
        def __init__(self, *args, **kwargs):
            warnings.warn("a table that warns", DataWarning, stacklevel=2)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(models_cli, "Table", WarningTable)
    before = warnings.showwarning
    result = invoke("models")
    assert result.exit_code == 0, result.output
    assert "warning: a table that warns" in result.output  # the CLI's one line, on stderr
    assert warnings.showwarning is before  # and the caller's way back afterwards


def test_shapes_traces_every_layer_exercise_1():
    result = invoke("shapes", "simple")
    assert result.exit_code == 0, result.output
    assert "[1, 1, 31, 31]" in result.output and "[1, 1, 15, 15]" in result.output
    assert "[1, 225]" in result.output
    wide = invoke("shapes", "advanced", "--size", "64")
    assert "[1, 32, 14, 14]" in wide.output


def test_train_then_evaluate(easy_root, tmp_path):
    result = invoke(
        "train", "--data", easy_root, "--model", "advanced", "--epochs", "2", "--lr", "1e-3",
        "--out", tmp_path / "runs", "--bn2", "--head-dropout", "0.3", "--extra-fc", "32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["options"] == {"bn2": True, "head_dropout": 0.3, "extra_fc": 32}
    assert "dev accuracy" in result.output and str(run) in result.output
    evaluated = invoke("evaluate", run)
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.3f}" in evaluated.output
    assert "chance 0.333" in evaluated.output and "balanced accuracy" in evaluated.output
    assert "confusion matrix" in evaluated.output and "%)" in evaluated.output


def test_train_resume_continues_a_run(easy_root, tmp_path):
    out = tmp_path / "runs"
    first = invoke("train", "-d", easy_root, "-m", "simple", "--epochs", "1", "--out", out)
    assert first.exit_code == 0, first.output
    (run,) = out.iterdir()
    again = invoke("train", "--resume", run, "--epochs", "2")
    assert again.exit_code == 0, again.output
    assert len((run / "history.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "info", "/no/such/folder"], "/no/such/folder: no such folder"),
        (["train", "--data", "/no/such/folder"], "/no/such/folder: no such folder"),
        (["train", "--model", "resnet", "--data", "."], "unknown model 'resnet'"),
        (["evaluate", "/tmp"], "not a run folder"),
        (["train"], "--data is required"),
        (["shapes", "nope"], "unknown model 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_debug_shows_the_exception(tmp_path):
    result = invoke("--debug", "data", "info", tmp_path / "missing")
    assert result.exit_code != 2
    assert result.exception is not None


def test_evaluate_with_tta_and_adapted_batchnorm(trained):
    run, _ = trained
    result = invoke("evaluate", run.path, "--tta", "--adapt-bn")
    assert result.exit_code == 0, result.output
    assert "with TTA and adapted BatchNorm" in result.output and "accuracy" in result.output


def test_the_decode_bar_shows_only_for_a_slow_decode_and_goes_when_done(monkeypatch):
    from bloodcells.cli import base

    monkeypatch.setattr(base, "PROGRESS_AFTER_S", 3600.0)
    fast = base.DecodeBar()
    for done in range(4):
        fast(done, 3)
    assert fast._bar is None  # a quick decode (or a cache hit) prints nothing

    monkeypatch.setattr(base, "PROGRESS_AFTER_S", 0.0)
    slow = base.DecodeBar()
    slow(0, 3)
    slow(1, 3)
    assert slow._bar is not None and slow._bar.tasks[0].completed == 1
    slow(3, 3)
    assert slow._bar is None
