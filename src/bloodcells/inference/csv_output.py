"""Prediction rows streamed into a CSV file, safe to interrupt.

Rows go to NAME.partial.csv, a chunk at a time, each chunk flushed as soon as it is written;
when every image is done the file is renamed to NAME.csv. Ctrl-C cuts the partial file back
to the last whole chunk and leaves it there: a valid CSV of what is done, named so that it is
never mistaken for a finished one, and never replaced by a later run unless told to.
stream_predictions writes the same rows to an open binary stream instead (stdout). With a
CellCropping, the rows are the white cells found in each image (inference.cells).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bloodcells.errors import BloodcellsError
from bloodcells.inference.cells import CellCropping, cell_chunks, cell_columns
from bloodcells.inference.count import Tally
from bloodcells.inference.predictor import CHUNK, Predictor


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during write_predictions: `path` holds the header and the first `rows` rows
    (None: they went to a stream)."""

    def __init__(self, path: Path | None, rows: int) -> None:
        super().__init__(f"{rows} rows written to {path or 'the stream'}")
        self.path, self.rows = path, rows


@dataclass
class Written:
    path: Path | None  # None: written to a stream
    rows: int
    tally: Tally


def partial_path(path: Path) -> Path:
    """Where write_predictions writes until it is done: predictions.partial.csv."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def write_predictions(
    predictor: Predictor,
    files: Sequence[str],
    path: str | Path,
    batch_size: int = CHUNK,
    workers: int | None = None,
    on_chunk=None,
    overwrite: bool = False,
    cells: CellCropping | None = None,
) -> Written:
    """Stream the rows of `files` into the CSV `path`, a chunk at a time, flushed as written;
    with `cells`, one row per white cell found in each image (inference.cells).

    The rows go to `partial_path(path)`, renamed to `path` when all are done. On Ctrl-C the
    partial file is cut back to the last whole chunk, so it is a valid CSV of what is done,
    and left in place (PredictionInterrupted says where); on any other error it is removed.
    An existing `path` or partial file (an interrupted run's rows) is replaced only with
    `overwrite`.
    """
    path = Path(path)
    partial = partial_path(path)
    if not overwrite:
        for file in (path, partial):
            if file.exists():
                raise BloodcellsError(f"{file}: exists; pass overwrite=True to replace it")
    progress = _Progress(Tally(list(predictor.classes)))
    source = _source(predictor, files, batch_size, workers, cells)
    # "xb": a partial file that appeared since the check is still not replaced
    with open(partial, "wb" if overwrite else "xb") as f:
        try:
            _write_rows(source, f, on_chunk, progress)
        except KeyboardInterrupt:
            f.truncate(progress.done)
            raise PredictionInterrupted(partial, progress.rows) from None
        except BaseException:
            f.close()
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, path)
    return Written(path, progress.rows, progress.tally)


def stream_predictions(
    predictor: Predictor,
    files: Sequence[str],
    stream: BinaryIO,
    batch_size: int = CHUNK,
    workers: int | None = None,
    on_chunk=None,
    cells: CellCropping | None = None,
) -> Written:
    """The CSV rows of `files` written to the binary `stream` (sys.stdout.buffer, say), a
    chunk at a time, flushed as written. On Ctrl-C, PredictionInterrupted (with no path)."""
    progress = _Progress(Tally(list(predictor.classes)))
    try:
        _write_rows(
            _source(predictor, files, batch_size, workers, cells), stream, on_chunk, progress
        )
    except KeyboardInterrupt:
        raise PredictionInterrupted(None, progress.rows) from None
    return Written(None, progress.rows, progress.tally)


@dataclass
class _Progress:
    tally: Tally
    rows: int = 0  # rows written
    done: int = 0  # bytes written in whole chunks


def _source(
    predictor: Predictor,
    files: Sequence[str],
    batch_size: int,
    workers: int | None,
    cells: CellCropping | None,
) -> tuple[list[str], Iterator[list[dict]]]:
    """The CSV's columns and its rows, a chunk at a time: one row per image, or per cell."""
    if cells is None:
        return predictor.columns, predictor.stream(files, batch_size, workers)
    return cell_columns(predictor), cell_chunks(predictor, files, cells)


def _write_rows(source, f, on_chunk, progress: _Progress) -> None:
    columns, chunks = source
    header = _csv_bytes([columns])
    f.write(header)
    f.flush()
    progress.done += len(header)
    with contextlib.closing(chunks):
        for chunk in chunks:
            data = _csv_bytes(_csv_row(row, columns) for row in chunk)
            f.write(data)
            f.flush()
            progress.done, progress.rows = progress.done + len(data), progress.rows + len(chunk)
            progress.tally.add(chunk)
            if on_chunk is not None:
                on_chunk(chunk)


def _csv_row(row: dict, columns: list[str]) -> list[str]:
    return [
        "" if row[c] is None else f"{row[c]:.6f}" if isinstance(row[c], float) else row[c]
        for c in columns
    ]


def _csv_bytes(rows) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes
    return text.getvalue().encode("utf-8", "surrogateescape")
