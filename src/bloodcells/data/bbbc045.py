"""BBBC045 montages -> the lab's layout: tiles cut, empty grid positions skipped, donors held out.

BBBC045 (Broad Bioimage Benchmark Collection) ships its cells as TIFF montages:

    Stained_Montages/<donor>/<cell type>/<batch>/ch<C>_<N>.tif

one file per imaging-flow-cytometer channel C and montage N, each a GRID×GRID grid of TILE×TILE
tiles (30×30 tiles of 55×55 px, 1650×1650 px). Grid positions after a batch's last cell are
padding: a constant value (zero). A TIFF whose name does not say its channel is read as a
montage with one page per channel, and page C is kept.

What this module decides, so that nothing is silent:
- **Channel**: `channel` (default 5) picks the files `ch5_<N>.tif`. Check with `data preview`
  that these are brightfield images on your copy.
- **Empty tiles**: a tile whose pixels all have one value (or are all NaN) is padding and
  skipped. No contrast or std threshold: real brightfield tiles can have very low contrast.
- **Bit depth**: 8-bit montages give 8-bit PNGs, 16-bit give 16-bit PNGs, float montages with
  values in [0, 1] (what bioformats writes) give 16-bit PNGs of round(value × 65535). Float
  values outside [0, 1] or NaN inside a cell tile are an error, not a guess.
- **Classes**: cell-type folders map to the lab's class names B, T, eosinophil, monocyte,
  neutrophil (case, plurals and a "cells" suffix are ignored); any other folder is an error.
- **Donors**: a donor folder named NAME_YYYY (e.g. CRF101_2014 and CRF101_2015) is the donor
  NAME sampled in year YYYY; its folders always land on the same side of the split.
- **Split**: whole donors go to test, either the ones named or, for a fraction, the donor
  subset whose per-class test share is closest to the fraction (every class on both sides);
  the seed picks among the subsets within SLACK of the best.
Every written PNG is listed in DEST/manifest.csv with its donor, class, montage and tile.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bloodcells.data.safezip import staged
from bloodcells.errors import DataError
from bloodcells.files import check_output_folder, write_atomic

CLASSES = ("B", "T", "eosinophil", "monocyte", "neutrophil")
ALIASES = {c.lower(): c for c in CLASSES}
MONTAGE_ROOT = "Stained_Montages"
BBBC_LAYOUT = "expected SRC/Stained_Montages/<donor>/<cell type>/<batch>/ch<C>_<N>.tif"
MONTAGE_NAME = re.compile(r"^ch(\d+)_(\d+)\.tiff?$", re.IGNORECASE)
TIFF_SUFFIXES = (".tif", ".tiff")
YEAR_SUFFIX = re.compile(r"^(.+?)_(?:19|20)\d\d$")
MANIFEST = "manifest.csv"
SETTINGS = "import.json"
MANIFEST_COLUMNS = (
    "file", "class", "split", "donor", "donor_folder", "cell_type_folder", "batch",
    "montage", "page", "tile_index", "row", "col",
)  # fmt: skip
MAX_MONTAGES = 20_000  # BBBC045 has a few hundred per channel
MAX_DONORS = 1_000
MAX_SIDE = 8_192  # pixels a montage side may have (tile × grid)
EXHAUSTIVE_DONORS = 16  # up to 2**16 donor subsets are all scored; beyond, a seeded sample
SLACK = 0.02  # the seed picks among splits whose score is within this of the best
INT_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16}


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
            ("--tile", self.tile, 4, 1024),
            ("--grid", self.grid, 1, 100),
            ("--channel", self.channel, 1, 99),
            ("--seed", self.seed, 0, 2**32 - 1),
        ):
            if isinstance(value, bool) or not low <= value <= high:
                raise DataError(f"{name} must be between {low} and {high}, not {value}")
        if self.tile * self.grid > MAX_SIDE:
            raise DataError(
                f"--tile × --grid is {self.tile * self.grid} pixels a side; at most {MAX_SIDE}"
            )
        if self.crop and not 4 <= self.crop <= self.tile:
            raise DataError(f"--crop must be 0 (whole tile) or 4 to {self.tile}, not {self.crop}")
        if self.test_donors is not None and self.test_fraction is not None:
            raise DataError("give --test-donors or --test-fraction, not both")
        if self.test_fraction is not None and not 0.01 <= self.test_fraction <= 0.99:
            raise DataError(
                f"--test-fraction must be between 0.01 and 0.99, not {self.test_fraction}"
            )
        if self.test_donors is not None:
            if not self.test_donors or len(self.test_donors) > MAX_DONORS:
                raise DataError(f"--test-donors must name 1 to {MAX_DONORS} donors")
            if len(set(self.test_donors)) != len(self.test_donors):
                raise DataError("--test-donors names a donor twice")

    @property
    def fraction(self) -> float:
        return 0.2 if self.test_fraction is None else self.test_fraction


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


def parse_donors(text: str) -> tuple[str, ...]:
    """'A, B' -> ('A', 'B'); bounded so that a pasted file is an error, not a plan."""
    if len(text) > 4096:
        raise DataError("--test-donors is longer than 4096 characters")
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise DataError("--test-donors names no donor; give names separated by commas")
    return names


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
    merged = _merged_folders(montages)
    if config.test_donors is not None:
        test = _check_split(montages, config)
    else:  # can whole donors split every class at all? (montages stand in for cells here)
        choose_test_donors(_montage_counts(montages), config.fraction, config.seed)
        test = None
    say(
        f"found {len(montages)} montages of channel {config.channel} from {len(donors)} donors "
        f"under {root}"
    )
    with staged(dest, config.overwrite) as staging:
        rows, empty = _cut_all(montages, staging / ".cut", config, progress)
        cells = _cell_counts(rows)
        chosen = test is None
        if test is None:
            test = choose_test_donors(cells, config.fraction, config.seed)
        counts = _check_counts(cells, test)
        _place(rows, staging, test)
        _write_manifest(staging, rows)
        settings = _settings(root, config, test, merged, counts, len(montages), empty)
        write_atomic(staging / SETTINGS, json.dumps(settings, indent=2) + "\n")
    train = [d for d in donors if d not in test]
    return Imported(
        dest, root, len(montages), len(rows), empty, sorted(test), train, counts, merged, chosen
    )


def find_montage_root(src: Path) -> Path:
    """SRC/Stained_Montages, SRC/*/Stained_Montages (an unzipped folder) or SRC itself."""
    if not src.exists():
        raise DataError(f"{src}: no such folder; {BBBC_LAYOUT}")
    if not src.is_dir():
        hint = "; unzip it first" if src.suffix.lower() == ".zip" else ""
        raise DataError(f"{src}: not a folder{hint}; {BBBC_LAYOUT}")
    if (src / MONTAGE_ROOT).is_dir():
        return src / MONTAGE_ROOT
    nested = [d / MONTAGE_ROOT for d in _subdirs(src) if (d / MONTAGE_ROOT).is_dir()]
    return nested[0] if len(nested) == 1 else src


def scan(root: Path, channel: int) -> list[Montage]:
    """Every montage of `channel` under root/<donor>/<cell type>/[<batch>/], sorted."""
    montages: list[Montage] = []
    channels_seen: Counter[int] = Counter()
    for donor_dir in _subdirs(root):
        for type_dir in _subdirs(donor_dir):
            cls = class_name(type_dir)
            batches = [(type_dir, ""), *((b, b.name) for b in _subdirs(type_dir))]
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
        found = f"; found channels {others}, pick one with --channel" if others else ""
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


def _merged_folders(montages: list[Montage]) -> dict[str, list[str]]:
    folders = defaultdict(set)
    for m in montages:
        folders[m.donor].add(m.folder)
    return {d: sorted(f) for d, f in sorted(folders.items()) if len(f) > 1}


def _check_dest(dest: Path, root: Path, overwrite: bool) -> None:
    check_output_folder(dest)
    src, out = root.resolve(), dest.resolve()
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        raise DataError(f"{dest}: DEST must be outside SRC ({root}) and must not contain it")
    if not dest.exists() and not dest.is_symlink():
        return
    if not overwrite:
        raise DataError(f"{dest}: exists; choose a new folder, or pass --overwrite to replace it")
    if dest.is_symlink() or not (dest / MANIFEST).is_file() or not (dest / SETTINGS).is_file():
        raise DataError(
            f"{dest}: --overwrite replaces only a folder made by import-bbbc045 "
            f"(with {MANIFEST} and {SETTINGS}); remove this one yourself"
        )


def _check_split(montages: list[Montage], config: ImportConfig) -> set[str]:
    """The named test donors, checked against the folders: they exist, every class is tested."""
    donors = sorted({m.donor for m in montages})
    by_folder = {m.folder: m.donor for m in montages}
    test = set()
    for name in config.test_donors or ():
        if name not in donors and name not in by_folder:
            shown = ", ".join(donors[:20]) + (", ..." if len(donors) > 20 else "")
            raise DataError(f"--test-donors: no donor {name!r} with montages; donors: {shown}")
        test.add(by_folder.get(name, name))
    if len(test) == len(donors):
        raise DataError("--test-donors names every donor; leave at least one for training")
    have = defaultdict(set)
    for m in montages:
        have[m.cls].add(m.donor)
    for cls, holders in sorted(have.items()):
        if not holders & test:
            raise DataError(
                f"class {cls} would have no test images: no test donor has {cls} montages; "
                f"choose among {', '.join(sorted(holders))}"
            )
        if not holders - test:
            raise DataError(
                f"class {cls} would have no training images: only the test donors have it"
            )
    return test


def _cut_all(
    montages: list[Montage], cut_dir: Path, config: ImportConfig, progress: bool
) -> tuple[list[dict], int]:
    """Write every non-empty tile as a PNG under cut_dir/<class>/; manifest rows and #empty."""
    rows: list[dict] = []
    empty = 0
    with _progress_bar(len(montages), progress) as step:
        for number, montage in enumerate(montages, 1):
            folder = cut_dir / montage.cls
            folder.mkdir(parents=True, exist_ok=True)
            tiles, keep = cut_montage(montage.path, montage.page, config)
            empty += int((~keep).sum())
            stem = re.sub(r"[^A-Za-z0-9.-]+", "-", montage.donor)[:40].strip(".-") or "donor"
            cells = [(int(i), f"{stem}-m{number:04d}-t{i:04d}.png") for i in np.flatnonzero(keep)]
            for index, name in cells:
                Image.fromarray(tiles[index]).save(folder / name, format="PNG")
            rows.extend(_row(montage, name, index, config.grid) for index, name in cells)
            step()
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


def cut_montage(path: Path, page: int, config: ImportConfig) -> tuple[np.ndarray, np.ndarray]:
    """The tiles of one montage (N×T×T, uint8 or uint16) and which of them hold a cell."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's remarks on odd TIFF tags: an error says enough
        pixels = read_page(path, page, config.tile * config.grid, config)
    t, g = config.tile, config.grid
    tiles = pixels.reshape(g, t, g, t).swapaxes(1, 2).reshape(g * g, t, t)
    keep = ~_empty(tiles)
    tiles = _to_png_depth(tiles, keep, path)
    if config.crop:
        start = (t - config.crop) // 2
        tiles = tiles[:, start : start + config.crop, start : start + config.crop]
    return np.ascontiguousarray(tiles), keep


def read_page(path: Path, page: int, side: int, config: ImportConfig) -> np.ndarray:
    """Page `page` of a TIFF as an array, checked: it exists, is side×side, is grayscale."""
    try:
        with Image.open(path) as im:
            pages = getattr(im, "n_frames", 1)
            if page >= pages:
                raise DataError(
                    f"{path}: has {pages} page(s), no page {page + 1} for --channel {page + 1}"
                )
            im.seek(page)
            if im.size != (side, side):
                raise DataError(
                    f"{path}: {im.width}×{im.height} px, expected {side}×{side} "
                    f"({config.grid}×{config.grid} tiles of {config.tile} px); check --tile, --grid"
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


def _montage_counts(montages: list[Montage]) -> dict[str, Counter]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for m in montages:
        counts[m.donor][m.cls] += 1
    return dict(counts)


def _cell_counts(rows: list[dict]) -> dict[str, Counter]:
    cells: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        cells[r["donor"]][r["class"]] += 1
    return dict(cells)


def choose_test_donors(cells: dict[str, Counter], fraction: float, seed: int = 0) -> set[str]:
    """Whole donors for the test split: every class on both sides, each class's test share as
    close to `fraction` as the donors allow (mean absolute difference over classes); the seed
    picks among the subsets within SLACK of the best."""
    donors = sorted(cells)
    classes = sorted({c for counter in cells.values() for c in counter})
    counts = np.array([[cells[d][c] for c in classes] for d in donors], dtype=np.float64)
    totals = counts.sum(axis=0)
    n = len(donors)
    if n < 2:
        raise DataError(f"only one donor ({donors[0]}) has cells; holding out donors needs two")
    rng = np.random.default_rng(seed)
    if n <= EXHAUSTIVE_DONORS:
        masks = (np.arange(1, 2**n - 1)[:, None] >> np.arange(n)) & 1
    else:
        masks = np.unique(rng.random((1 << EXHAUSTIVE_DONORS, n)) < fraction, axis=0)
    masks = masks.astype(bool)
    test = masks.astype(np.float64) @ counts
    valid = (test > 0).all(axis=1) & (test < totals).all(axis=1)
    if not valid.any():
        single = [c for c, k in zip(classes, (counts > 0).sum(axis=0), strict=True) if k < 2]
        why = f"class {single[0]} has cells from one donor only" if single else "no subset fits"
        raise DataError(
            f"no choice of whole donors puts every class in both train and test ({why}); "
            "name the test donors with --test-donors, or import more donors"
        )
    score = np.abs(test / totals - fraction).mean(axis=1)
    best = score[valid].min()
    near = np.flatnonzero(valid & (score <= best + SLACK))
    pick = masks[rng.choice(near)]
    return {d for d, chosen in zip(donors, pick, strict=True) if chosen}


def _check_counts(cells: dict[str, Counter], test: set[str]) -> dict[str, dict[str, int]]:
    """Cells per split and class; every class must have cells on both sides."""
    counts = {"train": Counter(), "test": Counter()}
    for donor, counter in cells.items():
        counts["test" if donor in test else "train"].update(counter)
    for cls in sorted(set(counts["train"]) | set(counts["test"])):
        for split in ("test", "train"):
            if not counts[split][cls]:
                which = ", ".join(sorted(test)) if split == "test" else "the other donors"
                raise DataError(
                    f"class {cls} would have no {split} images: its montages from {which} hold "
                    f"no cells (only empty tiles); choose other --test-donors"
                )
    return {s: dict(sorted(c.items())) for s, c in counts.items()}


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


def _write_manifest(staging: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    write_atomic(staging / MANIFEST, text.getvalue())


def _settings(root, config, test, merged, counts, montages, empty) -> dict:
    from bloodcells.version import __version__

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


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )


def _progress_bar(total: int, enabled: bool):
    """A context giving `advance()`: a bar on stderr while montages are cut."""
    if not enabled or not Console(stderr=True).is_terminal:  # in a log or a pipe, no bar
        return nullcontext(lambda: None)
    return _Bar(total)


class _Bar:
    def __init__(self, total: int) -> None:
        columns = (TextColumn("cutting montages"), BarColumn(), MofNCompleteColumn())
        self._progress = Progress(*columns, console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task("", total=total)

    def __enter__(self) -> Callable[[], None]:
        self._progress.start()
        return lambda: self._progress.advance(self._task)

    def __exit__(self, *exc) -> None:
        self._progress.stop()
