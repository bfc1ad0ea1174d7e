"""Finding white cells in whole fields, and their canonical crops, on fields drawn here."""

from __future__ import annotations

import numpy as np
import pytest
from cell_images import BACKGROUND, Smear, four_cells, iou
from PIL import Image

from bloodcells.cells import (
    MAX_PIXELS,
    Cell,
    CropPolicy,
    crop_cell,
    detect_stain,
    estimate_scale,
    find_cells,
    load_field,
    scale_from_pixel_size,
)
from bloodcells.cells.find import cell_labels
from bloodcells.data.sources.synthetic_cells import CLASSES, render_cells
from bloodcells.errors import DataError


def boxes(cells: list[Cell]) -> list[tuple[int, int, int, int]]:
    return [(c.x0, c.y0, c.x1, c.y1) for c in cells]


def matches(truth, found: list[Cell]) -> bool:
    """Every truth box has its own found cell at IoU >= 0.5, and nothing else was found."""
    if len(found) != len(truth):
        return False
    left = boxes(found)
    for t in truth:
        best = max(left, key=lambda b: iou(t, b))
        if iou(t, best) < 0.5:
            return False
        left.remove(best)
    return True


@pytest.fixture(scope="module")
def field() -> tuple[np.ndarray, Smear]:
    smear = four_cells()
    return smear.image(), smear


def test_finds_every_white_cell_and_nothing_else(field):
    image, smear = field
    found = find_cells(image)
    assert matches(smear.boxes, found)
    assert [(c.y0, c.x0) for c in found] == sorted((c.y0, c.x0) for c in found)
    assert {c.stain for c in found} == {"giemsa"}
    assert not any(c.touches_border for c in found)
    for cell in found:
        assert 0 < cell.nucleus_area < cell.cell_area
        assert cell.x0 <= cell.cx < cell.x1 and cell.y0 <= cell.cy < cell.y1


def test_a_lobed_nucleus_is_one_cell():
    smear = Smear(260, 260)
    smear.white_cell(130, 130, lobes=3)
    smear.red_cells(4)
    assert matches(smear.boxes, find_cells(smear.image(), "giemsa"))


def test_touching_cells_are_split():
    smear = Smear(240, 400)
    smear.white_cell(120, 150, r=48)
    smear.white_cell(120, 248, r=50, lobes=3)  # the two cytoplasm discs touch
    found = find_cells(smear.image())
    assert matches(smear.boxes, found)


def test_a_cell_cut_by_the_edge_is_kept_and_flagged():
    smear = Smear(300, 300)
    smear.white_cell(150, 20)  # 30 px of its 100 outside the field
    smear.white_cell(150, 200)
    found = find_cells(smear.image())
    assert matches(smear.boxes, found)
    assert [c.touches_border for c in sorted(found, key=lambda c: c.x0)] == [True, False]


def test_a_small_crop_at_low_magnification_is_found_with_the_defaults():
    smear = Smear(120, 120)
    smear.white_cell(60, 60, r=25)  # a 700 px² nucleus: a platelet's size at pbc-wbc's scale
    smear.red_cells(2, r=18)
    assert matches(smear.boxes, find_cells(smear.image()))


def test_labels_match_the_cells(field):
    labels, found = cell_labels(field[0])
    assert labels.max() == len(found)
    for i, cell in enumerate(found, start=1):
        ys, xs = np.nonzero(labels == i)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == boxes([cell])[0]
        assert len(xs) == cell.cell_area


@pytest.mark.parametrize("kind", ["blank", "white", "black", "red cells only"])
@pytest.mark.parametrize("stain", ["auto", "giemsa"])
def test_no_cell_where_there_is_none(kind, stain):
    smear = Smear(300, 320, seed=1)
    if kind == "red cells only":
        smear.red_cells(9)
        for cy, cx in ((40, 40), (150, 160), (250, 60)):
            smear.platelet(cy, cx, r=5)
        image = smear.image()
    else:
        value = {"blank": BACKGROUND, "white": (255, 255, 255), "black": (0, 0, 0)}[kind]
        image = np.empty((300, 320, 3), np.uint8)
        image[:] = value
    assert find_cells(image, stain) == []


def test_red_cells_make_a_stained_field(field):
    smear = Smear(300, 320, seed=2)
    smear.red_cells(8)
    assert detect_stain(smear.image()) == "giemsa"
    assert detect_stain(field[0]) == "giemsa"


