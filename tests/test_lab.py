"""The whole lab end to end, on the easy set and on a small synthetic demo set."""

from __future__ import annotations

import json
import re
import shlex
from html import unescape

import pytest
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data.sources.synthetic import SynthConfig
from bloodcells.errors import BloodcellsError
from bloodcells.lab import LabConfig, plan, run_lab
from tests.conftest import write_layout

runner = CliRunner()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab of the simple and advanced CNNs, one epoch each, on the easy set: run once."""
    root = write_layout(tmp_path_factory.mktemp("data") / "easy")
    config = LabConfig(
        data=root, models=("simple", "advanced"), epochs=1, out=tmp_path_factory.mktemp("runs")
    )
    with pytest.MonkeyPatch.context() as patch:  # a private dataset cache, as every test's
        patch.setenv("BLOODCELLS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return run_lab(config, say=lambda text: None)


def test_lab_on_given_data_writes_one_report_and_a_run_per_model(lab):
    result = lab
    assert not result.synthetic
    assert set(result.runs) == {"simple", "advanced"}
    assert all(run.path.parent == result.lab_dir for run in result.runs.values())
    html = result.report.read_text()
    assert 'http-equiv="refresh"' not in html  # finished: no more reloading
    assert 'id="robustness"' in html and 'id="robustness-plot"' in html
    saved = json.loads((result.lab_dir / "lab.json").read_text())["robustness"]
    best = max(result.runs.values(), key=lambda run: run.metrics.accuracy)
    assert saved["run"] == str(best.path) and saved["results"]["plain"]["clean"]["accuracy"] > 0
    assert "simple" in html and "advanced" in html
    assert "synthetic demo data" not in html.lower()
    images = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', html)
    assert images == ["sample images", "prediction grid", "Grad-CAM grid", "top losses"]
    assert "Grad-CAM of the advanced model" in html


def test_the_lab_folder_alone_makes_the_same_page_again(lab, tmp_path):
    result = lab
    kept = sorted(p.name for p in (result.lab_dir / "figures").iterdir())
    assert kept == ["gradcam.png", "predictions.png", "samples.png", "top_losses.png"]
    assert (result.lab_dir / "lab.json").is_file()
    again = tmp_path / "again.html"
    done = runner.invoke(app, ["report", str(result.lab_dir), "-o", str(again)])
    assert done.exit_code == 0, done.output
    stamp = re.compile(r"updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S*")
    assert stamp.sub("", again.read_text()) == stamp.sub("", result.report.read_text())


def test_a_lab_stopped_early_says_so_and_stops_reloading(easy_root, tmp_path):
    from bloodcells.training import Callback

    class Stop(Callback):
        def on_epoch_end(self, state):
            raise KeyboardInterrupt

    out = tmp_path / "runs"
    config = LabConfig(data=easy_root, models=("simple", "advanced"), epochs=2, out=out)
    with pytest.raises(KeyboardInterrupt):
        run_lab(config, callbacks_for=lambda name: [Stop()], say=lambda text: None)
    (lab,) = out.iterdir()
    html = (lab / "report.html").read_text()
    assert "http-equiv" not in html
    assert (
        "stopped: simple interrupted" in html and "The lab stopped early: KeyboardInterrupt" in html
    )
    assert "not trained" in html  # the advanced CNN never started


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
    (command,) = re.findall(r"<pre>(.*?)</pre>", html)
    assert unescape(command) == quoted and shlex.split(quoted) == argv


def test_lab_epochs_zero_is_refused_not_read_as_the_default():
    with pytest.raises(BloodcellsError, match="epochs must be at least 1"):
        LabConfig(epochs=0)


def test_lab_recipe_robust_trains_the_augmented_recipe():
    train, per_class, _ = plan(LabConfig(recipe="robust"), "advanced", on_gpu=False)
    assert train.recipe == "robust" and train.augment.startswith("flip") and per_class is None
    assert plan(LabConfig(), "advanced", on_gpu=False)[0].augment == "lab"
