"""The manifest that `data split` and `data import-bbbc045` leave in DEST: a CSV row per image."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bloodcells.utils.files import write_atomic

MANIFEST = "manifest.csv"
# How a crop set was cut from fields (cells.crop_set writes it); data split carries it along,
# so a run trained on the split still knows how to cut new fields.
CROP_RECORD = "crops.json"


def write_manifest(folder: Path, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
    """folder/manifest.csv: a header of `columns`, then `rows` in the order given."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(folder / MANIFEST, text.getvalue())


def read_manifest(folder: str | Path) -> list[dict[str, str]]:
    """The rows of folder/manifest.csv as dicts, keyed by its header."""
    with open(Path(folder) / MANIFEST, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