def test_brightfield_tiles_are_found_by_contrast():
    tiles = np.concatenate([render_cells(c, 2, np.random.default_rng(0), 96) for c in CLASSES])
    for tile in tiles:
        assert detect_stain(tile) == "brightfield"
        assert detect_stain(np.repeat(tile[..., None], 3, axis=2)) == "brightfield"
        found = find_cells(tile)
        assert len(found) == 1, found
        cell = found[0]
        assert cell.stain == "brightfield"
        assert cell.x0 <= 48 < cell.x1 and cell.y0 <= 48 < cell.y1
        assert 15 <= cell.diameter <= 80


def test_other_input_types_give_the_same_cells(field):
    image = field[0]
    expected = find_cells(image)
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
    assert find_cells(rgba) == expected
    assert find_cells(image.astype(np.uint16) * 257) == expected
    assert find_cells(image / 255.0) == expected
    assert find_cells(image.astype(np.float32) / 255) == expected
    gray = np.asarray(Image.fromarray(image).convert("L"))
    assert all(c.stain == "brightfield" for c in find_cells(gray))
    with pytest.raises(DataError, match="colour"):
        find_cells(gray, "giemsa")


@pytest.mark.parametrize("shape", [(10,), (4, 5, 2), (4, 5, 5), (2, 3, 4, 3), (1, 50, 3), (0, 0)])
def test_what_is_not_an_image_is_refused(shape):
    with pytest.raises(DataError) as err:
        find_cells(np.zeros(shape, np.uint8))
    assert "\n" not in str(err.value)


def test_bad_arguments_are_refused(field):
    with pytest.raises(DataError, match="stain"):
        find_cells(field[0], "wright")
    with pytest.raises(DataError, match="min_area"):
        find_cells(field[0], min_area=0)
    with pytest.raises(DataError, match="dtype"):
        find_cells(np.zeros((20, 20), np.int8))


def test_an_over_large_image_is_refused_in_one_line():
    huge = np.broadcast_to(np.uint8(0), (20_000, 20_000, 3))  # no memory behind it
    assert huge.shape[0] * huge.shape[1] > MAX_PIXELS
    with pytest.raises(DataError, match="MAX_PIXELS") as err:
        find_cells(huge)
    assert "\n" not in str(err.value)


def test_min_area_drops_small_cells(field):
    assert find_cells(field[0], min_area=10**6) == []
    assert len(find_cells(field[0], min_area=100)) == 4


# -- crops ------------------------------------------------------------------------------


def ring_field(size: int = 200, r: float = 20) -> tuple[np.ndarray, Cell]:
    """A dark disc of radius r (none for r=0) in the middle of a bright gradient, its Cell."""
    yy, xx = np.mgrid[:size, :size]
    image = np.empty((size, size, 3), np.uint8)
    image[...] = (150 + 100 * xx / size)[..., None].astype(np.uint8)
    c = size / 2 - 0.5
    image[(yy - c) ** 2 + (xx - c) ** 2 < r * r] = (60, 20, 120)
    cell = Cell(80, 80, 120, 120, c, c, 1256, 1256, False, "giemsa")
    return image, cell


def test_crop_is_centred_and_scaled():
    image, cell = ring_field(r=20)
    policy = CropPolicy(size=64, cell_fraction=0.5)
    crop = crop_cell(image, cell, policy, scale=40.0)  # side 80 source px
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    dark = crop[..., 1] < 60
    ys, xs = np.nonzero(dark)
    assert abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1
    assert abs((xs.max() - xs.min() + 1) - 32) <= 2  # the 40 px cell fills half the side
    assert crop_cell(image[..., 0], cell, CropPolicy(size=32), 40.0).shape == (32, 32)


@pytest.mark.parametrize("padding", ["reflect", "background"])
def test_crop_at_the_corner_is_padded_never_black(padding):
    image, _ = ring_field(r=0)
    corner = Cell(0, 0, 10, 10, 2.0, 3.0, 50, 80, True, "giemsa")
    crop = crop_cell(image, corner, CropPolicy(size=48, padding=padding), scale=100.0)
    assert crop.shape == (48, 48, 3)
    assert crop.min() >= 140  # the field's darkest corner pixel is 150
    if padding == "background":
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert np.abs(crop[0, 0].astype(int) - np.median(border, axis=0)).max() <= 2


