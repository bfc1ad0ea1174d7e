"""`bloodcells predict` and `bloodcells export`: a trained model put to work on new cells."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from bloodcells.cli.base import (
    BloodcellsError,
    DeviceOpt,
    PixelSizeOpt,
    RunArg,
    StainOpt,
    TtaOpt,
    app,
    bold,
    err,
    images_bar,
    out,
)
from bloodcells.cli.flags import as_flags

# The defaults of bloodcells.inference.predictor (MIN_CONFIDENCE, CHUNK), repeated here so that
# `bloodcells --help` does not import torch; tests/test_predict.py checks they agree.
MIN_CONFIDENCE = 0.5
CHUNK = 512
MAX_CHUNK = 8192
SHOW_UNREADABLE = 5  # unreadable files named on stderr; the CSV lists them all
ADAPT_MAX = 10_000  # --adapt-bn estimates BatchNorm statistics on at most this many images
DEBUG_HINT = "try the other format, or --debug for the details"

ModelArg = Annotated[
    Path,
    typer.Argument(help="A run folder, or a .onnx / .pt file made by bloodcells export."),
]
InputArg = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders (searched recursively) and glob patterns (quote them: "
        "'cells/**/*.png')."
    ),
]


@app.command("predict")
def predict_cmd(
    model: ModelArg,
    inputs: InputArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="CSV file, or a folder for predictions.csv (made if it has no suffix); the "
            "count goes next to it as NAME.count.json. '-': the CSV to stdout, the rest to "
            "stderr.",
        ),
    ] = Path("predictions.csv"),
    min_confidence: Annotated[
        float,
        typer.Option(
            help="Rows whose top probability is below this are 'unsure' (still counted); 0 to 1.",
        ),
    ] = MIN_CONFIDENCE,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_CHUNK, help="Images decoded and predicted at a time.")
    ] = CHUNK,
    device: DeviceOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the CSV and count if they exist.")
    ] = False,
    tta: TtaOpt = False,
    adapt_bn: Annotated[
        bool,
        typer.Option(
            "--adapt-bn",
            help=f"Re-estimate BatchNorm statistics on (up to {ADAPT_MAX:,} of) the input "
            "images first; the run is not changed.",
        ),
    ] = False,
    find_cells: Annotated[
        bool,
        typer.Option(
            "--find-cells",
            help="The inputs are whole smear fields: find every white cell, cut it as the "
            "run's training crops were cut, one row per cell; per-field counts in "
            "NAME.images.csv.",
        ),
    ] = False,
    stain: StainOpt = "auto",
    pixel_size: PixelSizeOpt = None,
    geojson: Annotated[
        bool,
        typer.Option(
            "--geojson",
            help="With --find-cells: NAME.geojson/, one file per field of its cells as "
            "classified detections, for QuPath (File > Import objects).",
        ),
    ] = False,
) -> None:
    """Classify new, unlabelled cells: a CSV row per image and the differential count."""
    from bloodcells.data.inputs import find_images, read_images
    from bloodcells.inference.csv_output import (
        PredictionInterrupted,
        partial_path,
        stream_predictions,
        write_predictions,
    )
    from bloodcells.inference.predictor import Predictor, check_min_confidence
    from bloodcells.utils.files import output_file, write_atomic

    with as_flags("min_confidence"):
        check_min_confidence(min_confidence)
    if find_cells and adapt_bn:
        raise BloodcellsError("--adapt-bn does not go with --find-cells yet; drop one")
    if geojson and (not find_cells or str(output) == "-"):
        raise BloodcellsError("--geojson needs --find-cells and an -o file (not -)")
    to_stdout = str(output) == "-"
    say = err if to_stdout else out  # with -o -, stdout is the CSV's alone
    csv_file = count_file = images_file = geojson_dir = None
    if not to_stdout:
        if not output.suffix and not output.exists():
            output = output / "predictions.csv"  # a folder to be made
        csv_file = output_file(output, "predictions.csv", (".csv",))
        count_file = csv_file.with_name(f"{csv_file.stem}.count.json")
        images_file = csv_file.with_name(f"{csv_file.stem}.images.csv") if find_cells else None
        geojson_dir = csv_file.with_name(f"{csv_file.stem}.geojson") if geojson else None
        if not overwrite:
            for file in (csv_file, count_file, images_file, geojson_dir):
                if file is None:
                    continue
                if file.exists():
                    raise BloodcellsError(f"{file}: exists; pass --overwrite to replace it")
            if partial_path(csv_file).exists():
                raise BloodcellsError(
                    f"{partial_path(csv_file)}: the rows of an interrupted predict; move it "
                    "away to keep them, or pass --overwrite to replace it"
                )
    with as_flags("device"):
        predictor = Predictor.from_path(model, device, min_confidence, tta=tta)
    for note in predictor.notes:
        err.print(Text("note:", "yellow"), note)
    found = find_images(inputs)
    if found.skipped:
        err.print(Text("warning:", "yellow"), found.skipped_summary())
    if adapt_bn:
        with as_flags(renamed={"adapt_batchnorm": "--adapt-bn"}):
            predictor.adapt_batchnorm(read_images(found.files[:ADAPT_MAX], predictor.transform))
    cells = None
    if find_cells:
        from bloodcells.inference.cells import CELL_KEY, CellCropping

        with as_flags("stain", "pixel_size"):
            cells = CellCropping.of(predictor, stain, pixel_size)
    where = "stdout" if to_stdout else csv_file
    what = "finding the cells of" if find_cells else "predicting"
    say.print(f"{what} {len(found):,} images with {model} ({predictor.kind}) → {where}")
    if csv_file is not None:
        csv_file.parent.mkdir(parents=True, exist_ok=True)
    unreadable: list[str] = []
    start = time.perf_counter()
    with _progress(len(found)) as advance:
        kept: list[dict] = []  # with --find-cells, what the per-field counts need

        def on_chunk(rows: list[dict]) -> None:
            bad = [r.get("path") or r.get("image") for r in rows if r["status"] == "unreadable"]
            unreadable.extend(bad)
            if cells is not None:
                keys = ("image", "status", "predicted", "probability", CELL_KEY)
                kept.extend({k: r[k] for k in keys if k in r} for r in rows)
            advance(1 if cells is not None else len(rows))

        try:
            if csv_file is None:
                sys.stdout.flush()  # anything already in the text layer goes first
                written = stream_predictions(
                    predictor, found.files, sys.stdout.buffer, batch_size, None, on_chunk, cells
                )
            else:
                written = write_predictions(
                    predictor, found.files, csv_file, batch_size, None, on_chunk, overwrite, cells
                )
        except BrokenPipeError:
            _stdout_gone()
            raise typer.Exit(141) from None  # as shell tools end when `head` has enough
        except PredictionInterrupted as stop:
            rows = "went to stdout" if stop.path is None else f"are in {stop.path}"
            err.print(
                f"interrupted: {stop.rows:,} of {len(found):,} images done; their rows {rows} "
                "(no count was written)"
            )
            raise typer.Exit(130) from None
    seconds = time.perf_counter() - start
    for path in unreadable[:SHOW_UNREADABLE]:
        err.print(Text("unreadable:", "yellow"), path)
    if len(unreadable) > SHOW_UNREADABLE:
        err.print(f"... and {len(unreadable) - SHOW_UNREADABLE} more unreadable (see the CSV)")
    count = predictor.count(written.tally)
    if count_file is not None:
        write_atomic(count_file, count.to_json())
    if images_file is not None:
        from bloodcells.inference.cells import image_counts_csv

        write_atomic(images_file, image_counts_csv(kept, predictor.classes))
    if geojson_dir is not None:
        from bloodcells.inference.cells import write_geojson

        write_geojson(geojson_dir, kept, overwrite)
    _print_count(count, predictor, say)
    if cells is not None:
        fields = len({r["image"] for r in kept})
        say.print(f"{written.rows:,} cells in {len(found):,} fields ({fields:,} with cells)")
    rate = len(found) / seconds if seconds > 0 else 0.0
    say.print(f"{len(found):,} images in {seconds:.1f} s ({rate:,.0f} images/s)")
    if written.path is not None:
        for file in (written.path, count_file, images_file, geojson_dir):
            if file is not None:
                say.print(f"wrote {file}")


def _stdout_gone() -> None:
    """Point stdout at /dev/null: the reader has gone, and Python's final flush of what is
    still buffered would report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test runner's stream)


