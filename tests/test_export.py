"""bloodcells export: one checked file with its metadata, a model card, predict from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bloodcells.data import load_dataset, to_unit
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import evaluate
from bloodcells.inference import export as export_module
from bloodcells.inference.engines import METADATA_KEY, load_export
from bloodcells.inference.engines.base import EXTRA_FILE
from bloodcells.inference.export import RawImageModel, card_path, export_run
from bloodcells.inference.predictor import Predictor
from bloodcells.runs import load_run, start_training
from bloodcells.training.loop import TrainConfig
from tests.conftest import write_layout
from tests.helpers import invoke, one_line_error


@pytest.fixture(scope="module")
def run(trained):
    return trained[0]


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run exported to both formats, by the command, into one folder."""
    folder = tmp_path_factory.mktemp("export") / "models [v1]"
    outputs = {}
    for fmt in ("onnx", "torchscript"):
        outputs[fmt] = invoke("export", run.path, "--format", fmt, "-o", folder)
    return folder, outputs


def test_both_formats_pass_their_check(exported):
    folder, outputs = exported
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        result = outputs[fmt]
        assert result.exit_code == 0, result.output
        assert f"wrote {folder / name}" in result.output
        assert "check passed: largest probability difference" in result.output
        assert "limit 0.0001" in result.output and "same class for 36 of them" in result.output
        assert (folder / name).is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["model.card.md", "model.onnx", "model.pt"]


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_predict_from_the_file_matches_the_run(exported, run, trained, name, tmp_path):
    folder, _ = exported
    paths = trained[1].test.paths
    from_run = Predictor.from_path(run.path).predict(paths)
    from_file = Predictor.from_path(folder / name).predict(paths)
    assert from_file["predicted"] == from_run["predicted"]
    assert from_file["status"] == from_run["status"]
    for c in run.classes:
        assert np.allclose(from_file[f"p_{c}"], from_run[f"p_{c}"], atol=1e-4)
    # and from the command, with no run folder anywhere near the file
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / name, alone / name)
    cells = trained[1].test.paths[0].rsplit("/", 2)[0]
    result = invoke("predict", alone / name, cells, "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "adjusted classify-and-count" in result.output  # the dev matrix came with the file


def test_the_metadata_travels_in_the_file(exported, run):
    folder, _ = exported
    for name, kind in (("model.onnx", "onnx"), ("model.pt", "torchscript")):
        engine, meta = load_export(folder / name, kind)
        assert meta["classes"] == run.classes == ["bar", "disc", "square"]
        assert (meta["size"], meta["channels"]) == (32, 1)
        assert meta["data"] == "easy" and meta["bloodcells"]
        assert "(x - mean) / (std + 1e-06)" in meta["standardization"]
        assert meta["dev"]["confusion_matrix"] == run.metrics.confusion_matrix
        threshold = run.metrics.unlike_training.threshold
        assert meta["unlike_training"]["threshold"] == threshold
        assert set(meta["unlike_training"]["pixel_range"]) >= {"mean", "std"}
        assert meta["counts"]["train"] == {"bar": 40, "disc": 40, "square": 40}
        for n in (1, 7):  # a dynamic batch
            logits, probabilities = engine(torch.rand(n, 1, 32, 32))
            assert logits.shape == probabilities.shape == (n, 3)


def test_onnx_graph_standardizes_raw_pixels_itself(exported, trained):
    import onnxruntime as ort

    run, splits = trained
    session = ort.InferenceSession(str(exported[0] / "model.onnx"))
    (images,) = session.get_inputs()
    assert images.name == "images" and images.type == "tensor(float)"
    assert isinstance(images.shape[0], str)  # a symbolic batch axis
    raw = to_unit(splits.test.images).numpy()  # no standardization by the caller
    _, probabilities = session.run(None, {"images": raw})
    expected = evaluate(run.load_model(), splits.test, "cpu").probabilities.numpy()
    assert np.abs(probabilities - expected).max() < 1e-5


def test_the_model_card(exported, run):
    card = (exported[0] / "model.card.md").read_text()
    for part in (
        "# Model card: advanced",
        "| class | train images | dev images |",
        "| bar | 40 | 12 |",
        "| class | precision | recall | F1 | support |",
        "Confusion matrix",
        "epochs 2, batch size 8, learning rate 0.001, seed 0",
        "Research and teaching",
        "This is not a diagnostic device",
        "Known limits",
        "one lab's images",
        "unlike-training",
        "`model.onnx` for onnxruntime, or `model.pt`",
        "Together the two flag",
    ):
        assert part in card, part
    per_class = run.metrics.per_class["disc"]
    assert f"| disc | {per_class['precision']:.3f} | {per_class['recall']:.3f}" in card


def test_an_existing_file_or_foreign_card_needs_overwrite(exported, run, tmp_path):
    folder, _ = exported
    one_line_error(invoke("export", run.path, "-o", folder), "pass --overwrite")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.card.md").write_text("# my own notes\n")
    one_line_error(invoke("export", run.path, "-o", mine, "--no-check"), "model.card.md")
    assert (mine / "model.card.md").read_text() == "# my own notes\n"
    assert not (mine / "model.onnx").exists()
    (mine / "m.card.md").write_text("# my own notes\n")
    result = invoke("export", run.path, "-o", mine / "m.onnx", "--no-check", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "check skipped (--no-check)" in result.output
    assert "bloodcells model card" in (mine / "m.card.md").read_text()
    with pytest.raises(BloodcellsError, match="exists; pass overwrite=True to replace it"):
        export_run(run, "onnx", folder / "model.onnx")  # Python names its parameter


def test_adapt_batchnorm_needs_a_run_folder(exported, trained, tmp_path):
    cells = trained[1].test.paths[:2]
    with pytest.raises(BloodcellsError, match="adapt_batchnorm needs a run folder"):
        Predictor.from_path(exported[0] / "model.pt").adapt_batchnorm(torch.rand(2, 1, 32, 32))
    result = invoke("predict", exported[0] / "model.pt", *cells, "-o", tmp_path, "--adapt-bn")
    one_line_error(result, "model.pt: --adapt-bn needs a run folder (an exported file is fixed)")


def test_a_missing_export_package_is_one_line(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    one_line_error(
        invoke("export", run.path, "--format", "onnx", "-o", tmp_path),
        "needs the onnx package, which is not installed",
    )
    assert not any(tmp_path.iterdir())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BloodcellsError, match="needs onnxruntime"):
        load_export(tmp_path / "x.onnx", "onnx")


def test_bad_formats_and_suffixes_are_one_line(run, tmp_path):
    one_line_error(invoke("export", run.path, "--format", "tflite", "-o", tmp_path), "tflite")
    one_line_error(
        invoke("export", run.path, "--format", "torchscript", "-o", tmp_path / "m.onnx"), ".pt"
    )
    one_line_error(invoke("export", tmp_path, "-o", tmp_path), "not a run folder")


def test_a_failed_check_writes_nothing(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "CHECK_TOLERANCE", -1.0)
    one_line_error(
        invoke("export", run.path, "--format", "torchscript", "-o", tmp_path / "new"),
        "differs from the run's",
    )
    assert not any(tmp_path.iterdir())  # not even the folder it would have made


def test_an_exporter_failure_is_one_line(run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::something\nmore lines")

    monkeypatch.setattr(torch.onnx, "export", broken)
    one_line_error(
        invoke("export", run.path, "-o", tmp_path), "torch could not export this model to onnx"
    )
    assert not any(tmp_path.iterdir())
    one_line_error(invoke("export", run.path, "-o", tmp_path), "or --debug for the details")
    with pytest.raises(BloodcellsError, match=r"aten::something\); try the other format$"):
        export_run(run, "onnx", tmp_path / "m.onnx")  # no CLI flag named in Python


def test_without_the_data_the_check_says_it_could_not_run(tmp_path):
    root = write_layout(tmp_path / "gone", per_class=(10, 4))
    run = start_training(
        load_dataset(root, cache=False), TrainConfig(model="simple", epochs=1), tmp_path / "r"
    )
    shutil.rmtree(root)
    result = invoke("export", run.path, "--format", "torchscript")
    assert result.exit_code == 0, result.output
    assert "the check could not run" in result.output and "no such folder" in result.output
    predictor = Predictor.from_path(run.path / "model.pt")  # the range was recorded in training
    assert predictor.pixel_range == run.metrics.unlike_training.pixel_range
    assert not any("brightness and contrast is off" in note for note in predictor.notes)
    assert "(no mean range recorded" not in (run.path / "model.card.md").read_text()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in torch 2.9+
def test_files_that_are_not_exports_are_refused(run, tmp_path):
    plain = tmp_path / "plain.pt"
    traced = torch.jit.trace(RawImageModel(run.load_model()), torch.rand(2, 1, 32, 32))
    torch.jit.save(traced, str(plain))  # TorchScript, but with no bloodcells metadata
    with pytest.raises(BloodcellsError, match="without bloodcells metadata"):
        Predictor.from_path(plain)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(BloodcellsError, match="not a readable ONNX model"):
        Predictor.from_path(junk)


def test_export_run_api_returns_the_check(run, tmp_path):
    result = export_run(load_run(run.path), "torchscript", tmp_path / "x.pt")
    assert result.path == tmp_path / "x.pt" and result.card == tmp_path / "x.card.md"
    assert result.check.passed and result.check.images == 36
    assert result.check.max_difference < 1e-5


@pytest.mark.realdata
def test_pbc32_export_onnx_agrees_with_the_run(pbc32, tmp_path):
    """Done-when of the issue on the real patches (1 epoch here, to stay quick)."""
    run = start_training(
        load_dataset(pbc32), TrainConfig(model="advanced", epochs=1), tmp_path / "runs"
    )
    for fmt in ("onnx", "torchscript"):
        result = invoke("export", run.path, "--format", fmt)
        assert result.exit_code == 0 and "check passed" in result.output, result.output
    test = pbc32 / "test"
    a = invoke("predict", run.path, test, "-o", tmp_path / "run.csv")
    b = invoke("predict", run.path / "model.onnx", test, "-o", tmp_path / "onnx.csv")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    read = lambda p: [line.split(",")[1] for line in p.read_text().splitlines()[1:]]  # noqa: E731
    assert read(tmp_path / "run.csv") == read(tmp_path / "onnx.csv")
    counts = json.loads((tmp_path / "onnx.count.json").read_text())
    assert counts["images"] == 800


def small_run(root, out, epochs: int = 1):
    """A one-epoch simple CNN on a few easy images: a second run, quickly."""
    splits = load_dataset(write_layout(root, per_class=(10, 4)), cache=False)
    return start_training(splits, TrainConfig(model="simple", epochs=epochs), out)


def test_two_runs_exported_into_one_folder_keep_their_own_cards(run, tmp_path):
    other = small_run(tmp_path / "data", tmp_path / "runs")
    folder = tmp_path / "models"
    for source, name in ((run, "advanced.pt"), (other, "simple.pt")):
        result = invoke("export", source.path, "-f", "torchscript", "-o", folder / name)
        assert result.exit_code == 0, result.output
    assert card_path(folder / "simple.pt") == folder / "simple.card.md"
    for source, name in ((run, "advanced"), (other, "simple")):
        card = (folder / f"{name}.card.md").read_text()
        assert f"run {source.name}" in card.splitlines()[0]
        assert f"`{name}.pt` for `torch.jit.load`" in card
    # the same name for another run's file is a clash: its card is not this run's
    result = invoke("export", other.path, "-f", "onnx", "-o", folder / "advanced.onnx")
    one_line_error(result, "advanced.card.md: exists and is not this run's card")


def interrupted_copy(run, folder):
    """`run` copied, as if its writer had died at epoch 2 of 9."""
    shutil.copytree(run.path, folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["epochs"] = 9
    (folder / "config.json").write_text(json.dumps(config))
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # a process that has ended: its pid names no writer
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["status"] = "running"
    metrics["writer"] = {"pid": gone.pid, "host": os.uname().nodename}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_an_interrupted_run_is_exported_with_a_note(run, tmp_path):
    source = interrupted_copy(run, tmp_path / "cut")
    result = invoke("export", source, "-f", "torchscript", "--no-check", "-o", tmp_path / "m.pt")
    assert result.exit_code == 0, result.output
    note = f"note: {source}: interrupted at epoch 2 of 9; using its last saved epoch"
    assert note in result.stderr
    result = invoke("export", run.path, "-f", "torchscript", "--no-check", "-o", tmp_path / "n.pt")
    assert result.exit_code == 0 and "note:" not in result.stderr


def rewrite_metadata(source, dest, **changes):
    """`source` (an export) copied to `dest` with its bloodcells metadata changed."""
    if source.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(source))
        (prop,) = [p for p in proto.metadata_props if p.key == METADATA_KEY]
        prop.value = json.dumps(json.loads(prop.value) | changes)
        onnx.save_model(proto, str(dest))
    else:
        extra = {EXTRA_FILE: ""}
        module = torch.jit.load(str(source), _extra_files=extra)
        meta = json.loads(extra[EXTRA_FILE]) | changes
        torch.jit.save(module, str(dest), _extra_files={EXTRA_FILE: json.dumps(meta)})
    return dest


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in torch 2.9+
@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": ["bar", "disc"]}, "the metadata lists 2 classes, the graph"),
        ({"channels": 3}, "disagrees with its graph"),
        ({"size": 48}, "disagrees with its graph"),
        ({"format_version": 999}, "format_version 999, and bloodcells"),
        ({"classes": ["bar", "bar", "disc"]}, "a class name appears twice"),
        ({"channels": "1"}, "channels is '1', not a whole number"),
    ],
)
def test_metadata_that_disagrees_with_the_file_is_one_line(
    exported, trained, tmp_path, name, changes, message
):
    changed = rewrite_metadata(exported[0] / name, tmp_path / name, **changes)
    cells = trained[1].test.paths[:2]
    result = invoke("predict", changed, *cells, "-o", tmp_path / "p.csv")
    one_line_error(result, message)
    assert str(changed) in result.output and "export the run again" in result.output
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_the_versions_this_release_reads_are_named(exported, tmp_path):
    changed = rewrite_metadata(exported[0] / "model.pt", tmp_path / "m.pt", format_version=999)
    with pytest.raises(BloodcellsError, match=r"reads only format_version 1; use the bloodcells"):
        Predictor.from_path(changed)


def test_onnx_channels_that_disagree_are_named(exported, tmp_path):
    changed = rewrite_metadata(exported[0] / "model.onnx", tmp_path / "m.onnx", channels=3)
    with pytest.raises(BloodcellsError, match="the metadata says 3 channels, the graph takes 1"):
        Predictor.from_path(changed)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_class_names_with_control_characters_print_escaped(exported, trained, tmp_path, name):
    odd = "bar\n\x1b[31mred\tx"
    changed = rewrite_metadata(exported[0] / name, tmp_path / name, classes=[odd, "disc", "square"])
    cells = trained[1].test.paths[:12]
    result = invoke("predict", changed, *cells, "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "red\tx" not in result.output
    (line,) = [line for line in result.output.splitlines() if "bar" in line]
    assert "bar\\x0a\\x1b[31mred\\x09x" in line  # one table row, not three
