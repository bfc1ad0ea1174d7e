"""bloodcells predict: rows, statuses, the differential count, streaming, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.cli import predict as cli_predict
from bloodcells.data import Transform, load_dataset, to_unit
from bloodcells.data.inputs import find_images
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import evaluate
from bloodcells.inference import predictor as predict_module
from bloodcells.inference.count import Tally, differential_count
from bloodcells.inference.csv_output import PredictionInterrupted, partial_path, write_predictions
from bloodcells.inference.predictor import Predictor
from bloodcells.runs import start_training
from bloodcells.training.loop import TrainConfig
from tests.conftest import easy_image
from tests.helpers import invoke, one_line_error


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(trained):
    return trained[0]


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_path(run.path)


def save_images(folder, n: int, seed: int = 0, kind: int | None = None) -> list:
    """`n` easy-set images (classes in turn, or all `kind`) as PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"cell {i:03d}.png"
        Image.fromarray(easy_image(i % 3 if kind is None else kind, rng)).save(path)
        paths.append(path)
    return paths


def test_cli_defaults_are_the_libraries():
    assert cli_predict.MIN_CONFIDENCE == predict_module.MIN_CONFIDENCE
    assert cli_predict.CHUNK == predict_module.CHUNK
    assert cli_predict.MAX_CHUNK == predict_module.MAX_CHUNK


def test_predict_and_evaluate_give_identical_probabilities(trained, predictor):
    run, splits = trained
    expected = evaluate(run.load_model(), splits.test, "cpu")
    rows = predictor.predict(splits.test.paths)  # the files, decoded again by predict
    assert rows["path"] == splits.test.paths
    got = torch.tensor([[r[f"p_{c}"] for c in splits.classes] for r in rows])
    assert torch.equal(got, expected.probabilities)
    predicted = [splits.classes[i] for i in expected.predictions.tolist()]
    assert rows["predicted"] == predicted