def _progress(total: int):
    """A context giving advance(n): a progress bar with images/s on stderr in a terminal."""
    from contextlib import contextmanager

    @contextmanager
    def bar():
        progress = images_bar()
        with progress:
            task = progress.add_task("predicting", total=total)
            yield lambda n: progress.advance(task, n)

    return bar()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{low:.1f}–{high:.1f}"


def one_line_name(name: str) -> str:
    """A class name on one line: tab and newline shown as escapes too (the console shows the
    other control characters so)."""
    return name.translate({9: "\\x09", 10: "\\x0a"})


def _print_count(count, predictor, console) -> None:
    table = Table(title="differential count", title_justify="left")
    columns = ("class", "count", "%", "95% CI", "unsure", "adjusted %", "95% CI (bootstrap)")
    for col in columns:
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in count.classes:
        table.add_row(
            one_line_name(c.name),
            f"{c.count:,}",
            _percent(c.percent),
            _interval(c.low, c.high),
            f"{c.unsure:,}",
            _percent(c.adjusted),
            _interval(c.adjusted_low, c.adjusted_high),
        )
    console.print(table)
    s = count.statuses
    readable = count.images - s["unreadable"]
    flagged = count.unlike_training_fraction
    share = f" ({100 * flagged:.1f}% of readable images)" if flagged is not None else ""
    console.print(
        Text.assemble(
            bold(f"{count.counted:,} of {count.images:,} images counted"),
            f": ok {s['ok']:,}, unsure {s['unsure']:,} (top probability below "
            f"{predictor.min_confidence:g}). Not counted: unreadable {s['unreadable']:,}, "
            f"unlike-training {s['unlike-training']:,}{share}.",
        )
    )
    if readable and flagged is not None and flagged > 0.2:
        dev = predictor.dev_flagged_share()
        dev_share = "" if dev is None else f" ({100 * dev:.1f}% of its dev images are)"
        console.print(
            Text(
                f"many images are unlike the training data{dev_share}: another stain, "
                "microscope or magnification? the counts may not be trustworthy",
                "yellow",
            )
        )
    console.print(f"adjusted: {count.adjusted_note}")


@app.command("export")
def export_cmd(
    run: RunArg,
    format: Annotated[
        str, typer.Option("--format", "-f", help="onnx (for onnxruntime) or torchscript (.pt).")
    ] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The model file, or a folder for it (default: the run folder)."
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(help="Compare the file with the run's model on its dev images."),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the file and its card if they exist.")
    ] = False,
) -> None:
    """One portable model file (weights, classes, transform, dev results) + its card,
    NAME.card.md."""
    from bloodcells.inference.export import check_format, export_run
    from bloodcells.runs.folder import load_run

    check_format(format)
    with as_flags("overwrite", renamed={"try the other format": DEBUG_HINT}):
        result = export_run(load_run(run), format, output, check, overwrite)
    for note in result.notes:
        err.print(Text("note:", "yellow"), note)
    out.print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB)")
    if result.check is not None:
        out.print(f"check passed: {result.check}")
    elif check:
        err.print(Text("warning:", "yellow"), result.note)
    else:
        out.print("check skipped (--no-check)")
    out.print(f"wrote {result.card}")