def test_crop_much_larger_than_the_image_still_reflects():
    image, cell = ring_field(size=60, r=0)
    crop = crop_cell(image, cell, CropPolicy(size=32), scale=200.0)  # side 400 from 60 px
    assert crop.shape == (32, 32, 3) and crop.min() >= 140


def test_scale_follows_the_set_so_a_magnified_field_gives_the_same_crops(field):
    image = field[0]
    double = np.asarray(Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2)))
    small, large = find_cells(image), find_cells(double)
    assert len(small) == len(large) == 4
    s1, s2 = estimate_scale(small), estimate_scale(large)
    assert s2 / s1 == pytest.approx(2.0, rel=0.05)
    policy = CropPolicy(size=64)
    for a, b in zip(small, large, strict=True):
        ca = crop_cell(image, a, policy, s1).astype(float)
        cb = crop_cell(double, b, policy, s2).astype(float)
        assert np.abs(ca - cb).mean() < 6


def test_estimate_scale():
    cells = [Cell(0, 0, 1, 1, 0, 0, 1, int(np.pi * r * r), False, "giemsa") for r in (10, 20, 30)]
    assert estimate_scale(cells) == pytest.approx(40.0, rel=0.01)
    with pytest.raises(DataError, match="cells"):
        estimate_scale([])


def test_scale_from_pixel_size():
    assert scale_from_pixel_size(0.5) == pytest.approx(24.0)
    for bad in (0, -1, float("nan")):
        with pytest.raises(DataError, match="pixel_size_um"):
            scale_from_pixel_size(bad)


def test_crop_policy_round_trips_and_checks():
    policy = CropPolicy(size=96, cell_fraction=0.4, padding="background")
    assert CropPolicy.from_dict(policy.to_dict()) == policy
    assert CropPolicy().to_dict() == {"size": 64, "cell_fraction": 0.5, "padding": "reflect"}
    with pytest.raises(DataError, match="padding"):
        CropPolicy(padding="constant")
    with pytest.raises(DataError, match="cell_fraction"):
        CropPolicy(cell_fraction=0)
    with pytest.raises(DataError, match="size"):
        CropPolicy(size=2)
    with pytest.raises(DataError, match="unknown"):
        CropPolicy.from_dict({"size": 64, "zoom": 2})


# -- files ------------------------------------------------------------------------------


def test_load_field_reads_what_find_cells_wants(tmp_path, field):
    image = field[0]
    Image.fromarray(image).save(tmp_path / "rgb.png")
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    gray16 = (image[..., 1].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert np.array_equal(load_field(tmp_path / "rgb.png"), image)
    assert np.array_equal(load_field(tmp_path / "rgba.png"), image)
    loaded = load_field(tmp_path / "gray16.png")
    assert loaded.dtype == np.uint8 and np.abs(loaded.astype(int) - image[..., 1]).max() <= 1
    assert find_cells(load_field(tmp_path / "rgb.png")) == find_cells(image)


def test_load_field_refuses_what_is_not_an_image_file(tmp_path, monkeypatch):
    (tmp_path / "notes.png").write_text("not an image")
    for path in (tmp_path, tmp_path / "notes.png", tmp_path / "missing.png"):
        with pytest.raises(DataError) as err:
            load_field(path)
        assert "\n" not in str(err.value)
    Image.new("RGB", (300, 300)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="too large"):
        load_field(tmp_path / "bomb.png")


# -- real fields ------------------------------------------------------------------------


@pytest.mark.realdata
def test_the_labelled_cell_is_found_in_real_fields(pbc_wbc):
    """On 100 fields per class, the found cell nearest the centre contains it (>= 0.98)."""
    for folder in sorted(p for p in pbc_wbc.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))[::10][:100]
        hits = 0
        for path in files:
            image = load_field(path)
            cy, cx = image.shape[0] / 2, image.shape[1] / 2
            found = find_cells(image)
            near = min(found, key=lambda c: (c.cx - cx) ** 2 + (c.cy - cy) ** 2, default=None)
            hits += near is not None and near.x0 <= cx < near.x1 and near.y0 <= cy < near.y1
        assert hits / len(files) >= 0.98, folder.name
