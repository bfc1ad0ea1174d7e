"""BBBC045's montage files: found under SRC, named by donor and class, and cut into tiles.

BBBC045 (Broad Bioimage Benchmark Collection) ships its cells as TIFF montages:

    Stained_Montages/<donor>/<cell type>/<batch>/ch<C>_<N>.tif

one file per imaging-flow-cytometer channel C and montage N, each a GRID×GRID grid of TILE×TILE
tiles (30×30 tiles of 55×55 px, 1650×1650 px). Grid positions after a batch's last cell are
padding: a constant value (zero). A TIFF whose name does not say its channel is read as a
montage with one page per channel, and page C is kept.

- **Empty tiles**: a tile whose pixels all have one value (or are all NaN) is padding and
  skipped. No contrast or std threshold: real brightfield tiles can have very low contrast.
- **Bit depth**: 8-bit montages give 8-bit tiles, 16-bit give 16-bit, float montages with
  values in [0, 1] (what bioformats writes) give 16-bit tiles of round(value × 65535). Float
  values outside [0, 1] or NaN inside a cell tile are an error, not a guess.
- **Classes**: cell-type folders map to the lab's class names B, T, eosinophil, monocyte,
  neutrophil (case, plurals and a "cells" suffix are ignored); any other folder is an error.
- **Donors**: a donor folder named NAME_YYYY (e.g. CRF101_2014 and CRF101_2015) is the donor
  NAME sampled in year YYYY.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bloodcells.data.folders import subdirs
from bloodcells.errors import DataError

CLASSES = ("B", "T", "eosinophil", "monocyte", "neutrophil")
ALIASES = {c.lower(): c for c in CLASSES}
MONTAGE_ROOT = "Stained_Montages"
BBBC_LAYOUT = "expected SRC/Stained_Montages/<donor>/<cell type>/<batch>/ch<C>_<N>.tif"
MONTAGE_NAME = re.compile(r"^ch(\d+)_(\d+)\.tiff?$", re.IGNORECASE)
TIFF_SUFFIXES = (".tif", ".tiff")
YEAR_SUFFIX = re.compile(r"^(.+?)_(?:19|20)\d\d$")
MAX_MONTAGES = 20_000  # BBBC045 has a few hundred per channel
MAX_DONORS = 1_000
INT_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16}


@dataclass(frozen=True)
class Montage:
    """One montage file and what its folders say about it."""

    path: Path
    relative: str  # to the montage root, for the manifest
    donor: str  # the donor (NAME of a NAME_YYYY folder)
    folder: str  # the donor folder
    cell_type: str  # the cell-type folder
    cls: str  # the lab's class name
    batch: str
    page: int  # 0-based page of a multi-page TIFF; 0 for a ch<C>_<N>.tif file


def find_montage_root(src: Path) -> Path:
    """SRC/Stained_Montages, SRC/*/Stained_Montages (an unzipped folder) or SRC itself."""
    if not src.exists():
        raise DataError(f"{src}: no such folder; {BBBC_LAYOUT}")
    if not src.is_dir():
        hint = "; unzip it first" if src.suffix.lower() == ".zip" else ""
        raise DataError(f"{src}: not a folder{hint}; {BBBC_LAYOUT}")
    if (src / MONTAGE_ROOT).is_dir():
        return src / MONTAGE_ROOT
    nested = [d / MONTAGE_ROOT for d in subdirs(src) if (d / MONTAGE_ROOT).is_dir()]
    return nested[0] if len(nested) == 1 else src


def scan(root: Path, channel: int) -> list[Montage]:
    """Every montage of `channel` under root/<donor>/<cell type>/[<batch>/], sorted."""
    montages: list[Montage] = []
    channels_seen: Counter[int] = Counter()
    for donor_dir in subdirs(root):
        for type_dir in subdirs(donor_dir):
            cls = class_name(type_dir)
            batches = [(type_dir, ""), *((b, b.name) for b in subdirs(type_dir))]
            for folder, batch in batches:
                for path, page in _montage_files(folder, channel, channels_seen):
                    montages.append(
                        Montage(
                            path=path,
                            relative=path.relative_to(root).as_posix(),
                            donor=donor_of(donor_dir.name),
                            folder=donor_dir.name,
                            cell_type=type_dir.name,
                            cls=cls,
                            batch=batch,
                            page=page,
                        )
                    )
                if len(montages) > MAX_MONTAGES:
                    raise DataError(f"{root}: more than {MAX_MONTAGES} montages; is SRC right?")
    if not montages:
        others = ", ".join(str(c) for c in sorted(channels_seen) if c != channel)
        found = f"; found channels {others}, pick one with 'channel'" if others else ""
        raise DataError(f"{root}: no montages of channel {channel}{found}; {BBBC_LAYOUT}")
    if len({m.donor for m in montages}) > MAX_DONORS:
        raise DataError(f"{root}: more than {MAX_DONORS} donor folders; is SRC right?")
    classes = sorted({m.cls for m in montages})
    if len(classes) < 2:
        raise DataError(
            f"{root}: montages of one class only ({classes[0]}); a classifier needs two"
        )
    return sorted(montages, key=lambda m: (m.donor, m.folder, m.cls, m.batch, m.relative))


def _montage_files(folder: Path, channel: int, seen: Counter[int]) -> list[tuple[Path, int]]:
    """(file, page) of the montages of `channel` in one folder.

    Files named ch<C>_<N>.tif say their channel; if a folder has none, each TIFF in it is a
    multi-page montage and page `channel` is used.
    """
    tiffs = sorted(
        f
        for f in folder.iterdir()
        if f.suffix.lower() in TIFF_SUFFIXES and f.is_file() and not f.name.startswith(".")
    )
    named = [(f, MONTAGE_NAME.match(f.name)) for f in tiffs]
    named = [(f, int(m[1])) for f, m in named if m]
    if named:
        seen.update(c for _, c in named)
        return [(f, 0) for f, c in named if c == channel]
    return [(f, channel - 1) for f in tiffs]


def class_name(type_dir: Path) -> str:
    """The lab's class name of a BBBC045 cell-type folder, or a DataError."""
    key = re.sub(r"[\s_-]+", " ", type_dir.name.strip().lower())
    key = re.sub(r" (cells?|lymphocytes?)$", "", key)
    key = key[:-1] if len(key) > 2 and key.endswith("s") else key
    if key in ALIASES:
        return ALIASES[key]
    raise DataError(
        f"{type_dir}: unknown cell type; BBBC045's cell-type folders are "
        f"{', '.join(CLASSES)} (move other folders out of SRC)"
    )


def donor_of(folder: str) -> str:
    """The donor of a donor folder: NAME for NAME_YYYY (one donor sampled in two years)."""
    found = YEAR_SUFFIX.match(folder)
    return found[1] if found else folder


def merged_folders(montages: list[Montage]) -> dict[str, list[str]]:
    folders = defaultdict(set)
    for m in montages:
        folders[m.donor].add(m.folder)
    return {d: sorted(f) for d, f in sorted(folders.items()) if len(f) > 1}


def cut_montage(
    path: Path, page: int, tile: int, grid: int, crop: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The tiles of one montage (N×T×T, uint8 or uint16) and which of them hold a cell.

    A grid×grid montage of tile×tile px; `crop` > 0 keeps a centred crop×crop of each tile.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's remarks on odd TIFF tags: an error says enough
        pixels = read_page(path, page, tile, grid)
    tiles = pixels.reshape(grid, tile, grid, tile).swapaxes(1, 2).reshape(grid * grid, tile, tile)
    keep = ~_empty(tiles)
    tiles = _to_png_depth(tiles, keep, path)
    if crop:
        start = (tile - crop) // 2
        tiles = tiles[:, start : start + crop, start : start + crop]
    return np.ascontiguousarray(tiles), keep


def read_page(path: Path, page: int, tile: int, grid: int) -> np.ndarray:
    """Page `page` of a TIFF as an array, checked: it exists, is (tile·grid)², is grayscale."""
    side = tile * grid
    try:
        with Image.open(path) as im:
            pages = getattr(im, "n_frames", 1)
            if page >= pages:
                raise DataError(
                    f"{path}: has {pages} page(s), no page {page + 1} for channel={page + 1}"
                )
            im.seek(page)
            if im.size != (side, side):
                raise DataError(
                    f"{path}: {im.width}×{im.height} px, expected {side}×{side} "
                    f"({grid}×{grid} tiles of {tile} px); check 'tile', 'grid'"
                )
            if im.mode not in (*INT_MODES, "I", "F"):
                raise DataError(f"{path}: a {im.mode} image; expected a grayscale montage")
            return np.asarray(im)
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot be read as a TIFF montage (not an image)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a TIFF montage ({reason})") from None


def _empty(tiles: np.ndarray) -> np.ndarray:
    """Tiles whose pixels all have one value, or that are all NaN: grid padding."""
    flat = tiles.reshape(len(tiles), -1)
    if flat.dtype.kind != "f":
        return (flat == flat[:, :1]).all(axis=1)
    finite = np.isfinite(flat)
    high = np.where(finite, flat, -np.inf).max(axis=1)
    low = np.where(finite, flat, np.inf).min(axis=1)
    return ~finite.any(axis=1) | (high == low)


def _to_png_depth(tiles: np.ndarray, keep: np.ndarray, path: Path) -> np.ndarray:
    """8-bit stays 8-bit; 16-bit (or 32-bit integers within it) and floats in [0, 1] -> uint16."""
    cells = tiles[keep]
    if tiles.dtype == np.uint8:
        return tiles
    if tiles.dtype.kind in "ui":
        if cells.size and (cells.min() < 0 or cells.max() > 65535):
            raise DataError(f"{path}: integer values outside 0..65535; cannot write them as PNG")
        return tiles.astype(np.uint16)
    if cells.size and not np.isfinite(cells).all():
        raise DataError(f"{path}: NaN or infinite values inside cell tiles")
    if cells.size and (cells.min() < 0 or cells.max() > 1):
        raise DataError(
            f"{path}: float values from {cells.min():.4g} to {cells.max():.4g}, outside [0, 1]; "
            "bloodcells does not guess how to scale them"
        )
    scaled = np.round(np.nan_to_num(tiles, nan=0.0, posinf=0.0, neginf=0.0) * 65535.0)
    return np.clip(scaled, 0, 65535).astype(np.uint16)
