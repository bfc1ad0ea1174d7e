"""bloodcells find-cells: every white cell of whole fields into cells.csv, crops, a manifest,
overlays and GeoJSON; OUT written as one unit, locked, never half; bad input never fatal."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcells.cells import Cell
from bloodcells.cells.crops import CropPolicy
from bloodcells.cells.fields import unique_stems
from bloodcells.cells.geojson import cells_geojson
from bloodcells.cells.outputs import CSV_COLUMNS, FindInterrupted, find_cells_in_files
from bloodcells.errors import BloodcellsError, DataError, RunError
from bloodcells.viz.overlay import CUT, INSIDE, draw_cells
from tests.conftest import SHARED_DATA
from tests.helpers import invoke, one_line_error

BACKGROUND = (245, 222, 200)
RED_CELL = (212, 170, 170)
CYTOPLASM = (190, 140, 175)
NUCLEUS = (90, 35, 135)


def smear_field(
    white: tuple[tuple[int, int, int], ...] = ((160, 160, 44),),
    size: tuple[int, int] = (320, 320),
    red_cells: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """A stained field (H×W×3 uint8) at about the PBC fields' scale: pink red cells, and a
    white cell (a purple nucleus in a lilac cytoplasm disc) at each (y, x, radius) of `white`."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.empty((h, w, 3), np.float32)
    image[:] = BACKGROUND
    yy, xx = np.mgrid[:h, :w]
    for _ in range(red_cells):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        if all((cy - y) ** 2 + (cx - x) ** 2 > (r + 28) ** 2 for y, x, r in white):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 24**2] = RED_CELL
    for cy, cx, r in white:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = CYTOPLASM
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (0.65 * r) ** 2] = NUCLEUS
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def save(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def fields(tmp_path) -> Path:
    """One field with one white cell, one with two, one with none (only red cells)."""
    root = tmp_path / "fields"
    save(smear_field(), root / "one.png")
    save(smear_field(((85, 85, 42), (230, 230, 48)), seed=1), root / "two.png")
    save(smear_field((), seed=2), root / "none.png")
    return root


def rows(out: Path, name: str = "cells.csv") -> list[dict]:
    with open(out / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def find(inputs, out, **options):
    return find_cells_in_files(inputs, out, **{"stain": "giemsa", **options})


def test_a_row_per_cell_with_its_crop_at_the_policys_size(fields, tmp_path):
    out = tmp_path / "out"
    result = find([fields], out, policy=CropPolicy(size=48))
    table = rows(out)
    assert list(table[0]) == list(CSV_COLUMNS)
    assert [(Path(r["image"]).name, r["cell"]) for r in table] == [
        ("one.png", "1"),
        ("two.png", "1"),
        ("two.png", "2"),
    ]
    assert result.cells == result.crops == 3 and result.images == 3
    assert result.no_cell == [str(fields / "none.png")]
    for row in table:
        assert row["stain"] == "giemsa" and row["touches_border"] == "false"
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert x0 <= float(row["cx"]) < x1 and y0 <= float(row["cy"]) < y1
        with Image.open(out / row["crop"]) as crop:
            assert crop.size == (48, 48)
    assert sorted(p.name for p in (out / "crops").iterdir()) == [
        "one_1.png",
        "two_1.png",
        "two_2.png",
    ]
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no lock, no staging


def test_the_manifest_records_the_policy_the_scale_and_the_counts(fields, tmp_path):
    policy = CropPolicy(size=40, cell_fraction=0.4)
    result = find([fields], tmp_path / "out", policy=policy)
    record = manifest(tmp_path / "out")
    assert record["status"] == "complete" and record["made_by"] == "bloodcells find-cells"
    assert CropPolicy.from_dict(record["crop_policy"]) == policy
    assert record["scale"]["pixels"] == pytest.approx(result.scale)
    assert record["scale"]["how"] == "median of 3 cells"
    counts = record["counts"]
    assert counts["images"] == 3 and counts["cells"] == 3
    assert counts["images_with_no_cell"] == 1 and counts["unreadable_images"] == 0
    assert record["images_with_no_cell"] == [str(fields / "none.png")]
    assert record["stains"] == {"giemsa": 3}
    assert record["versions"]["bloodcells"]

    find([fields], tmp_path / "out2", pixel_size=0.5)
    scale = manifest(tmp_path / "out2")["scale"]
    assert scale["how"] == "pixel size 0.5 µm" and scale["pixels"] == pytest.approx(24.0)


def test_one_scale_for_the_whole_input_so_size_stays_a_cue(tmp_path):
    """A small and a large white cell: the large one fills more of its crop."""
    root = tmp_path / "fields"
    save(smear_field(((160, 160, 38),), red_cells=0), root / "small.png")
    save(smear_field(((160, 160, 60),), red_cells=0), root / "large.png")
    find([root], tmp_path / "out", policy=CropPolicy(size=64))
    dark = {}
    for name in ("small", "large"):
        crop = np.asarray(Image.open(tmp_path / "out" / "crops" / f"{name}_1.png"))
        dark[name] = (crop.mean(axis=2) < 160).mean()
    assert dark["large"] > 1.8 * dark["small"]  # (60 / 38)² = 2.5


def test_overlays_show_each_cell_box_in_its_colour(fields, tmp_path):
    out = tmp_path / "out"
    find([fields], out, overlay=draw_cells)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        "none.png",
        "one.png",
        "two.png",
    ]
    drawn = np.asarray(Image.open(out / "overlays" / "one.png"))
    assert drawn.shape == (320, 320, 3)
    row = rows(out)[0]
    assert tuple(drawn[int(row["y1"]) - 1, (int(row["x0"]) + int(row["x1"])) // 2]) == INSIDE


def test_draw_cells_labels_and_colours_cells_the_border_cuts():
    image = np.full((100, 120), 200, np.uint8)  # gray: drawn in RGB all the same
    whole = Cell(10, 30, 40, 60, 25.0, 45.0, 100, 400, False, "brightfield")
    cut = Cell(90, 50, 120, 90, 105.0, 70.0, 100, 400, True, "brightfield")
    drawn = np.asarray(draw_cells(image, [whole, cut], labels=["1 neutrophil 0.93", "2"]))
    assert drawn.shape == (100, 120, 3)
    assert tuple(drawn[59, 20]) == INSIDE and tuple(drawn[89, 100]) == CUT
    with pytest.raises(DataError, match="labels"):
        draw_cells(image, [whole], labels=["a", "b"])


def test_geojson_is_a_feature_collection_of_qupath_detections(fields, tmp_path):
    find([fields / "two.png"], tmp_path / "one", geojson=True)
    doc = json.loads((tmp_path / "one" / "cells.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 2
    for feature, row in zip(doc["features"], rows(tmp_path / "one"), strict=True):
        assert feature["type"] == "Feature"
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert {tuple(p) for p in ring} == {(x0, y0), (x1, y0), (x1, y1), (x0, y1)}
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["image"] == "two.png"
        assert "classification" not in props  # no class known yet
        assert all(isinstance(v, int | float) for v in props["measurements"].values())

    find([fields], tmp_path / "several", geojson=True)
    per_image = sorted(p.name for p in (tmp_path / "several" / "geojson").iterdir())
    assert per_image == ["none.geojson", "one.geojson", "two.geojson"]
    assert not (tmp_path / "several" / "cells.geojson").exists()


def test_cells_geojson_classifies_with_a_name_and_a_colour():
    cells = [Cell(0, 0, 10, 10, 5.0, 5.0, 20, 80, True, "giemsa")] * 2
    doc = cells_geojson(cells, "a.png", classes=["neutrophil", None], probabilities=[0.93, None])
    first, second = (f["properties"] for f in doc["features"])
    assert first["classification"]["name"] == "neutrophil"
    colour = first["classification"]["color"]
    assert len(colour) == 3 and all(0 <= c <= 255 for c in colour)
    assert first["measurements"]["Probability"] == 0.93
    assert "classification" not in second and "Probability" not in second["measurements"]
    assert doc["features"][0]["id"] != doc["features"][1]["id"]
    assert cells_geojson(cells, "a.png")["features"][0]["id"] == doc["features"][0]["id"]
    with pytest.raises(DataError, match="classes must hold one entry per cell"):
        cells_geojson(cells, "a.png", classes=["neutrophil"])


def test_fields_with_no_cell_are_counted_not_errors(tmp_path):
    root = tmp_path / "fields"
    save(np.full((60, 60, 3), 255, np.uint8), root / "white.png")
    save(np.zeros((60, 60, 3), np.uint8), root / "black.png")
    result = invoke("find-cells", root, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "2 images, 0 cells" in result.output and "images with no cell: 2" in result.output
    assert "no cell was found" in result.output
    assert rows(tmp_path / "out") == [] and manifest(tmp_path / "out")["scale"]["pixels"] is None


def test_unreadable_files_are_listed_and_the_run_goes_on(fields, tmp_path, monkeypatch):
    (fields / "text.png").write_text("not an image")
    (fields / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(fields / "pipe.png")
    save(smear_field(size=(400, 400)), fields / "huge.png")
    monkeypatch.setattr("bloodcells.cells.find.MAX_PIXELS", 350 * 350)
    result = invoke("find-cells", fields, "-o", tmp_path / "out", "--stain", "giemsa")
    assert result.exit_code == 0, result.output
    unreadable = {
        Path(u["image"]).name: u["reason"] for u in manifest(tmp_path / "out")["unreadable"]
    }
    assert set(unreadable) == {"text.png", "gone.png", "pipe.png", "huge.png"}
    assert "not a regular file" in unreadable["pipe.png"]
    assert "MAX_PIXELS" in unreadable["huge.png"]
    assert "unreadable: 4" in result.output and "3 cells" in result.output


def test_gray_sixteen_bit_and_rgba_fields_are_searched(tmp_path):
    root = tmp_path / "fields"
    rgb = smear_field()
    save(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), root / "rgba.png")
    Image.fromarray(rgb.mean(axis=2).astype(np.uint16) * 257).save(root / "gray16.png")
    save(rgb.mean(axis=2).astype(np.uint8), root / "gray.png")
    result = find_cells_in_files([root], tmp_path / "out")
    assert result.unreadable == [] and result.images == 3
    assert result.stains == {"brightfield": 2, "giemsa": 1}
    assert {Path(r["image"]).name for r in rows(tmp_path / "out")} >= {"rgba.png"}


def test_odd_names_globs_and_names_shared_by_two_folders(tmp_path):
    root = tmp_path / "a [b] c;$(d)"
    save(smear_field(), root / "x y;$(z).png")
    save(smear_field(seed=3), root / "sub" / "x y;$(z).png")
    (root / "notes.txt").write_text("skipped, said")
    result = invoke("find-cells", f"{root}/**/*.png", "-o", tmp_path / "o [1]")
    assert result.exit_code == 0, result.output
    crops = sorted(p.name for p in (tmp_path / "o [1]" / "crops").iterdir())
    assert crops == ["x y;$(z)-2_1.png", "x y;$(z)_1.png"]
    assert unique_stems(["a/X.png", "b/x.png", "c/x-2.png", "d/\x1b.png"]) == [
        "X",
        "x-2",
        "x-2-2",
        "_",
    ]
    folder = invoke("find-cells", root, "-o", tmp_path / "o2")
    assert "files skipped, not searched (.txt 1)" in folder.output


def test_an_existing_out_is_refused_before_any_work(fields, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("keep")
    one_line_error(invoke("find-cells", fields, "-o", mine), "exists; choose another -o folder")
    one_line_error(
        invoke("find-cells", fields, "-o", mine, "--overwrite"),
        "was not made by bloodcells find-cells",
    )
    assert [p.name for p in mine.iterdir()] == ["notes.md"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(invoke("find-cells", fields, "-o", afile), "exists and is not a folder")
    one_line_error(invoke("find-cells", tmp_path / "nothing", "-o", tmp_path / "new"), "no such")
    assert not (tmp_path / "new").exists()


def test_overwrite_replaces_an_earlier_output_and_skips_its_files(fields, tmp_path):
    out = fields / "cells"  # inside the input folder: its crops are not new fields
    assert find([fields], out).cells == 3
    (out / "crops" / "stale.png").write_bytes(b"old")
    again = find([fields], out, overwrite=True)
    assert again.cells == 3 and again.skipped["(inside OUT)"] == 4  # 3 crops + stale.png
    assert not (out / "crops" / "stale.png").exists()


def test_a_second_writer_is_refused_while_the_first_holds_out(fields, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = textwrap.dedent(f"""
        import sys
        from bloodcells.utils.locks import folder_lock
        with folder_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        for overwrite in (False, True):
            with pytest.raises(RunError, match="is writing this output folder right now"):
                find([fields], out, overwrite=overwrite)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert [p.name for p in out.iterdir()] == [".writer.lock"]


def interrupt_at(stage: str, when: int):
    def progress(current: str, done: int, total: int) -> None:
        if current == stage and done == when:
            raise KeyboardInterrupt

    return progress


def test_ctrl_c_while_finding_keeps_a_valid_partial_csv(fields, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FindInterrupted) as stop:
        find([fields], out, progress=interrupt_at("finding cells", 2))
    assert stop.value.code == 130 and stop.value.result.searched == 2
    assert not (out / "cells.csv").exists()
    table = rows(out, "cells.partial.csv")
    assert [Path(r["image"]).name for r in table] == ["one.png"]  # none.png has no cell
    assert all(r["crop"] == "" for r in table)
    assert manifest(out)["status"] == "interrupted"
    one_line_error(invoke("find-cells", fields, "-o", out), "exists")


def test_ctrl_c_while_cutting_keeps_every_found_cell_and_the_crops_cut(fields, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FindInterrupted) as stop:
        find([fields], out, progress=interrupt_at("cutting crops", 1))
    result = stop.value.result
    assert result.searched == 3 and result.cells == 3 and result.crops >= 1
    table = rows(out, "cells.partial.csv")
    assert len(table) == 3  # every cell found; a crop named only where it was cut
    cut = [r["crop"] for r in table if r["crop"]]
    assert len(cut) == result.crops and all((out / c).is_file() for c in cut)
    assert len(list((out / "crops").iterdir())) == result.crops
    assert manifest(out)["counts"]["cells"] == 3


def test_ctrl_c_before_any_image_leaves_nothing(fields, tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(FindInterrupted) as stop:
        find([fields], out, progress=interrupt_at("finding cells", 0))
    assert stop.value.result is None
    assert not (tmp_path / "new").exists()


def test_the_cli_says_what_an_interrupted_run_left(fields, tmp_path, monkeypatch):
    from bloodcells.cells import fields as fields_module
    from bloodcells.cells import outputs

    real = outputs.search_field
    calls = []

    def slow(item, stain):
        calls.append(item)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(item, stain)

    monkeypatch.setattr(outputs, "search_field", slow)
    monkeypatch.setattr(fields_module, "decode_workers", lambda: 1)
    result = invoke("find-cells", fields, "-o", tmp_path / "out")
    assert result.exit_code == 130, result.output
    assert "interrupted: 1 of 3 images searched" in result.output
    assert "cells.partial.csv" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stain", "purple"], "--stain must be one of giemsa, brightfield, auto"),
        (["--size", "2"], "--size must be an integer from 4 to 4096"),
        (["--pixel-size", "0"], "--pixel-size must be 0.01 to 100 µm per pixel"),
        (["--pixel-size", "nan"], "--pixel-size must be"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(fields, tmp_path, args, message):
    one_line_error(invoke("find-cells", fields, "-o", tmp_path / "out", *args), message)
    assert not (tmp_path / "out").exists()


def test_library_errors_name_parameters(fields, tmp_path):
    with pytest.raises(BloodcellsError, match="pixel_size must be"):
        find_cells_in_files([fields], tmp_path / "out", pixel_size=-1)
    (tmp_path / "out").mkdir()
    with pytest.raises(BloodcellsError, match="overwrite=True"):
        find_cells_in_files([fields], tmp_path / "out")


@pytest.mark.realdata
def test_find_cells_on_twenty_pbc_fields(tmp_path):
    root = SHARED_DATA / "pbc-wbc" / "all"
    if not root.is_dir():
        pytest.skip("../shared/data/pbc-wbc is not here (real data lives outside the project)")
    files = [str(p) for cls in sorted(root.iterdir()) for p in sorted(cls.glob("*.jpg"))[:5]]
    out = tmp_path / "out"
    result = find_cells_in_files(files, out, overlay=draw_cells, geojson=True)
    assert result.images == 20 and result.unreadable == []
    assert len(result.no_cell) <= 1  # each field holds a white cell, labelled near the centre
    assert result.stains == {"giemsa": 20}
    assert 40 < result.scale < 200  # px across the median white cell in these 360×363 fields
    assert len(rows(out)) == result.cells == result.crops
    assert len(list((out / "overlays").iterdir())) == 20
    assert len(list((out / "geojson").iterdir())) == 20
