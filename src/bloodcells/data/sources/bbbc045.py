"""BBBC045 montages -> the lab's layout: tiles cut, empty grid positions skipped, donors held out.

The montages are found and cut by `montages` (the layout of BBBC045, what counts as an empty
tile, bit depths, class and donor names); the test donors are named or chosen by `donors`. What
this module decides, so that nothing is silent:
- **Channel**: `channel` (default 5) picks the files `ch5_<N>.tif`. Check with `data preview`
  that these are brightfield images on your copy.
- **Tiles**: every non-empty tile becomes a PNG (8-bit montages 8-bit, others 16-bit), centre
  cropped with `crop`.
- **Split**: whole donors go to test, either the ones named or, for a fraction, the donor
  subset whose per-class test share is closest to the fraction (every class on both sides).
Every written PNG is listed in DEST/manifest.csv with its donor, class, montage and tile, and
the settings and counts in DEST/import.json.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bloodcells.data.prepare.manifest import MANIFEST, write_manifest
from bloodcells.data.sources.donors import (
    cell_counts,
    check_counts,
    check_named_donors,
    choose_test_donors,
    montage_counts,
)
from bloodcells.data.sources.montages import (
    MAX_DONORS,
    Montage,
    cut_montage,
    find_montage_root,
    merged_folders,
    scan,
)
from bloodcells.errors import DataError
from bloodcells.utils.files import check_output_folder, staged_folder, write_json

SETTINGS = "import.json"
MANIFEST_COLUMNS = (
    "file", "class", "split", "donor", "donor_folder", "cell_type_folder", "batch",
    "montage", "page", "tile_index", "row", "col",
)  # fmt: skip
MAX_SIDE = 8_192  # pixels a montage side may have (tile × grid)


@dataclass(frozen=True)
class ImportConfig:
    """How montages are cut and split; checked when made."""

    tile: int = 55
    grid: int = 30
    channel: int = 5
    test_donors: tuple[str, ...] | None = None
    test_fraction: float | None = None
    seed: int = 0
    crop: int = 0  # 0: keep the whole tile; else a centred crop×crop
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("tile", self.tile, 4, 1024),
            ("grid", self.grid, 1, 100),
            ("channel", self.channel, 1, 99),
            ("seed", self.seed, 0, 2**32 - 1),
        ):
            if isinstance(value, bool) or not low <= value <= high:
                raise DataError(f"'{name}' must be between {low} and {high}, not {value}")
        if self.tile * self.grid > MAX_SIDE:
            raise DataError(
                f"'tile' × 'grid' is {self.tile * self.grid} pixels a side; at most {MAX_SIDE}"
            )
        if self.crop and not 4 <= self.crop <= self.tile:
            raise DataError(f"'crop' must be 0 (whole tile) or 4 to {self.tile}, not {self.crop}")
        if self.test_donors is not None and self.test_fraction is not None:
            raise DataError("give test_donors or test_fraction, not both")
        if self.test_fraction is not None and not 0.01 <= self.test_fraction <= 0.99:
            raise DataError(
                f"test_fraction must be between 0.01 and 0.99, not {self.test_fraction}"
            )
        if self.test_donors is not None:
            if not self.test_donors or len(self.test_donors) > MAX_DONORS:
                raise DataError(f"test_donors must name 1 to {MAX_DONORS} donors")
            if len(set(self.test_donors)) != len(self.test_donors):
                raise DataError("test_donors names a donor twice")

    @property
    def fraction(self) -> float:
        return 0.2 if self.test_fraction is None else self.test_fraction


@dataclass
class Imported:
    """What `import_bbbc045` wrote."""

    root: Path
    source: Path
    montages: int
    cells: int
    empty: int
    test_donors: list[str]
    train_donors: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> cells
    merged: dict[str, list[str]] = field(default_factory=dict)  # donor -> its year folders
    chosen: bool = False  # the test donors were chosen for a fraction


def import_bbbc045(
    src: str | Path,
    dest: str | Path,
    config: ImportConfig = ImportConfig(),
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Imported:
    """Cut BBBC045 montages under SRC into DEST/train/<class>/ and DEST/test/<class>/ PNGs.

    Everything that can be checked from the folders (layout, names, donors, the split's
    feasibility, DEST) is checked before anything is written. DEST appears complete or not
    at all: the tiles are written into a hidden sibling folder that is renamed at the end.
    """
    root = find_montage_root(Path(src).expanduser())
    dest = Path(dest).expanduser()
    _check_dest(dest, root, config.overwrite)
    montages = scan(root, config.channel)
    donors = sorted({m.donor for m in montages})
    merged = merged_folders(montages)
    if config.test_donors is not None:
        test = check_named_donors(montages, config.test_donors)
    else:  # can whole donors split every class at all? (montages stand in for cells here)
        choose_test_donors(montage_counts(montages), config.fraction, config.seed)
        test = None
    say(
        f"found {len(montages)} montages of channel {config.channel} from {len(donors)} donors "
        f"under {root}"
    )
    with staged_folder(dest, config.overwrite) as staging:
        rows, empty = _cut_all(montages, staging / ".cut", config, progress)
        cells = cell_counts(rows)
        chosen = test is None
        if test is None:
            test = choose_test_donors(cells, config.fraction, config.seed)
        counts = check_counts(cells, test)
        _place(rows, staging, test)
        write_manifest(staging, MANIFEST_COLUMNS, sorted(rows, key=lambda r: r["file"]))
        settings = _settings(root, config, test, merged, counts, len(montages), empty)
        write_json(staging / SETTINGS, settings)
    train = [d for d in donors if d not in test]
    return Imported(
        dest, root, len(montages), len(rows), empty, sorted(test), train, counts, merged, chosen
    )


def _check_dest(dest: Path, root: Path, overwrite: bool) -> None:
    check_output_folder(dest)
    src, out = root.resolve(), dest.resolve()
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        raise DataError(f"{dest}: DEST must be outside SRC ({root}) and must not contain it")
    if not dest.exists() and not dest.is_symlink():
        return
    if not overwrite:
        raise DataError(
            f"{dest}: exists; choose a new folder, or pass overwrite=True to replace it"
        )
    if dest.is_symlink() or not (dest / MANIFEST).is_file() or not (dest / SETTINGS).is_file():
        raise DataError(
            f"{dest}: overwrite=True replaces only a folder made by an earlier import "
            f"(with {MANIFEST} and {SETTINGS}); remove this one yourself"
        )


def _cut_all(
    montages: list[Montage], cut_dir: Path, config: ImportConfig, progress: bool
) -> tuple[list[dict], int]:
    """Write every non-empty tile as a PNG under cut_dir/<class>/; manifest rows and #empty."""
    rows: list[dict] = []
    empty = 0
    with _progress_bar(progress) as bar:
        for number, montage in enumerate(bar.track(montages), 1):
            folder = cut_dir / montage.cls
            folder.mkdir(parents=True, exist_ok=True)
            tiles, keep = cut_montage(
                montage.path, montage.page, config.tile, config.grid, config.crop
            )
            empty += int((~keep).sum())
            stem = re.sub(r"[^A-Za-z0-9.-]+", "-", montage.donor)[:40].strip(".-") or "donor"
            cells = [(int(i), f"{stem}-m{number:04d}-t{i:04d}.png") for i in np.flatnonzero(keep)]
            for index, name in cells:
                Image.fromarray(tiles[index]).save(folder / name, format="PNG")
            rows.extend(_row(montage, name, index, config.grid) for index, name in cells)
    return rows, empty


