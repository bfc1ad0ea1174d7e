"""`data import-bbbc045` on small synthetic montages written in BBBC045's layout."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data.sources import bbbc045
from bloodcells.data.sources.bbbc045 import ImportConfig, choose_test_donors, import_bbbc045
from bloodcells.errors import DataError

runner = CliRunner()
TILE, GRID = 11, 4  # 16 tiles of 11×11 px per montage, 44×44 px
CLASSES = ("B", "T", "eosinophil", "monocyte", "neutrophil")
SMALL = ImportConfig(tile=TILE, grid=GRID)


def cell_tile(rng: np.random.Generator, dtype: str) -> np.ndarray:
    """A non-constant tile: float in [0, 0.01] (as BBBC045's), or 8- or 16-bit counts."""
    if dtype == "float32":
        return (rng.integers(180, 260, (TILE, TILE)) / 65535).astype(np.float32)
    high = 255 if dtype == "uint8" else 4095
    return rng.integers(1, high, (TILE, TILE)).astype(dtype)


def write_montages(
    folder: Path, cells: int, dtype: str = "float32", channels=(1, 5, 6), seed: int = 0
) -> None:
    """ch<C>_<N>.tif montages holding `cells` cells; positions after the last cell stay 0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per = GRID * GRID
    for number in range(1, max(1, -(-cells // per)) + 1):
        n = min(per, cells - (number - 1) * per)
        for channel in channels:
            montage = np.zeros((TILE * GRID, TILE * GRID), dtype)
            for i in range(n):
                r, c = divmod(i, GRID)
                tile = cell_tile(rng, dtype)
                if channel != 5:  # other channels hold other pixels
                    tile = tile // 2 if dtype != "float32" else tile / 2
                montage[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
            Image.fromarray(montage).save(folder / f"ch{channel}_{number}.tif")


def write_bbbc045(root: Path, cells: dict[str, dict[str, int]], dtype: str = "float32") -> Path:
    """root/Stained_Montages/<donor>/<class>/batch1/ch<C>_<N>.tif for donor -> class -> cells."""
    for k, (donor, per_class) in enumerate(sorted(cells.items())):
        for j, (cls, n) in enumerate(sorted(per_class.items())):
            write_montages(
                root / "Stained_Montages" / donor / cls / "batch1", n, dtype, seed=k * 10 + j
            )
    return root


def even(n: int) -> dict[str, int]:
    return dict.fromkeys(CLASSES, n)


THREE_DONORS = {"D1": even(9), "D2": even(5), "D3": even(20)}  # 20 cells: two montages each


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return write_bbbc045(tmp_path_factory.mktemp("bbbc") / "BBBC045 [v1] ;$(x)", THREE_DONORS)


def manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def quiet(src, dest, config=SMALL):
    return import_bbbc045(src, dest, config, progress=False, say=lambda s: None)


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1, result.output


def left_over(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def invoke(*args):
    return runner.invoke(app, ["data", "import-bbbc045", *map(str, args)])


# --- what a good import writes -------------------------------------------------------------


def test_import_cuts_the_cells_and_holds_out_the_named_donor(src, tmp_path):
    dest = tmp_path / "out"
    config = ImportConfig(tile=TILE, grid=GRID, test_donors=("D2",))
    got = quiet(src, dest, config)

    assert got.test_donors == ["D2"] and got.train_donors == ["D1", "D3"]
    assert got.counts == {"train": even(29), "test": even(5)}
    assert got.montages == 20 and got.cells == 34 * 5
    assert got.empty == 20 * 16 - 34 * 5  # every grid position after a batch's last cell
    for split, n in (("train", 29), ("test", 5)):
        for cls in CLASSES:
            assert len(list((dest / split / cls).glob("*.png"))) == n
    with Image.open(next((dest / "test" / "B").glob("*.png"))) as im:
        assert im.mode == "I;16" and im.size == (TILE, TILE)  # float montage -> 16-bit PNG
    assert left_over(tmp_path) == ["out"]  # the staging folder is gone
    settings = json.loads((dest / "import.json").read_text())
    assert settings["test_donors"] == ["D2"] and settings["channel"] == 5


def test_the_lab_loader_reads_the_result(src, tmp_path):
    from bloodcells.data import load_dataset

    splits = load_dataset(quiet(src, tmp_path / "out").root, cache=False)
    assert splits.train.classes == sorted(CLASSES)
    assert len(splits.train) + len(splits.test) == 34 * 5


def test_the_manifest_traces_every_png_to_its_montage_tile(src, tmp_path):
    dest = tmp_path / "out"
    quiet(src, dest)
    rows = manifest(dest)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == files
    root = src / "Stained_Montages"
    for r in rows[:: max(1, len(rows) // 25)]:
        with Image.open(root / r["montage"]) as im:
            montage = np.asarray(im)
        row, col = int(r["row"]), int(r["col"])
        assert int(r["tile_index"]) == row * GRID + col
        tile = montage[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
        with Image.open(dest / r["file"]) as im:
            written = np.asarray(im).astype(np.int64)
        assert (written == np.round(tile * 65535)).all()
        assert r["split"] == r["file"].split("/")[0] and r["class"] == r["file"].split("/")[1]
        assert r["montage"].startswith(f"{r['donor_folder']}/{r['cell_type_folder']}/batch1/ch5_")


def test_a_fraction_holds_out_whole_donors_reproducibly(tmp_path):
    cells = {
        f"D{i}": {c: 3 + (i * 7 + j * 3) % 11 for j, c in enumerate(CLASSES)} for i in range(6)
    }
    src = write_bbbc045(tmp_path / "src", cells)
    config = ImportConfig(tile=TILE, grid=GRID, test_fraction=0.3, seed=4)
    first = quiet(src, tmp_path / "a", config)
    again = quiet(src, tmp_path / "b", config)
    assert first.test_donors == again.test_donors and first.chosen
    sides = {}
    for r in manifest(tmp_path / "a"):
        assert sides.setdefault(r["donor"], r["split"]) == r["split"]  # never on both sides
    assert sorted(d for d, s in sides.items() if s == "test") == first.test_donors
    assert all(first.counts["test"][c] > 0 and first.counts["train"][c] > 0 for c in CLASSES)
    # as close to 30% of each class as whole donors allow
    expected = choose_test_donors({d: Counter(v) for d, v in cells.items()}, fraction=0.3, seed=4)
    assert set(first.test_donors) == expected


def test_choose_test_donors_finds_the_stratified_subset():
    cells = {
        "A": Counter(B=10, T=10),  # 25% of each class: the only subset that fits
        "B": Counter(B=30),
        "C": Counter(T=30),
    }
    assert choose_test_donors(cells, 0.25, seed=0) == {"A"}
    assert choose_test_donors(cells, 0.25, seed=123) == {"A"}


def test_choose_test_donors_refuses_a_class_of_one_donor():
    with pytest.raises(DataError, match="class eosinophil has cells from one donor only"):
        choose_test_donors({"A": Counter(B=5, eosinophil=3), "B": Counter(B=5)}, 0.2)


def test_year_folders_of_one_donor_stay_together(tmp_path):
    cells = {"D1": even(4), "D2_2014": even(3), "D2_2015": even(2), "D3": even(5)}
    src = write_bbbc045(tmp_path / "src", cells)
    config = ImportConfig(tile=TILE, grid=GRID, test_donors=("D2_2014",))
    got = quiet(src, tmp_path / "out", config)
    assert got.test_donors == ["D2"] and got.merged == {"D2": ["D2_2014", "D2_2015"]}
    rows = [r for r in manifest(tmp_path / "out") if r["donor"] == "D2"]
    assert {r["donor_folder"] for r in rows} == {"D2_2014", "D2_2015"}
    assert {r["split"] for r in rows} == {"test"} and len(rows) == 5 * 5


def test_channel_picks_the_files_of_that_channel(src, tmp_path):
    five = quiet(src, tmp_path / "five")
    one = quiet(src, tmp_path / "one", ImportConfig(tile=TILE, grid=GRID, channel=1))
    assert one.cells == five.cells
    rows = {r["file"]: r for r in manifest(tmp_path / "one")}
    some = next(iter(rows.values()))
    assert "/ch1_" in some["montage"]
    with (
        Image.open(tmp_path / "one" / some["file"]) as a,
        Image.open(tmp_path / "five" / some["file"]) as b,
    ):
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_multipage_tiffs_use_the_channel_as_page(tmp_path):
    rng = np.random.default_rng(1)
    for donor in ("D1", "D2"):
        for cls in ("B", "T"):
            folder = tmp_path / "src" / donor / cls / "batch1"
            folder.mkdir(parents=True)
            pages = []
            for page in range(3):
                montage = np.zeros((TILE * GRID, TILE * GRID), np.uint8)
                montage[:TILE, :TILE] = cell_tile(rng, "uint8") // (page + 1)
                pages.append(Image.fromarray(montage))
            pages[0].save(folder / "montage.tif", save_all=True, append_images=pages[1:])
    config = ImportConfig(tile=TILE, grid=GRID, channel=2, test_donors=("D2",))
    got = quiet(tmp_path / "src", tmp_path / "out", config)
    assert got.cells == 4
    row = manifest(tmp_path / "out")[0]
    with Image.open(tmp_path / "src" / row["montage"]) as im:
        im.seek(1)
        expected = np.asarray(im)[:TILE, :TILE]
    with Image.open(tmp_path / "out" / row["file"]) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), expected)
    assert row["page"] == "2"
    with pytest.raises(DataError, match="has 3 page"):
        quiet(tmp_path / "src", tmp_path / "x", ImportConfig(tile=TILE, grid=GRID, channel=4))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("dtype", "mode"), [("uint8", "L"), ("uint16", "I;16")])
def test_integer_montages_keep_their_bit_depth(tmp_path, dtype, mode):
    src = write_bbbc045(tmp_path / "src", {"D1": even(2), "D2": even(3)}, dtype)
    quiet(src, tmp_path / "out")
    row = manifest(tmp_path / "out")[0]
    with Image.open(src / "Stained_Montages" / row["montage"]) as im:
        montage = np.asarray(im)
    r, c = int(row["row"]), int(row["col"])
    with Image.open(tmp_path / "out" / row["file"]) as im:
        assert im.mode == mode
        tile = montage[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        assert np.array_equal(np.asarray(im), tile)


def test_src_may_be_stained_montages_itself_or_an_unzipped_parent(src, tmp_path):
    a = quiet(src / "Stained_Montages", tmp_path / "a")
    (tmp_path / "unzipped").mkdir()
    (tmp_path / "unzipped" / "BBBC045_v1").symlink_to(src, target_is_directory=True)
    b = quiet(tmp_path / "unzipped", tmp_path / "b")
    assert a.cells == b.cells == 34 * 5


def test_crop_keeps_the_centre_of_each_tile(src, tmp_path):
    quiet(src, tmp_path / "out", ImportConfig(tile=TILE, grid=GRID, crop=7))
    row = manifest(tmp_path / "out")[0]
    with Image.open(src / "Stained_Montages" / row["montage"]) as im:
        montage = np.asarray(im)
    r, c = int(row["row"]), int(row["col"])
    tile = montage[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE][2:9, 2:9]
    with Image.open(tmp_path / "out" / row["file"]) as im:
        assert im.size == (7, 7)
        assert np.array_equal(np.asarray(im), np.round(tile * 65535))


def test_cli_prints_the_split_as_typed(src, tmp_path):
    dest = tmp_path / "cells [final] ;$(rm -rf x)"
    result = invoke(src, dest, "--tile", TILE, "--grid", GRID, "--test-donors", "D1, D2")
    assert result.exit_code == 0, result.output
    assert f"found 20 montages of channel 5 from 3 donors under {src / 'Stained_Montages'}" in (
        result.output
    )
    assert "cut 170 cells from 20 montages (150 empty grid positions skipped)" in result.output
    assert "test donors: D1, D2 (named with --test-donors)" in result.output
    assert "train donors: D3" in result.output
    assert str(dest) in result.output and f"manifest: {dest / 'manifest.csv'}" in result.output
    assert "eosinophil" in result.output and "41%" in result.output  # 14 of 34 cells per class


# --- bad input: one line each, nothing written ----------------------------------------------


def small(*args):
    return ("--tile", TILE, "--grid", GRID, *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (small("--test-donors", "D9"), "--test-donors: no donor 'D9' with montages; donors: D1"),
        (small("--test-donors", "D1,D2,D3"), "names every donor"),
        (small("--test-donors", " , "), "names no donor"),
        (small("--test-donors", "D1,D1"), "names a donor twice"),
        (small("--test-donors", "D1", "--test-fraction", "0.2"), "not both"),
        (small("--test-fraction", "1.5"), "--test-fraction must be between 0.01 and 0.99"),
        (small("--channel", "3"), "no montages of channel 3; found channels 1, 5, 6"),
        (small("--channel", "0"), "--channel must be between 1 and 99, not 0"),
        (small("--seed", "-1"), "--seed must be between 0 and"),
        (small("--crop", "2"), "--crop must be 0 (whole tile) or 4 to 11"),
        (("--tile", 0), "--tile must be between 4 and 1024, not 0"),
        (("--grid", 1000), "--grid must be between 1 and 100"),
        (("--tile", 1000, "--grid", 100), "at most 8192"),
        (("--tile", 10), "expected 300×300 (30×30 tiles of 10 px); check --tile, --grid"),
        (small("--test-donors", "x" * 5000), "longer than 4096 characters"),
    ],
)
def test_bad_options_are_one_line(src, tmp_path, args, message):
    result = invoke(src, tmp_path / "out", *args)
    one_line_error(result, message)
    assert left_over(tmp_path) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile": 0}, "'tile' must be between 4 and 1024, not 0"),
        ({"tile": 11, "crop": 2}, "'crop' must be 0 (whole tile) or 4 to 11, not 2"),
        ({"tile": 1000, "grid": 100}, "'tile' × 'grid' is 100000 pixels a side"),
        ({"test_donors": ("D1",), "test_fraction": 0.2}, "give test_donors or test_fraction"),
        ({"test_donors": ("D1", "D1")}, "test_donors names a donor twice"),
    ],
)
def test_python_errors_name_the_parameters(options, message):
    with pytest.raises(DataError, match=re.escape(message)):
        ImportConfig(**options)


def test_src_not_in_the_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(invoke(tmp_path / "empty", tmp_path / "o"), "no montages of channel 5")
    one_line_error(invoke(tmp_path / "nope", tmp_path / "o"), "nope: no such folder; expected")
    (tmp_path / "x.zip").write_bytes(b"PK")
    one_line_error(invoke(tmp_path / "x.zip", tmp_path / "o"), "not a folder; unzip it first")
    assert not (tmp_path / "o").exists()


def test_an_unknown_cell_type_folder_is_refused(tmp_path):
    src = write_bbbc045(tmp_path / "src", {"D1": {"B": 2, "basophil": 2}, "D2": {"B": 2}})
    one_line_error(invoke(src, tmp_path / "o", *small()), "basophil: unknown cell type")
    assert not (tmp_path / "o").exists()


def test_class_folder_aliases_are_understood(tmp_path):
    cells = {
        "D1": {"B cells": 2, "T_cells": 2, "Neutrophils": 1},
        "D2": {"b": 1, "T": 1, "neutrophil": 2},
    }
    got = quiet(write_bbbc045(tmp_path / "src", cells), tmp_path / "o")
    assert sorted(got.counts["train"]) == ["B", "T", "neutrophil"]


def test_a_test_donor_without_a_class_is_refused_before_writing(tmp_path):
    cells = {"D1": even(3), "D2": {"B": 2, "T": 2}, "D3": even(3)}
    src = write_bbbc045(tmp_path / "src", cells)
    result = invoke(src, tmp_path / "o", *small("--test-donors", "D2"))
    one_line_error(result, "class eosinophil would have no test images")
    assert "choose among D1, D3" in result.stderr
    assert left_over(tmp_path) == ["src"]


def test_a_class_of_one_donor_cannot_be_split_by_fraction(tmp_path, monkeypatch):
    src = write_bbbc045(tmp_path / "src", {"D1": even(3), "D2": {"B": 2, "T": 2}})
    monkeypatch.setattr(bbbc045, "cut_montage", None)  # refused before any montage is read
    result = invoke(src, tmp_path / "o", *small())
    one_line_error(result, "no choice of whole donors puts every class in both train and test")
    assert "(class eosinophil has cells from one donor only)" in result.stderr
    assert left_over(tmp_path) == ["src"]


def test_existing_dest_and_overwrite(src, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "my notes.txt").write_text("mine")
    one_line_error(invoke(src, dest, *small()), "out: exists; choose a new folder")
    one_line_error(invoke(src, dest, *small("--overwrite")), "replaces only a folder made by")
    assert (dest / "my notes.txt").read_text() == "mine"
    other = tmp_path / "made"
    quiet(src, other)
    result = invoke(src, other, *small("--overwrite", "--test-donors", "D3"))
    assert result.exit_code == 0, result.output
    assert json.loads((other / "import.json").read_text())["test_donors"] == ["D3"]
    assert sorted(left_over(tmp_path)) == ["made", "out"]


def test_dest_inside_src_is_refused(src):
    result = invoke(src, src / "Stained_Montages" / "out", *small())
    one_line_error(result, "DEST must be outside SRC")
    result = invoke(src, src.parent, *small("--overwrite"))
    one_line_error(result, "DEST must be outside SRC")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("float", "float values from 0 to 2, outside [0, 1]"),
        ("garbage", "cannot be read as a TIFF montage"),
        ("rgb", "a RGB image; expected a grayscale montage"),
    ],
)
def test_a_bad_montage_mid_import_leaves_nothing(tmp_path, damage, message):
    src = write_bbbc045(tmp_path / "src", {"D1": even(2), "D2": even(2)})
    bad = src / "Stained_Montages" / "D2" / "monocyte" / "batch1" / "ch5_1.tif"
    if damage == "float":
        montage = np.zeros((TILE * GRID, TILE * GRID), np.float32)
        montage[:TILE, :TILE] = np.linspace(0, 2, TILE * TILE).reshape(TILE, TILE)
        Image.fromarray(montage).save(bad)
    elif damage == "garbage":
        bad.write_bytes(b"II*\x00 not really a tiff")
    else:
        Image.new("RGB", (TILE * GRID, TILE * GRID), "red").save(bad)
    parent = tmp_path / "new"
    one_line_error(invoke(src, parent / "out", *small()), message)
    assert not parent.exists()  # nor the parent folder it made


def test_a_donor_whose_montages_are_all_empty(tmp_path):
    src = write_bbbc045(tmp_path / "src", {"D1": even(2), "D2": even(2)})
    for path in (src / "Stained_Montages" / "D2" / "T").rglob("ch5_*.tif"):
        Image.fromarray(np.zeros((TILE * GRID, TILE * GRID), np.float32)).save(path)
    result = invoke(src, tmp_path / "o", *small("--test-donors", "D2"))
    one_line_error(result, "class T would have no test images")
    assert left_over(tmp_path) == ["src"]


def test_interrupt_mid_import_leaves_no_half_folder(src, tmp_path, monkeypatch):
    calls = []
    real = bbbc045.cut_montage

    def cut_then_interrupt(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bbbc045, "cut_montage", cut_then_interrupt)
    result = invoke(src, tmp_path / "new" / "out", *small())
    assert result.exit_code == 130 and "interrupted" in result.output
    assert len(calls) == 3 and left_over(tmp_path) == []
