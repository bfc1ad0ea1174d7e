"""`bloodcells data download` and `data import-bbbc045`: bring data in from outside."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bloodcells.cli.base import bold, data_app, out
from bloodcells.cli.flags import as_flags
from bloodcells.errors import DataError

DATA = Path("data")


@data_app.command("download")
def data_download(
    name: Annotated[
        str, typer.Argument(help="What to download: lab (the lab's bloodcells_small).")
    ],
    dest: Annotated[Path, typer.Option(help="Folder to put bloodcells_small in.")] = DATA,
    url: Annotated[
        str | None,
        typer.Option(help="Fetch from here instead: a mirror URL, a file:// URL or a local zip."),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Refuse the zip unless its sha256 is this.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace DEST/bloodcells_small if it exists.")
    ] = False,
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size", help="Stop a download that grows past this: 500MB, 2GB, or bytes."
        ),
    ] = "2GB",
) -> None:
    """Download the lab's own data set and unpack DEST/bloodcells_small."""
    from bloodcells.cli.data import data_info
    from bloodcells.data.sources import download

    if name not in download.DATASETS:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise DataError(f"unknown data set {shown}; available: {', '.join(download.DATASETS)}")
    limit = parse_size(max_size)
    with as_flags("url", "sha256", "overwrite", "max_size"):
        got = download.download_lab(
            dest,
            url or download.LAB_URL,
            sha256,
            overwrite,
            progress=True,
            say=out.print,
            max_size=limit,
        )
    if got.pinned:
        out.print(f"sha256 {got.sha256} (as expected)")
    else:
        out.print(
            f"sha256 {got.sha256} (not pinned yet: recorded in {got.root / download.RECORD}; "
            f"pass --sha256 {got.sha256} to accept only this file next time)"
        )
    out.print(f"unpacked {got.files} files ({_size(got.bytes)}) into {got.root}")
    data_info(got.root)
    out.print(f"next: bloodcells lab --data {got.root}")


@data_app.command("import-bbbc045")
def data_import_bbbc045(
    src: Annotated[Path, typer.Argument(help="BBBC045 folder (holding Stained_Montages).")],
    dest: Annotated[Path, typer.Argument(help="New folder for the lab layout (must not exist).")],
    test_donors: Annotated[
        str | None,
        typer.Option("--test-donors", help="Donors to hold out for test, e.g. CRF022,CRF034."),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(help="Hold out whole donors holding about this share of each class [0.2]."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Picks among equally good donor splits.")] = 0,
    tile: Annotated[int, typer.Option(help="Tile size in pixels.")] = 55,
    grid: Annotated[int, typer.Option(help="Tiles per montage row and column.")] = 30,
    channel: Annotated[
        int,
        typer.Option(
            help="Channel to keep: files ch<C>_<N>.tif, or page C of other TIFFs. "
            "Check with data preview that it is brightfield."
        ),
    ] = 5,
    crop: Annotated[int, typer.Option(help="Keep a centred CROP×CROP of each tile (0: all).")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace DEST made by an earlier import.")
    ] = False,
) -> None:
    """Cut BBBC045's TIFF montages into DEST/train and DEST/test, holding out whole donors."""
    from bloodcells.data.sources import bbbc045
    from bloodcells.data.sources.donors import parse_donors

    options = ("test_donors", "test_fraction", "tile", "grid", "channel", "seed", "crop")
    with as_flags(*options, "overwrite"):
        donors = parse_donors(test_donors) if test_donors is not None else None
        config = bbbc045.ImportConfig(
            tile, grid, channel, donors, test_fraction, seed, crop, overwrite
        )
        got = bbbc045.import_bbbc045(src, dest, config, progress=True, say=out.print)
    out.print(
        f"cut {got.cells} cells from {got.montages} montages "
        f"({got.empty} empty grid positions skipped)"
    )
    for donor, folders in got.merged.items():
        out.print(f"donor {donor}: folders {', '.join(folders)} (one donor: kept on one side)")
    how = (
        f"chosen for --test-fraction {config.fraction:g}, seed {seed}"
        if got.chosen
        else "named with --test-donors"
    )
    out.print(f"test donors: {', '.join(got.test_donors)} ({how})")
    out.print(f"train donors: {', '.join(got.train_donors)}")
    out.print(_split_table(got))
    out.print(f"manifest: {got.root / bbbc045.MANIFEST}")
    out.print(f"next: bloodcells data preview {got.root} · bloodcells train --data {got.root}")


def _split_table(got) -> Table:
    """Cells per class and split, and the share of each class that is in test."""
    table = Table(title=str(got.root), title_justify="left")
    for column in ("class", "train", "test", "test share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    train, test = got.counts["train"], got.counts["test"]
    for cls in sorted(set(train) | set(test)):
        n, k = train.get(cls, 0), test.get(cls, 0)
        table.add_row(cls, str(n), str(k), f"{k / (n + k):.0%}")
    total_train, total_test = sum(train.values()), sum(test.values())
    share = f"{total_test / max(1, total_train + total_test):.0%}"
    table.add_row(bold("total"), bold(str(total_train)), bold(str(total_test)), bold(share))
    return table


_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_size(text: str) -> int:
    """`--max-size` as bytes: a number with an optional unit (kB, MB, GB; KiB, MiB, GiB)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?)?b?\s*", text, re.IGNORECASE)
    n = float(found[1]) * _UNITS[(found[2] or "").lower()] if found else 0
    if not 1 <= n < 10**15:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise DataError(
            f"--max-size must be a size such as 500MB or 2GB (at least 1 byte), not {shown}"
        )
    return int(n)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
