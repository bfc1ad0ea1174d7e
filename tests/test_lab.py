"""The whole lab end to end, on the easy set and on a small synthetic demo set."""

from __future__ import annotations

import shlex
from html import escape

import pytest
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data.synthetic import SynthConfig
from bloodcells.errors import BloodcellsError
from bloodcells.lab import LabConfig, run_lab

runner = CliRunner()


def test_lab_on_given_data_writes_one_report_and_a_run_per_model(easy_root, tmp_path):
    config = LabConfig(data=easy_root, models=("simple", "advanced"), epochs=1, out=tmp_path)
    result = run_lab(config, say=lambda text: None)
    assert not result.synthetic
    assert set(result.runs) == {"simple", "advanced"}
    assert all(run.path.parent == result.lab_dir for run in result.runs.values())
    html = result.report.read_text()
    assert 'http-equiv="refresh"' not in html  # finished: no more reloading
    assert "simple" in html and "advanced" in html
    assert "synthetic demo data" not in html.lower()


def test_lab_without_data_uses_the_labelled_demo_set(tmp_path):
    said = []
    config = LabConfig(
        models=("simple", "advanced", "vgg16"),
        epochs=1,
        out=tmp_path / "runs",
        demo=SynthConfig(per_class=12, test_per_class=4),
    )
    result = run_lab(config, say=said.append)
    assert result.synthetic
    assert any("SYNTHETIC" in line for line in said)
    assert "synthetic demo data" in result.report.read_text().lower()
    assert result.runs["vgg16"].config.channels == 3
    assert result.runs["simple"].classes == ["B", "T", "eosinophil", "monocyte", "neutrophil"]


def test_vgg16_on_a_cpu_trains_on_a_subset_and_says_so(tmp_path):
    from bloodcells.lab import plan

    train, per_class, note = plan(LabConfig(), "vgg16", on_gpu=False)
    assert per_class == LabConfig().vgg16_cpu_train_per_class and "CPU" in note
    assert train.epochs == LabConfig().vgg16_cpu_epochs
    gpu, none, _ = plan(LabConfig(), "vgg16", on_gpu=True)
    assert gpu.epochs == 5 and none is None and gpu.batch_size == 8


def test_an_existing_out_folder_keeps_earlier_runs(easy_root, tmp_path):
    args = ["lab", "--data", str(easy_root), "--models", "simple", "--epochs", "1"]
    first = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    (lab,) = [p for p in tmp_path.iterdir() if p.name.endswith("-lab")]
    before = (lab / "report.html").read_bytes()
    second = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert second.exit_code == 0, second.output
    labs = [p for p in tmp_path.iterdir() if "-lab" in p.name]
    assert len(labs) == 2 and (lab / "report.html").read_bytes() == before
    assert "report:" in second.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "simple,resnet"], "unknown model 'resnet'; known models: simple"),
        (["--data", "/no/such/data"], "/no/such/data: no such folder"),
    ],
)
def test_bad_lab_input_fails_before_training(args, message, tmp_path):
    result = runner.invoke(app, ["lab", *args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_the_reproduce_command_quotes_paths_for_a_shell(easy_root, tmp_path, monkeypatch):
    odd = tmp_path / "my data ;$(rm x)"
    easy_root.rename(odd)
    argv = ["bloodcells", "lab", "--data", str(odd), "--models", "simple", "--epochs", "1"]
    monkeypatch.setattr("sys.argv", argv)
    config = LabConfig(data=odd, models=("simple",), epochs=1, out=tmp_path / "runs")
    html = run_lab(config, say=lambda text: None).report.read_text()
    quoted = shlex.join(argv)
    assert escape(quoted) in html and shlex.split(quoted) == argv


def test_lab_epochs_zero_is_refused_not_read_as_the_default():
    with pytest.raises(BloodcellsError, match="epochs must be between 1"):
        LabConfig(epochs=0)
