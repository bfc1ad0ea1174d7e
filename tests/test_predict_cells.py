"""predict --find-cells: whole fields in, a row per white cell out, cut as training cut them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bloodcells import Predictor, load_run
from bloodcells.cells.crop_set import crop_cell_set, read_crop_record
from bloodcells.cells.crops import CropPolicy
from bloodcells.data import Transform, load_dataset
from bloodcells.data.prepare.split import split_folder
from bloodcells.inference.cells import CELL_COLUMNS
from bloodcells.runs import start_training
from bloodcells.training import TrainConfig
from tests.helpers import invoke
from tests.test_find_cells import save, smear_field

POLICY = CropPolicy(size=32, cell_fraction=0.5)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    """A simple CNN trained on crops cut by crop-cells from big-cell and small-cell fields."""
    tmp = tmp_path_factory.mktemp("cells")
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            big, small = (
                smear_field(((160, 160, 50),), seed=i),
                smear_field(((160, 160, 38),), seed=50 + i),
            )
            save(big, tmp / "fields" / split / "big" / f"b{i}.png")
            save(small, tmp / "fields" / split / "small" / f"s{i}.png")
    crop_cell_set(tmp / "fields", tmp / "crops", stain="giemsa", policy=POLICY)
    splits = load_dataset(tmp / "crops", Transform(32, 3), cache=False)
    config = TrainConfig(model="simple", epochs=1, image_size=32, channels=3)
    return start_training(splits, config, out=tmp / "runs"), tmp


def test_a_run_trained_on_a_crop_set_records_how_its_crops_were_cut(crop_run):
    run, tmp = crop_run
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["crops"]["crop_policy"] == POLICY.to_dict()
    assert load_run(run.path).info.crops == read_crop_record(tmp / "crops")
    assert Predictor.from_path(run.path).crop_policy == POLICY


def test_a_run_trained_on_patches_records_no_crops(trained):
    assert load_run(trained[0].path).info.crops is None
    assert Predictor.from_path(trained[0].path).crop_policy is None


def test_predict_find_cells_writes_a_row_per_cell_and_counts_per_field(crop_run, tmp_path):
    run, _ = crop_run
    fields = tmp_path / "new"
    save(smear_field(((100, 100, 44), (230, 230, 40)), seed=7), fields / "two.png")
    save(smear_field(((160, 160, 44),), seed=8), fields / "one.png")
    save(smear_field((), seed=9), fields / "none.png")
    (fields / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred.csv"
    result = invoke("predict", run.path, fields, "--find-cells", "--stain", "giemsa", "-o", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0])[: len(CELL_COLUMNS)] == list(CELL_COLUMNS)
    assert "path" not in rows[0]
    by_image = {}
    for row in rows:
        by_image.setdefault(Path(row["image"]).name, []).append(row)
    assert [r["cell"] for r in by_image["two.png"]] == ["1", "2"]
    assert len(by_image["one.png"]) == 1 and "none.png" not in by_image
    assert by_image["broken.png"][0]["status"] == "unreadable"
    for row in by_image["two.png"]:
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert x0 < x1 and y0 < y1 and row["predicted"] in ("big", "small")
    counts = {Path(r["image"]).name: r for r in read_csv(tmp_path / "pred.images.csv")}
    assert counts["two.png"]["cells"] == "2" and counts["one.png"]["cells"] == "1"
    assert int(counts["two.png"]["big"]) + int(counts["two.png"]["small"]) == int(
        counts["two.png"]["counted"]
    )
    assert json.loads((tmp_path / "pred.count.json").read_text())


def test_find_cells_and_adapt_bn_are_refused_together_before_any_work(crop_run, tmp_path):
    run, _ = crop_run
    result = invoke("predict", run.path, tmp_path, "--find-cells", "--adapt-bn", "-o", tmp_path)
    assert result.exit_code == 2 and "--adapt-bn" in result.output
    assert not list(tmp_path.iterdir())


def test_data_split_carries_a_flat_crop_sets_record(tmp_path):
    for i in range(4):
        save(smear_field(((160, 160, 44),), seed=i), tmp_path / "flat" / "big" / f"b{i}.png")
        save(smear_field(((160, 160, 38),), seed=20 + i), tmp_path / "flat" / "small" / f"s{i}.png")
    crop_cell_set(tmp_path / "flat", tmp_path / "crops", stain="giemsa", policy=POLICY)
    split_folder(tmp_path / "crops", tmp_path / "lab", test_fraction=0.25)
    assert read_crop_record(tmp_path / "lab") == read_crop_record(tmp_path / "crops")


def test_predict_geojson_holds_each_fields_cells_with_their_classes(crop_run, tmp_path):
    run, _ = crop_run
    fields = tmp_path / "new"
    save(smear_field(((100, 100, 44), (230, 230, 40)), seed=7), fields / "two.png")
    save(smear_field((), seed=9), fields / "none.png")
    out = tmp_path / "pred.csv"
    args = ("predict", run.path, fields, "--find-cells", "--stain", "giemsa", "--geojson")
    result = invoke(*args, "-o", out)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "pred.geojson").iterdir())
    assert files == ["two.geojson"]  # a field with no cell has nothing to import
    collection = json.loads((tmp_path / "pred.geojson" / "two.geojson").read_text())
    rows = read_csv(out)
    assert [f["properties"]["classification"]["name"] for f in collection["features"]] == [
        r["predicted"] for r in rows
    ]
    assert all(f["properties"]["objectType"] == "detection" for f in collection["features"])
    again = invoke(*args, "-o", out)
    assert again.exit_code == 2 and "exists" in again.output  # nothing replaced unasked


def test_geojson_without_find_cells_is_refused(crop_run, tmp_path):
    result = invoke("predict", crop_run[0].path, tmp_path, "--geojson", "-o", tmp_path / "p.csv")
    assert result.exit_code == 2 and "--find-cells" in result.output


def test_the_report_says_a_run_was_trained_on_cell_crops(crop_run, tmp_path):
    from bloodcells.report.render import write_report

    write_report([crop_run[0].path], tmp_path / "page.html")
    assert (
        "trained on cells cut from fields by data crop-cells: 32 px crops"
        in (tmp_path / "page.html").read_text()
    )


def test_evaluate_find_cells_cuts_whole_fields_as_training_did(crop_run):
    run, tmp = crop_run
    from bloodcells.analysis import evaluate_run

    on_fields = evaluate_run(load_run(run.path), tmp / "fields", find_cells=True)
    on_crops = evaluate_run(load_run(run.path), tmp / "crops")
    assert on_fields["n"] == on_crops["n"] == 4
    assert on_fields["accuracy"] == pytest.approx(on_crops["accuracy"])
    assert on_fields["data"] == str((tmp / "fields").resolve())
    result = invoke("evaluate", run.path, "--find-cells")
    assert result.exit_code == 2 and "--data" in result.output
