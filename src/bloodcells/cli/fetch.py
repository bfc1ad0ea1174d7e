"""`bloodcells data download` and `data import-bbbc045`: bring data in from outside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bloodcells.cli.base import data_app, out
from bloodcells.errors import DataError


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="What to download: lab (the lab's bloodcells_small).")],
    dest: Annotated[
        Path, typer.Option("--dest", help="Folder to put bloodcells_small in.")
    ] = Path("data"),
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
) -> None:
    """Download the lab's own data set and unpack DEST/bloodcells_small."""
    from bloodcells.cli.data import data_info
    from bloodcells.data import download

    if name not in download.DATASETS:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise DataError(f"unknown data set {shown}; available: {', '.join(download.DATASETS)}")
    got = download.download_lab(
        dest, url or download.LAB_URL, sha256, overwrite, progress=True, say=out.print
    )
    if got.pinned:
        out.print(f"sha256 {got.sha256} (as expected)")
    else:
        out.print(
            f"sha256 {got.sha256} (not pinned yet: recorded in {got.root / download.RECORD}; "
            f"pass --sha256 {got.sha256} to accept only this file next time)"
        )
    out.print(f"unpacked {got.files} files ({got.bytes / 1e6:.1f} MB) into {got.root}")
    data_info(got.root)
    out.print(f"next: bloodcells lab --data {got.root}")