def _row(montage: Montage, name: str, index: int, grid: int) -> dict:
    row, col = divmod(index, grid)
    return {
        "file": name,
        "split": "",
        "class": montage.cls,
        "donor": montage.donor,
        "donor_folder": montage.folder,
        "cell_type_folder": montage.cell_type,
        "batch": montage.batch,
        "montage": montage.relative,
        "page": montage.page + 1,
        "tile_index": index,
        "row": row,
        "col": col,
    }


def _place(rows: list[dict], staging: Path, test: set[str]) -> None:
    """Move each cut tile into staging/<split>/<class>/ and fill in its manifest row."""
    for split in ("train", "test"):
        for cls in {r["class"] for r in rows}:
            (staging / split / cls).mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["split"] = "test" if r["donor"] in test else "train"
        relative = f"{r['split']}/{r['class']}/{r['file']}"
        (staging / ".cut" / r["class"] / r["file"]).rename(staging / relative)
        r["file"] = relative
    shutil.rmtree(staging / ".cut")


def _settings(root, config, test, merged, counts, montages, empty) -> dict:
    from bloodcells._version import __version__

    return {
        "made_by": f"bloodcells {__version__} data import-bbbc045",
        "source": str(root.resolve()),
        "channel": config.channel,
        "tile": config.tile,
        "grid": config.grid,
        "crop": config.crop,
        "seed": config.seed,
        "test_fraction": None if config.test_donors is not None else config.fraction,
        "test_donors": sorted(test),
        "donors_merged": merged,
        "montages": montages,
        "empty_tiles_skipped": empty,
        "empty_rule": "a tile whose pixels all have one value (or are all NaN) is padding",
        "counts": counts,
    }


def _progress_bar(enabled: bool) -> Progress:
    """A bar on stderr while montages are cut; none in a log or a pipe."""
    console = Console(stderr=True)
    columns = (TextColumn("cutting montages"), BarColumn(), MofNCompleteColumn())
    shown = enabled and console.is_terminal
    return Progress(*columns, console=console, transient=True, disable=not shown)