def test_arrays_and_pil_images_give_the_files_rows(trained, predictor):
    _, splits = trained
    paths = splits.test.paths[:5]
    from_files = predictor.predict(paths)
    images = splits.test.images[:5]  # uint8 N×1×32×32, as stored
    for given in (images, images.numpy(), images.float() / 255):
        rows = predictor.predict(given)
        assert rows["p_disc"] == pytest.approx(from_files["p_disc"], abs=1e-6)
    pil = [Image.open(p) for p in paths]
    assert predictor.predict(pil)["p_bar"] == pytest.approx(from_files["p_bar"], abs=1e-6)
    with pytest.raises(BloodcellsError, match="shape"):
        predictor.predict(np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(BloodcellsError, match=r"in \[0, 1\]"):
        predictor.predict(torch.randn(2, 1, 32, 32))


def test_predictions_are_a_pandas_free_table(trained, predictor):
    rows = predictor.predict(trained[1].test.paths[:4])
    assert rows.columns == [
        "path", "predicted", "probability", "p_bar", "p_disc", "p_square", "second", "status"
    ]  # fmt: skip
    assert len(rows) == 4 and rows[0]["path"] == trained[1].test.paths[0]
    assert set(rows.to_dict()) == set(rows.columns)
    with pytest.raises(KeyError, match="no column"):
        rows["nope"]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(BloodcellsError, match="pandas"):
            rows.to_frame()
    else:
        assert list(rows.to_frame().columns) == rows.columns


def test_csv_columns_rows_and_count_json(run, tmp_path):
    folder = tmp_path / "new cells"
    save_images(folder, 12)
    out = tmp_path / "out" / "pred.csv"
    result = invoke("predict", run.path, folder, "-o", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == [
        "path", "predicted", "probability", "p_bar", "p_disc", "p_square", "second", "status"
    ]  # fmt: skip
    assert len(rows) == 12
    for row in rows:
        p = [float(row[f"p_{c}"]) for c in ("bar", "disc", "square")]
        assert sum(p) == pytest.approx(1, abs=1e-5)
        assert float(row["probability"]) == pytest.approx(max(p), abs=1e-6)
        assert row["second"] != row["predicted"]
        assert row["status"] in ("ok", "unsure", "unlike-training")
    count = json.loads((tmp_path / "out" / "pred.count.json").read_text())
    assert count["images"] == 12 and sum(count["statuses"].values()) == 12
    assert set(count["classes"]) == {"bar", "disc", "square"}
    assert "differential count" in result.output and "wrote" in result.output
    assert not partial_path(out).exists()


def test_min_confidence_decides_unsure(predictor, trained):
    paths = trained[1].test.paths[:6]
    strict = Predictor.from_path(predictor.source, min_confidence=1.0).predict(paths)
    assert {r["status"] for r in strict} <= {"unsure", "unlike-training"}
    lax = Predictor.from_path(predictor.source, min_confidence=0.0).predict(paths)
    assert "unsure" not in lax["status"]
    for bad in (1.5, float("nan")):
        with pytest.raises(BloodcellsError, match="min_confidence must be a number from 0 to 1"):
            Predictor.from_path(predictor.source, min_confidence=bad)


@pytest.mark.parametrize("value", ["nan", "1.5", "-0.1"])
def test_min_confidence_out_of_range_is_one_line(run, tmp_path, value):
    cells = save_images(tmp_path / "cells", 1)
    result = invoke("predict", run.path, *cells, "--min-confidence", value, "-o", tmp_path)
    one_line_error(result, f"--min-confidence must be a number from 0 to 1, not {value}")
    assert not (tmp_path / "predictions.csv").exists()


def test_unreadable_images_are_rows_not_crashes(run, tmp_path):
    folder = tmp_path / "mixed"
    save_images(folder, 4)
    (folder / "broken.png").write_bytes(b"not an image at all")
    good = (folder / "cell 000.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])  # a truncated file
    (folder / "notes.txt").write_text("not an image type: skipped and counted")
    (folder / ".DS_Store").write_bytes(b"hidden: ignored")
    out = tmp_path / "p.csv"
    result = invoke("predict", run.path, folder, "-o", out)
    assert result.exit_code == 0, result.output
    rows = {os.path.basename(r["path"]): r for r in read_csv(out)}
    assert set(rows) == {f"cell {i:03d}.png" for i in range(4)} | {"broken.png", "cut.png"}
    for name in ("broken.png", "cut.png"):
        assert rows[name]["status"] == "unreadable"
        assert rows[name]["predicted"] == "" and rows[name]["p_disc"] == ""
    assert "1 file skipped, not a supported image type (.txt 1)" in result.output
    assert "unreadable: " in result.output and "broken.png" in result.output
    count = json.loads((tmp_path / "p.count.json").read_text())
    assert count["statuses"]["unreadable"] == 2 and count["counted"] <= 4


def test_globs_brackets_spaces_and_shell_characters(run, tmp_path):
    odd = tmp_path / "cells [final] ;$(touch x) 'q'"
    save_images(odd, 3)
    save_images(odd / "sub dir", 2, seed=1)
    out = tmp_path / "out [1].csv"
    result = invoke("predict", run.path, odd, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(read_csv(out)) == 5 and f"wrote {out}" in result.output
    assert not (tmp_path / "x").exists()  # the $(touch x) in the name ran nowhere
    result = invoke("predict", run.path, f"{odd}/*.png", "-o", tmp_path / "glob.csv")
    assert result.exit_code == 0, result.output
    assert len(read_csv(tmp_path / "glob.csv")) == 3
    result = invoke("predict", run.path, f"{odd}/**/*.png", "-o", tmp_path / "deep.csv")
    assert len(read_csv(tmp_path / "deep.csv")) == 5
    one_line_error(
        invoke("predict", run.path, f"{odd}/*.jpg", "-o", tmp_path / "x.csv"),
        "no file matches this pattern",
    )
    assert not (tmp_path / "x").exists()


def test_find_images_order_duplicates_and_hidden(tmp_path):
    save_images(tmp_path / "a", 2)
    save_images(tmp_path / "a" / ".hidden", 2)
    (tmp_path / "a" / "x.gif").write_bytes(b"GIF89a")
    found = find_images([tmp_path / "a", tmp_path / "a" / "cell 001.png", str(tmp_path / "a/*")])
    assert [os.path.basename(f) for f in found.files] == ["cell 000.png", "cell 001.png"]
    assert found.skipped == {".gif": 1}  # found three times, counted once
    with pytest.raises(BloodcellsError, match="more than 1 images"):
        find_images([tmp_path / "a"], limit=1)


def test_stream_decodes_at_most_two_chunks_ahead(predictor, tmp_path, monkeypatch):
    paths = [str(p) for p in save_images(tmp_path / "many", 40)]
    decoded = []
    real = predict_module.load_image
    monkeypatch.setattr(predict_module, "load_image", lambda p, t: decoded.append(p) or real(p, t))
    chunks = predictor.stream(paths, batch_size=8)
    first = next(chunks)
    assert len(first) == 8 and len(decoded) <= 16
    rest = [r for chunk in chunks for r in chunk]
    assert [r["path"] for r in first + rest] == paths


def test_ctrl_c_leaves_a_valid_csv_of_what_is_done(run, tmp_path, monkeypatch):
    save_images(tmp_path / "cells", 30)
    real, calls = Predictor.rows, []

    def interrupted_on_second_chunk(self, images, paths):
        calls.append(len(paths))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images, paths)

    monkeypatch.setattr(Predictor, "rows", interrupted_on_second_chunk)
    out = tmp_path / "pred.csv"
    result = invoke("predict", run.path, tmp_path / "cells", "-o", out, "--batch-size", "8")
    assert result.exit_code == 130, result.output
    partial = partial_path(out)
    assert "interrupted: 8 of 30 images done" in result.output and str(partial) in result.output
    rows = read_csv(partial)
    assert len(rows) == 8 and all(r["status"] for r in rows)
    assert partial.read_text().endswith("\n")
    assert not out.exists() and not (tmp_path / "pred.count.json").exists()


def test_interrupt_mid_write_cuts_back_to_whole_chunks(predictor, tmp_path, monkeypatch):
    paths = [str(p) for p in save_images(tmp_path / "cells", 20)]
    seen = []

    def stop_later(rows):
        seen.append(rows)
        if len(seen) == 2:
            raise KeyboardInterrupt  # after the second chunk is written and flushed

    with pytest.raises(PredictionInterrupted) as stop:
        write_predictions(predictor, paths, tmp_path / "p.csv", 8, on_chunk=stop_later)
    assert stop.value.rows == 16 and len(read_csv(stop.value.path)) == 16


@pytest.mark.parametrize("kind", ["noise", "grey", "text"])
def test_images_that_are_not_cells_are_unlike_training(predictor, kind):
    rng = np.random.default_rng(0)
    if kind == "noise":
        image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    elif kind == "grey":
        image = np.full((32, 32), 128, np.uint8)
    else:
        page = Image.new("L", (32, 32), 255)
        draw = ImageDraw.Draw(page)
        for y in (0, 10, 20):
            draw.text((1, y), "abcdef", fill=0)
        image = np.asarray(page)
    (row,) = predictor.predict(image[None, None])
    assert row["status"] == "unlike-training", row


def test_most_dev_images_are_not_unlike_training(trained, predictor):
    rows = predictor.predict(trained[1].test.paths)
    flagged = rows["status"].count("unlike-training") / len(rows)
    assert flagged <= 0.15  # 5% by the energy threshold, about 2% by brightness/contrast


CLASSES = ("disc", "square", "bar")


def hard_image(k: int, rng: np.random.Generator) -> np.ndarray:
    """An easy-set image drowned in noise: the classes are confused now and then."""
    noise = rng.normal(120, 40, (32, 32))
    return np.clip(0.25 * easy_image(k, rng) + 0.75 * noise, 0, 255).astype(np.uint8)


def write_images(folder, counts: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(CLASSES):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(counts[cls]):
            Image.fromarray(hard_image(k, rng)).save(folder / cls / f"{i}.png")


def test_adjusted_count_is_closer_to_a_shifted_mix_than_the_raw(tmp_path):
    """Balanced training, a sample that is 80/15/5: the raw count is pulled towards the
    training mix; adjusted classify-and-count moves it back towards the truth."""
    balanced = dict.fromkeys(CLASSES, 60)
    write_images(tmp_path / "data" / "train", balanced, seed=0)
    write_images(tmp_path / "data" / "test", balanced, seed=1)
    truth = {"disc": 240, "square": 45, "bar": 15}
    write_images(tmp_path / "sample", truth, seed=2)
    config = TrainConfig(model="advanced", epochs=3, lr=1e-3)
    run = start_training(load_dataset(tmp_path / "data", cache=False), config, tmp_path / "runs")
    predictions = Predictor.from_run(run).predict(tmp_path / "sample")
    true_class = [os.path.basename(os.path.dirname(p)) for p in predictions["path"]]
    counted = [s in ("ok", "unsure") for s in predictions["status"]]
    count = predictions.count()
    n = sum(counted)
    shares = {c: sum(t == c for t, k in zip(true_class, counted, strict=True) if k) / n
              for c in CLASSES}  # fmt: skip
    raw = sum(abs(c.percent / 100 - shares[c.name]) for c in count.classes)
    adjusted = sum(abs(c.adjusted / 100 - shares[c.name]) for c in count.classes)
    print(  # shown with pytest -s, and on failure
        f"\nshifted mix: dev accuracy {run.metrics.accuracy:.3f}; truth "
        + ", ".join(f"{c} {100 * s:.1f}%" for c, s in shares.items())
        + "; raw "
        + ", ".join(f"{c.name} {c.percent:.1f}%" for c in count.classes)
        + "; adjusted "
        + ", ".join(f"{c.name} {c.adjusted:.1f}%" for c in count.classes)
        + f"; L1 error raw {raw:.3f}, adjusted {adjusted:.3f}"
    )
    assert run.metrics.accuracy < 0.97  # the test means nothing for a perfect classifier
    assert adjusted < raw
    for c in count.classes:
        assert c.adjusted_low <= c.adjusted <= c.adjusted_high


def test_count_of_nothing_and_of_a_model_without_dev_results():
    tally = Tally(["a", "b"]).add([{"status": "unreadable", "predicted": None}])
    count = differential_count(tally, [[5, 1], [2, 4]])
    assert count.counted == 0 and count.classes[0].percent is None
    assert "no images were counted" in count.adjusted_note
    tally.add([{"status": "ok", "predicted": "a"}, {"status": "unsure", "predicted": "b"}])
    count = differential_count(tally, None)
    assert [c.count for c in count.classes] == [1, 1] and count.classes[1].unsure == 1
    assert "no dev-set confusion matrix" in count.adjusted_note
    assert json.loads(count.to_json())["classes"]["a"]["adjusted_percent"] is None


def test_bad_input_is_one_line(run, tmp_path):
    cells = tmp_path / "cells"
    save_images(cells, 2)
    plain = tmp_path / "just a folder"
    plain.mkdir()
    (tmp_path / "model.txt").write_text("hello")
    one_line_error(invoke("predict", plain, cells), "neither a run folder nor a model file")
    one_line_error(invoke("predict", tmp_path / "model.txt", cells), "neither a run folder")
    one_line_error(invoke("predict", run.path / "weights.pt", cells), "pass the run folder")
    one_line_error(invoke("predict", tmp_path / "nope", cells), "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o.csv"
    one_line_error(invoke("predict", run.path, empty, "-o", out), "no images in")
    (empty / "a.txt").write_text("x")
    one_line_error(invoke("predict", run.path, empty, "-o", out), "skipped, not a supported")
    one_line_error(invoke("predict", run.path, tmp_path / "missing", "-o", out), "no such file")
    one_line_error(invoke("predict", run.path, cells, "-o", tmp_path / "o.txt"), ".txt")
    assert not out.exists() and not partial_path(out).exists()
    result = invoke("predict", run.path, cells, "--batch-size", "0", "-o", out)
    assert result.exit_code == 2 and "batch-size" in result.output


def test_an_existing_output_needs_overwrite(run, tmp_path):
    cells = tmp_path / "cells"
    save_images(cells, 2)
    out = tmp_path / "mine.csv"
    out.write_text("my own work")
    one_line_error(invoke("predict", run.path, cells, "-o", out), "pass --overwrite")
    assert out.read_text() == "my own work"
    (tmp_path / "other.count.json").write_text("{}")
    one_line_error(invoke("predict", run.path, cells, "-o", tmp_path / "other.csv"), "count.json")
    result = invoke("predict", run.path, cells, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(read_csv(out)) == 2


def test_a_folder_output_gets_the_default_name(run, tmp_path):
    cells = tmp_path / "cells"
    save_images(cells, 2)
    (tmp_path / "out").mkdir()
    result = invoke("predict", run.path, cells / "cell 000.png", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "predictions.csv").is_file()
    assert (tmp_path / "out" / "predictions.count.json").is_file()


@pytest.mark.realdata
def test_pbc32_test_folder_as_unlabelled_cells(pbc32, tmp_path):
    """The real patches: predict must agree with evaluate, and flag few dev images."""
    splits = load_dataset(pbc32)
    config = TrainConfig(model="simple", epochs=1)
    run = start_training(splits, config, tmp_path / "runs")
    out = tmp_path / "pbc.csv"
    result = invoke("predict", run.path, pbc32 / "test", "-o", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == len(splits.test)
    expected = evaluate(run.load_model(), splits.test, "cpu")
    by_path = {r["path"]: r["predicted"] for r in rows}
    predicted = [by_path[p] for p in splits.test.paths]
    assert predicted == [splits.classes[i] for i in expected.predictions.tolist()]
    flagged = sum(r["status"] == "unlike-training" for r in rows) / len(rows)
    assert flagged < 0.12


@pytest.mark.parametrize("kind", ["rgb", "16-bit"])
def test_predict_matches_evaluate_for_rgb_and_16_bit_images(tmp_path, kind):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 8), ("test", 4)):
        for k, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                gray = easy_image(k, rng)
                if kind == "rgb":
                    image = Image.fromarray(np.stack([gray, 255 - gray, gray // 2], axis=2))
                else:  # 16-bit grayscale: stored as float16 by training, so by predict too
                    image = Image.fromarray(gray.astype(np.uint16) * 257 + i)
                image.save(root / split / cls / f"{i}.{'png' if kind == 'rgb' else 'tif'}")
    channels = 3 if kind == "rgb" else 1
    config = TrainConfig(model="simple", epochs=1, channels=channels)
    splits = load_dataset(root, Transform(32, channels), cache=False)
    if kind == "16-bit":
        assert splits.test.images.dtype == torch.float16
    run = start_training(splits, config, tmp_path / "runs")
    expected = evaluate(run.load_model(), splits.test, "cpu").probabilities
    rows = Predictor.from_run(run).predict(splits.test.paths)
    got = torch.tensor([[r["p_a"], r["p_b"]] for r in rows])
    assert torch.equal(got, expected)


def test_tta_averages_the_dihedral_views_and_adapt_bn_leaves_the_run_alone(trained, tmp_path):
    from bloodcells.ops.image_ops import dihedral_views

    run, splits = trained
    images = to_unit(splits.test.images[:6])
    plain = Predictor.from_path(run.path)
    tta = Predictor.from_path(run.path, tta=True)
    logits, probabilities = tta.outputs(images)
    views = torch.stack([plain.outputs(view)[1] for view in dihedral_views(images)])
    assert torch.allclose(probabilities, views.mean(0), atol=1e-6)
    assert torch.equal(logits, plain.outputs(images)[0])  # unlike-training reads plain logits
    before = {k: v.clone() for k, v in plain.engine.model.state_dict().items()}
    weights = (run.path / "weights.pt").read_bytes()
    adapted = Predictor.from_path(run.path)
    adapted.adapt_batchnorm(to_unit(splits.test.images))
    after = adapted.engine.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "running_mean" in k)
    assert all(torch.equal(before[k], v) for k, v in plain.engine.model.state_dict().items())
    assert (run.path / "weights.pt").read_bytes() == weights


def test_predict_command_takes_tta_and_adapt_bn(trained, tmp_path):
    run, splits = trained
    out = tmp_path / "p.csv"
    args = ["predict", str(run.path), str(splits.root / "test"), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--tta", "--adapt-bn"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == len(splits.test) + 1


def test_an_interrupted_predicts_rows_are_kept(run, tmp_path):
    cells = save_images(tmp_path / "cells", 2)
    out = tmp_path / "pred.csv"
    partial_path(out).write_text("path,predicted\ncell 000.png,bar\n")
    result = invoke("predict", run.path, *cells, "-o", out)
    one_line_error(result, "pred.partial.csv: the rows of an interrupted predict; move it away")
    assert partial_path(out).read_text() == "path,predicted\ncell 000.png,bar\n"
    predictor = Predictor.from_path(run.path)
    with pytest.raises(BloodcellsError, match=r"partial\.csv: exists; pass overwrite=True"):
        write_predictions(predictor, [str(c) for c in cells], out)
    assert partial_path(out).read_text() == "path,predicted\ncell 000.png,bar\n"
    result = invoke("predict", run.path, *cells, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(read_csv(out)) == 2 and not partial_path(out).exists()


def test_dash_output_is_the_csv_on_stdout(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = save_images(tmp_path / "cells", 5)
    result = invoke("predict", run.path, tmp_path / "cells", "-o", "-")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["path"] for r in rows] == [str(c) for c in cells]
    assert all(r["status"] for r in rows)
    assert "differential count" in result.stderr and "5 of 5 images counted" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells"]  # no folder "-", no count


def test_the_unlike_training_warning_gives_the_dev_share_measured(trained, tmp_path):
    run, splits = trained
    rng = np.random.default_rng(0)
    folder = tmp_path / "noise"
    folder.mkdir()
    for i in range(6):  # pure noise: every image unlike the training data
        noise = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"noise {i}.png")
    result = invoke("predict", run.path, folder, "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    dev = Predictor.from_path(run.path).predict(splits.test.paths)["status"]
    share = 100 * dev.count("unlike-training") / len(dev)
    assert f"many images are unlike the training data ({share:.1f}% of its dev images" in (
        result.output
    )


def test_control_characters_in_file_names_are_escaped(run, tmp_path):
    folder = tmp_path / "cells"
    save_images(folder, 2)
    (folder / "bad\x1b[31m.png").write_bytes(b"not a png")
    result = invoke("predict", run.path, folder, "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stderr and "\x1b" not in result.stdout
    assert "unreadable: " + str(folder / "bad\\x1b[31m.png") in result.stderr


def test_an_interrupted_run_is_used_with_a_note(run, tmp_path):
    from tests.test_export import interrupted_copy

    source = interrupted_copy(run, tmp_path / "cut")
    cells = save_images(tmp_path / "cells", 2)
    result = invoke("predict", source, *cells, "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    note = f"note: {source}: interrupted at epoch 2 of 9; using its last saved epoch"
    assert note in result.stderr
    assert Predictor.from_path(source).notes[0] == note.removeprefix("note: ")
    assert not any("interrupted" in n for n in Predictor.from_path(run.path).notes)


def test_dash_output_into_a_closed_pipe_ends_quietly(run, tmp_path):
    folder = tmp_path / "cells"
    (first,) = save_images(folder, 1)
    for i in range(400):  # rows well past a pipe's 64 KiB, so the writer meets the closed end
        shutil.copy(first, folder / f"{i:03d}{'x' * 200}.png")
    command = [sys.executable, "-c", "from bloodcells.cli import main; main()"]
    command += ["predict", str(run.path), str(folder), "-o", "-", "--batch-size", "8"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"path,predicted,")
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert "error" not in stderr and "Traceback" not in stderr and "Exception" not in stderr
