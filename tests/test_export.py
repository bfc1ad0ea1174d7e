"""bloodcells export: one checked file with its metadata, a model card, predict from it."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from bloodcells import export as export_module
from bloodcells.data import load_dataset, to_unit
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation import evaluate
from bloodcells.export import CARD, RawImageModel, export_run, load_export
from bloodcells.predict import Predictor
from bloodcells.runs import load_run, start_training
from bloodcells.train import TrainConfig
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
    assert sorted(p.name for p in folder.iterdir()) == [CARD, "model.onnx", "model.pt"]


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
        assert meta["dev"]["confusion_matrix"] == run.metrics["confusion_matrix"]
        threshold = run.metrics["unlike_training"]["threshold"]
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
    card = (exported[0] / CARD).read_text()
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
    ):
        assert part in card, part
    per_class = run.metrics["per_class"]["disc"]
    assert f"| disc | {per_class['precision']:.3f} | {per_class['recall']:.3f}" in card


def test_an_existing_file_or_foreign_card_needs_overwrite(exported, run, tmp_path):
    folder, _ = exported
    one_line_error(invoke("export", run.path, "-o", folder), "pass --overwrite")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / CARD).write_text("# my own notes\n")
    one_line_error(invoke("export", run.path, "-o", mine, "--no-check"), "MODEL_CARD.md")
    assert (mine / CARD).read_text() == "# my own notes\n" and not (mine / "model.onnx").exists()
    result = invoke("export", run.path, "-o", mine / "m.onnx", "--no-check", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "check skipped (--no-check)" in result.output
    assert "bloodcells model card" in (mine / CARD).read_text()


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
    assert predictor.pixel_range == run.metrics["unlike_training"]["pixel_range"]
    assert not any("brightness and contrast is off" in note for note in predictor.notes)
    assert "(no mean range recorded" not in (run.path / CARD).read_text()


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
    assert result.path == tmp_path / "x.pt" and result.card == tmp_path / CARD
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
