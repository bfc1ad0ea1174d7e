"""Prediction rows streamed into a CSV file, safe to interrupt.

Rows go to NAME.partial.csv, a chunk at a time, each chunk flushed as soon as it is written;
when every image is done the file is renamed to NAME.csv. Ctrl-C cuts the partial file back
to the last whole chunk and leaves it there: a valid CSV of what is done, named so that it is
never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bloodcells.count import Tally
from bloodcells.predict import CHUNK, Predictor


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during write_predictions: `path` holds the header and the first `rows` rows."""

    def __init__(self, path: Path, rows: int) -> None:
        super().__init__(f"{rows} rows written to {path}")
        self.path, self.rows = path, rows


@dataclass
class Written:
    path: Path
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
) -> Written:
    """Stream the rows of `files` into the CSV `path`, a chunk at a time, flushed as written.

    The rows go to `partial_path(path)`, renamed to `path` when all are done. On Ctrl-C the
    partial file is cut back to the last whole chunk, so it is a valid CSV of what is done,
    and left in place (PredictionInterrupted says where); on any other error it is removed.
    """
    path = Path(path)
    partial = partial_path(path)
    tally = Tally(list(predictor.classes))
    written, done = 0, 0
    with open(partial, "wb") as f:
        try:
            f.write(_csv_bytes([predictor.columns]))
            f.flush()
            done = f.tell()
            with contextlib.closing(predictor.stream(files, batch_size, workers)) as chunks:
                for chunk in chunks:
                    f.write(_csv_bytes(_csv_row(row, predictor.columns) for row in chunk))
                    f.flush()
                    done, written = f.tell(), written + len(chunk)
                    tally.add(chunk)
                    if on_chunk is not None:
                        on_chunk(chunk)
        except KeyboardInterrupt:
            f.truncate(done)
            raise PredictionInterrupted(partial, written) from None
        except BaseException:
            f.close()
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, path)
    return Written(path, written, tally)


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
