"""`bloodcells report`: one self-contained HTML page from any run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bloodcells.cli.base import BloodcellsError, DeviceOpt, app, err, out


@app.command("report")
def report_cmd(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (bloodcells train), a lab's folder (bloodcells lab), or folders "
            "holding run folders.",
            metavar="RUN",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="HTML file (.html), or a folder for report.html."),
    ] = Path("report.html"),
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Make the figures the runs lack (predictions, top losses, Grad-CAM, sample "
            "images) from the advanced CNN's run, else the last run: loads its model and data.",
        ),
    ] = False,
    device: DeviceOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the HTML file if it exists.")
    ] = False,
) -> None:
    """The HTML report of runs: comparison, loss curves, confusion matrices, and what was run."""
    from bloodcells.report.render import write_report
    from bloodcells.utils.devices import check_device
    from bloodcells.utils.files import output_file

    target = output_file(output, "report.html", suffixes=(".html", ".htm"))
    if target.exists() and not overwrite:
        raise BloodcellsError(f"{target}: exists; pass --overwrite to replace it")
    check_device(device)
    shown, extras = write_report(runs, target, explain=explain, device=device)
    for folder, why in extras.left_out:
        err.print(f"left out {folder}: {why}")
    left = f"; {len(extras.left_out)} left out" if extras.left_out else ""
    out.print(f"wrote {target} ({len(shown)} run{'' if len(shown) == 1 else 's'}{left})")
