"""`bloodcells find-cells` and `bloodcells data crop-cells`: whole smear fields into cells."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from bloodcells.cli.base import (
    PixelSizeOpt,
    StainOpt,
    app,
    bold,
    data_app,
    err,
    images_bar,
    out,
)
from bloodcells.cli.flags import as_flags

SHOWN = 5  # unreadable images named on stderr; the manifest lists them all
CROP_SIZE = 64  # CropPolicy's default size, repeated so that `--help` imports no numpy

SizeOpt = Annotated[int, typer.Option(help="Side of each square crop in pixels (4 to 4096).")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace OUT if it is an earlier output of this command."),
]


@app.command("find-cells")
def find_cells_cmd(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Whole field images, folders (searched recursively) and glob patterns (quote "
            "them: 'smears/**/*.jpg').",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="New folder for cells.csv, crops/ and manifest.json (and overlays/, GeoJSON).",
            show_default=False,
        ),
    ],
    stain: StainOpt = "auto",
    size: SizeOpt = CROP_SIZE,
    pixel_size: PixelSizeOpt = None,
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay", help="Also OUT/overlays/<image>.png: each field with its cells boxed."
        ),
    ] = False,
    geojson: Annotated[
        bool,
        typer.Option(
            "--geojson",
            help="Also the cells as QuPath detections (File > Import objects): OUT/cells.geojson "
            "for one image; for several, one file per image, OUT/geojson/<image>.geojson.",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Every white cell in whole smear fields: boxes (cells.csv), one crop per cell at one scale
    for the whole input, a manifest; overlays and GeoJSON on request."""
    from bloodcells.cells.crops import CropPolicy
    from bloodcells.cells.outputs import FindInterrupted, find_cells_in_files
    from bloodcells.viz.overlay import draw_cells

    with as_flags(
        "stain",
        "size",
        "pixel_size",
        "overwrite",
        renamed={"choose a new OUT": "choose another -o folder"},
    ):
        policy = CropPolicy(size=size)
        with _bars() as progress:
            try:
                result = find_cells_in_files(
                    inputs,
                    output,
                    stain=stain,
                    policy=policy,
                    pixel_size=pixel_size,
                    overlay=draw_cells if overlay else None,
                    geojson=geojson,
                    overwrite=overwrite,
                    progress=progress,
                )
            except FindInterrupted as stop:
                _interrupted(stop)
                raise typer.Exit(stop.code) from None
    _print_found(result)


def _interrupted(stop) -> None:
    result = stop.result
    if result is None:
        err.print("interrupted before any image was searched: nothing was written")
        return
    err.print(
        f"interrupted: {result.searched:,} of {result.images:,} images searched; their "
        f"{result.cells:,} cells are in {result.csv} ({result.crops:,} crops cut; "
        f'{result.out / "manifest.json"} says "interrupted")'
    )


def _print_found(result) -> None:
    if result.skipped:
        kinds = ", ".join(f"{k} {n}" for k, n in result.skipped.items())
        err.print(Text("warning:", "yellow"), f"files skipped, not searched ({kinds})")
    for path, reason in result.unreadable[:SHOWN]:
        err.print(Text("unreadable:", "yellow"), _named(path, reason))
    if len(result.unreadable) > SHOWN:
        more = len(result.unreadable) - SHOWN
        err.print(f"... and {more:,} more unreadable (listed in manifest.json)")
    rate = result.images / result.seconds if result.seconds > 0 else 0.0
    out.print(
        Text.assemble(
            bold(f"{result.images:,} images, {result.cells:,} cells"),
            f" ({result.touching_border:,} touching the border); images with no cell: "
            f"{len(result.no_cell):,}, unreadable: {len(result.unreadable):,} (listed in "
            f"manifest.json); {result.seconds:.1f} s, {rate:,.1f} images/s",
        )
    )
    out.print(f"scale: {_scale(result.scale, result.scale_source)}")
    out.print(f"wrote {result.out} ({result.crops:,} crops)")


def _named(path: str, reason: str) -> str:
    """`reason`, naming `path` first when it does not already (load_field's errors do)."""
    return reason if path in reason else f"{path}: {reason}"


def _scale(scale: float | None, how: str) -> str:
    if scale is None:
        return how
    return f"{scale:.1f} px across the median cell ({how}), one scale for every image"


@contextmanager
def _bars() -> Iterator[Callable[[str, int, int], None]]:
    """progress(stage, done, total): a bar per stage, with images/s, on a terminal's stderr."""
    bars = images_bar()
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


@data_app.command("crop-cells")
def data_crop_cells(
    src: Annotated[
        Path,
        typer.Argument(
            help="Labelled whole fields: flat class folders SRC/<class>/... or the lab layout "
            "SRC/train/<class>/*, SRC/test/<class>/*. Only read, never changed.",
            show_default=False,
        ),
    ],
    dest: Annotated[
        Path,
        typer.Argument(help="New folder for the crops, in SRC's layout.", show_default=False),
    ],
    size: SizeOpt = CROP_SIZE,
    stain: StainOpt = "auto",
    pixel_size: PixelSizeOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace DEST if it is an earlier crop set.")
    ] = False,
) -> None:
    """A labelled folder of whole fields -> one crop per field (the cell nearest the centre),
    the same layout, one scale; the other cells listed in DEST/manifest.csv. From flat class
    folders DEST is flat too: `bloodcells data split DEST DEST2` then makes the lab layout."""
    from bloodcells.cells.crop_set import crop_cell_set
    from bloodcells.cells.crops import CropPolicy

    with as_flags("size", "stain", "pixel_size", "overwrite"):
        policy = CropPolicy(size=size)
        with _bars() as progress:
            result = crop_cell_set(
                src,
                dest,
                policy=policy,
                stain=stain,
                pixel_size=pixel_size,
                overwrite=overwrite,
                progress=progress,
            )
    for note in result.notes:
        err.print(Text("note:", "yellow"), note)
    _print_crop_table(result)
    out.print(
        f"{result.fields:,} fields, {result.kept:,} crops; other cells: {result.other_cells:,}, "
        f"fields with no cell: {result.no_cell:,}, unreadable: {result.unreadable:,} (all "
        f"listed in manifest.csv); {result.seconds:.1f} s"
    )
    out.print(f"scale: {_scale(result.scale, result.scale_source)}")
    out.print(f"wrote {result.dest} (how the crops were cut: crops.json)")
    quoted = shlex.quote(str(result.dest))
    if result.layout == "lab":
        out.print(f"next: bloodcells train --data {quoted}")
    else:
        out.print(
            f"next: bloodcells data split {quoted} {shlex.quote(str(result.dest) + '-split')}"
        )


def _print_crop_table(result) -> None:
    splits = list(result.counts)
    classes = sorted({c for counts in result.counts.values() for c in counts})
    table = Table(title=str(result.dest), title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split or "crops", justify="right")
    for cls in classes:
        table.add_row(cls, *(f"{result.counts[s].get(cls, 0):,}" for s in splits))
    out.print(table)
