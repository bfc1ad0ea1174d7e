"""bloodcells data crop-cells: labelled whole fields -> one crop per field (the cell nearest the
centre) in the same layout, at one scale, the other cells listed; DEST trains as it is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcells.cells.crop_set import crop_cell_set
from bloodcells.cells.crops import CropPolicy
from bloodcells.data import load_dataset
from bloodcells.errors import DataError
from tests.helpers import invoke, one_line_error
from tests.test_find_cells import save, smear_field

CENTRE = ((160, 160, 44),)
OFF_CENTRE = ((150, 170, 44), (40, 40, 40))  # the labelled cell, and a neighbour at the corner


def manifest(dest: Path) -> list[dict]:
    with open(dest / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def flat(tmp_path) -> Path:
    """Flat class folders: big cells and small cells, one field with a neighbour, one empty."""
    src = tmp_path / "flat"
    for i in range(3):
        save(smear_field(CENTRE, seed=i), src / "big" / f"b{i}.png")
        save(smear_field(((160, 160, 38),), seed=10 + i), src / "small" / f"s{i}.png")
    save(smear_field(OFF_CENTRE, seed=20), src / "big" / "pair.png")
    save(smear_field((), seed=21), src / "small" / "empty.png")
    return src


def test_one_crop_per_field_the_centre_cell_the_others_listed(flat, tmp_path):
    dest = tmp_path / "crops"
    result = crop_cell_set(flat, dest, stain="giemsa", policy=CropPolicy(size=32))
    assert result.layout == "flat" and result.fields == 8
    assert result.kept == 7 and result.other_cells == 1 and result.no_cell == 1
    assert result.counts == {"": {"big": 4, "small": 3}}
    assert sorted(p.name for p in (dest / "big").iterdir()) == [
        "b0.png",
        "b1.png",
        "b2.png",
        "pair.png",
    ]
    with Image.open(dest / "big" / "pair.png") as crop:
        assert crop.size == (32, 32)
    table = {(r["source"], r["status"]): r for r in manifest(dest)}
    kept = table[("big/pair.png", "kept")]
    assert kept["file"] == "big/pair.png" and abs(float(kept["cx"]) - 170) < 5
    other = table[("big/pair.png", "other cell")]
    assert other["file"] == "" and abs(float(other["cx"]) - 40) < 5
    assert table[("small/empty.png", "no cell")]["class"] == "small"
    assert sum(r["status"] == "kept" for r in manifest(dest)) == 7


def test_crops_json_records_the_policy_and_one_scale_for_the_set(flat, tmp_path):
    policy = CropPolicy(size=32, cell_fraction=0.6)
    result = crop_cell_set(flat, tmp_path / "crops", stain="giemsa", policy=policy)
    record = json.loads((tmp_path / "crops" / "crops.json").read_text())
    assert record["made_by"] == "bloodcells data crop-cells"
    assert CropPolicy.from_dict(record["crop_policy"]) == policy
    assert record["scale"]["pixels"] == pytest.approx(result.scale)
    assert record["scale"]["how"] == "median of 7 cells"
    assert record["counts"]["crops"] == 7 and record["layout"] == "flat"
    # one scale: the big cells fill more of their crops than the small ones
    share = {
        cls: np.mean(
            [
                (np.asarray(Image.open(p)).mean(axis=2) < 160).mean()
                for p in (tmp_path / "crops" / cls).glob("[bs][0-9].png")
            ]
        )
        for cls in ("big", "small")
    }
    assert share["big"] > 1.2 * share["small"]

    crop_cell_set(flat, tmp_path / "by-size", stain="giemsa", pixel_size=0.25)
    scale = json.loads((tmp_path / "by-size" / "crops.json").read_text())["scale"]
    assert scale["how"] == "pixel size 0.25 µm" and scale["pixels"] == pytest.approx(48.0)


def test_the_lab_layout_gives_the_lab_layout_and_trains(tmp_path):
    src = tmp_path / "lab"
    seed = 0
    for split, n in (("train", 4), ("test", 2)):
        for cls, radius in (("big", 50), ("small", 38)):
            for i in range(n):
                seed += 1
                field = smear_field(((160, 160, radius),), seed=seed)
                save(field, src / split / cls / f"{cls}{i}.jpg")
    (src / "README.txt").write_text("not a field")
    result = invoke("data", "crop-cells", src, tmp_path / "crops", "--size", "32")
    assert result.exit_code == 0, result.output
    assert "next: bloodcells train --data" in result.output
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("big", "small"):
            names = sorted(p.name for p in (tmp_path / "crops" / split / cls).iterdir())
            assert names == [f"{cls}{i}.png" for i in range(n)]
    splits = load_dataset(tmp_path / "crops", cache=False)
    assert splits.train.classes == ["big", "small"] and len(splits.test) == 4


def test_unreadable_fields_are_listed_and_names_stay_unique(flat, tmp_path):
    (flat / "big" / "broken.png").write_text("no image")
    save(smear_field(CENTRE, seed=5), flat / "big" / "b0.jpg")  # b0.png is taken
    save(smear_field(CENTRE, seed=6), flat / "big" / "deeper" / "b0.png")
    dest = tmp_path / "crops"
    result = crop_cell_set(flat, dest, stain="giemsa")
    assert result.unreadable == 1
    statuses = {r["source"]: r["status"] for r in manifest(dest)}
    assert statuses["big/broken.png"] == "unreadable"
    files = {r["source"]: r["file"] for r in manifest(dest) if r["status"] == "kept"}
    assert files["big/b0.jpg"] == "big/b0.png"  # first in name order
    assert files["big/b0.png"] == "big/b0-2.png"
    assert files["big/deeper/b0.png"] == "big/deeper/b0.png"
    assert (dest / "big" / "b0-2.png").is_file()


def test_dest_is_checked_before_any_work(flat, tmp_path):
    dest = tmp_path / "crops"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    one_line_error(invoke("data", "crop-cells", flat, dest), "exists; choose a new DEST")
    one_line_error(
        invoke("data", "crop-cells", flat, dest, "--overwrite"),
        "was not made by bloodcells data crop-cells",
    )
    one_line_error(invoke("data", "crop-cells", flat, flat / "inside"), "is inside SRC")
    one_line_error(
        invoke("data", "crop-cells", tmp_path / "none", tmp_path / "x"), "no such folder"
    )
    one_line_error(invoke("data", "crop-cells", flat, tmp_path / "y", "--size", "1"), "--size must")
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_overwrite_replaces_an_earlier_crop_set(flat, tmp_path):
    dest = tmp_path / "crops"
    crop_cell_set(flat, dest, stain="giemsa")
    (dest / "big" / "stale.png").write_bytes(b"old")
    with pytest.raises(DataError, match="overwrite=True"):
        crop_cell_set(flat, dest, stain="giemsa")
    crop_cell_set(flat, dest, stain="giemsa", overwrite=True)
    assert not (dest / "big" / "stale.png").exists()


def test_a_flat_set_says_how_to_split_it(flat, tmp_path):
    result = invoke("data", "crop-cells", flat, tmp_path / "crops", "--stain", "giemsa")
    assert result.exit_code == 0, result.output
    assert "8 fields, 7 crops; other cells: 1, fields with no cell: 1, unreadable: 0" in (
        result.output
    )
    assert "next: bloodcells data split" in result.output
    split = invoke("data", "split", tmp_path / "crops", tmp_path / "lab", "--test-fraction", "0.3")
    assert split.exit_code == 0, split.output
