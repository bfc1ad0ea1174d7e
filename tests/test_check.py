"""`bloodcells data check`: planted duplicates, leaks, degenerate images, imbalance, sizes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data import Transform, load_dataset
from bloodcells.data.quality.check import check_dataset, check_threshold, worth_checking
from bloodcells.errors import DataError, DataWarning
from tests.conftest import easy_image, write_layout

runner = CliRunner()
JSON_KEYS = {
    "format",
    "root",
    "threshold",
    "channels",
    "images",
    "counts",
    "imbalance",
    "exact_duplicates",
    "same_pixels",
    "near_duplicates",
    "degenerate",
    "sizes",
    "problems",
    "seconds",
    "findings",
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tree_state(root: Path) -> dict[str, tuple]:
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """The easy set with one of each thing `data check` looks for planted in it."""
    root = write_layout(tmp_path_factory.mktemp("check") / "cells [x] ;$(y)", per_class=(20, 6))
    train, test = root / "train", root / "test"
    rng = np.random.default_rng(1)
    # an exact copy across splits, and one within train
    shutil.copy(train / "disc" / "disc_000.png", test / "disc" / "copied.png")
    shutil.copy(train / "square" / "square_003.png", train / "square" / "again.png")
    # the same pixels in other bytes (BMP instead of PNG), across splits
    Image.open(train / "disc" / "disc_002.png").save(test / "disc" / "same_pixels.bmp")
    # a slightly noised copy across splits
    original = np.asarray(Image.open(train / "square" / "square_001.png"), dtype=np.float64)
    noisy = np.clip(original + rng.normal(0, 3, original.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(test / "square" / "noisy.png")
    # a constant image, and one of an odd size
    Image.new("L", (32, 32), 128).save(train / "bar" / "blank.png")
    Image.fromarray(easy_image(2, rng, 48)).resize((48, 40)).save(train / "bar" / "big.png")
    # imbalance: 30 more training discs (50 against 21 and 22)
    for i in range(30):
        Image.fromarray(easy_image(0, rng)).save(train / "disc" / f"more_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def report(planted):
    return check_dataset(planted)


def test_an_exact_copy_across_splits_is_a_leak(report):
    exact = report.exact_duplicates
    assert exact["groups_across"] == 1 and exact["test_images_in_train"] == 1
    (across,) = [g for g in exact["groups"] if g["kind"] == "across"]
    assert {f["path"] for f in across["files"]} == {
        "train/disc/disc_000.png",
        "test/disc/copied.png",
    }
    assert any("byte-identical" in line for line in report.findings)


def test_an_exact_copy_within_a_split_is_listed(report):
    exact = report.exact_duplicates
    assert exact["groups_within_train"] == 1 and exact["groups_within_test"] == 0
    (within,) = [g for g in exact["groups"] if g["kind"] == "within_train"]
    assert {f["path"] for f in within["files"]} == {
        "train/square/square_003.png",
        "train/square/again.png",
    }


def test_the_same_pixels_in_other_bytes_are_found(report):
    pixels = report.same_pixels
    assert pixels["groups_across"] == 1 and pixels["test_images_in_train"] == 1
    paths = {f["path"] for f in pixels["groups"][0]["files"]}
    assert paths == {"train/disc/disc_002.png", "test/disc/same_pixels.bmp"}


def test_a_noised_copy_is_a_near_duplicate_and_exact_copies_are_not_counted_twice(report):
    near = report.near_duplicates
    assert near["test_images_in_train"] == 1, near["pairs"]
    (pair,) = near["pairs"]
    assert pair["test"] == "test/square/noisy.png"
    assert pair["train"] == "train/square/square_001.png"
    assert 0.98 <= pair["similarity"] < 1
    assert report.leaked_test_images == 3


def test_a_constant_image_is_degenerate(report):
    degenerate = report.degenerate
    assert degenerate["constant"] == 1
    (item,) = [i for i in degenerate["items"] if i["path"] == "train/bar/blank.png"]
    assert item["reasons"] == ["constant (every pixel 128)"]


def test_imbalance_gives_the_majority_baseline(report):
    imbalance = report.imbalance
    assert imbalance["majority_class"] == "disc"
    test = report.counts["test"]
    assert imbalance["majority_baseline"] == round(test["disc"] / sum(test.values()), 4)
    assert imbalance["ratio"] == round(50 / 21, 3)
    assert any(line.startswith("imbalance:") for line in report.findings)


def test_an_odd_size_is_named_with_its_class(report):
    sizes = report.sizes
    assert sizes["most_common"] == "32x32" and sizes["odd_images"] == 1
    assert sizes["odd"] == [
        {
            "size": "48x40",
            "count": 1,
            "by_class": {"bar": 1},
            "by_split": {"train": 1, "test": 0},
            "example": "train/bar/big.png",
        }
    ]


def test_tiny_and_dark_images_are_degenerate(tmp_path):
    root = write_layout(tmp_path / "d", per_class=(6, 3))
    rng = np.random.default_rng(0)
    Image.fromarray(easy_image(0, rng, 8)).save(root / "train" / "disc" / "tiny.png")
    dark = np.clip(rng.normal(6, 4, (32, 32)), 0, 255).astype(np.uint8)
    Image.fromarray(dark).save(root / "test" / "bar" / "dark.png")
    items = {i["path"]: i["reasons"] for i in check_dataset(root).degenerate["items"]}
    assert items["train/disc/tiny.png"] == ["tiny (8x8, under 16 px a side)"]
    assert [r.split(" (")[0] for r in items["test/bar/dark.png"]] == ["mostly black"]


def test_a_clean_set_has_no_findings(tmp_path):
    root = write_layout(tmp_path / "clean")
    report = check_dataset(root)
    assert report.findings == [], report.findings
    assert report.leaked_test_images == 0
    assert report.near_duplicates["best_match"]["max"] < 0.98


def test_check_changes_nothing(planted):
    before = tree_state(planted)
    check_dataset(planted)
    assert tree_state(planted) == before


def test_json_output_parses_with_stable_keys(planted):
    result = invoke("data", "check", planted, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == JSON_KEYS
    assert data["format"] == 1 and data["root"] == str(planted)
    assert data["near_duplicates"]["pairs"][0]["test"] == "test/square/noisy.png"


def test_human_output_names_what_was_found_and_prints_paths_as_typed(planted):
    result = invoke("data", "check", planted)
    assert result.exit_code == 0, result.output
    for text in (
        "cells [x] ;$(y)",
        "test/disc/copied.png",
        "test/square/noisy.png",
        "train/bar/blank.png: constant",
        "48x40",
        "always answering disc",
        "summary:",
        "leak:",
    ):
        assert text in result.output, text


def test_threshold_outside_0_1_is_one_line(planted):
    for bad in ("0", "1.5", "nan"):
        result = invoke("data", "check", planted, "--threshold", bad)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert f"--threshold {float(bad)}: must be above 0" in result.output
    with pytest.raises(DataError, match=r"^threshold=1.5: must be above 0"):
        check_threshold(1.5)  # Python names the parameter


def test_a_folder_not_in_the_lab_layout_is_one_line(tmp_path):
    (tmp_path / "flat" / "a").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a" / "x.png")
    result = invoke("data", "check", tmp_path / "flat")
    assert result.exit_code == 2, result.output
    assert "no train/test split" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unreadable_image_is_a_problem_not_a_crash(tmp_path):
    root = write_layout(tmp_path / "u", per_class=(6, 3))
    (root / "train" / "disc" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match="broken.png"):
        report = check_dataset(root)
    assert [p["path"] for p in report.problems["items"]] == ["train/disc/broken.png"]
    assert report.degenerate["count"] == 0
    assert any(line.startswith("problems:") for line in report.findings)


def test_rgb_check_reads_colour(planted):
    assert check_dataset(planted, channels=3).channels == 3


def test_data_info_hint_reasons(planted):
    reasons = worth_checking(load_dataset(planted, Transform(32, 1)).summary())
    assert any(r.startswith("classes unbalanced") for r in reasons)
    assert "2 image sizes" in reasons


@pytest.mark.realdata
def test_pbc32_check_finishes_in_seconds_and_finds_the_twice_photographed_monocyte(pbc32):
    report = check_dataset(pbc32)
    assert report.seconds < 30
    assert report.exact_duplicates["test_images_in_train"] == 0
    pairs = {(p["test"], p["train"]) for p in report.near_duplicates["pairs"]}
    assert ("test/monocyte/MO_415531.png", "train/monocyte/MO_231316.png") in pairs
    assert report.imbalance["majority_baseline"] == 0.25
