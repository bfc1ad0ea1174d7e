"""`bloodcells robustness`: a run's accuracy under the fixed family of image shifts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from bloodcells.cli.base import DeviceOpt, RunArg, RunDataOpt, app, bold, err, out

OUTPUT_SUFFIXES = (".html", ".json")


@app.command("robustness")
def robustness_cmd(
    run: RunArg,
    data: RunDataOpt = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Also average over the 8 dihedral views.")
    ] = False,
    adapt_bn: Annotated[
        bool,
        typer.Option("--adapt-bn", help="Also re-estimate BatchNorm statistics per shift."),
    ] = False,
    per_class: Annotated[
        int | None,
        typer.Option(help="Measure at most N dev images per class (seeded), for slow models."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    device: DeviceOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the results: .json, or .html (the heatmap; opens offline); "
            "a folder gets robustness.html.",
        ),
    ] = None,
) -> None:
    """Dev accuracy under scale, blur, noise, exposure, JPEG, hue and stain shifts (3 each)."""
    from bloodcells.analysis.robustness import check_per_class, robustness
    from bloodcells.cli.flags import as_flags
    from bloodcells.runs import load_run
    from bloodcells.utils.devices import select_device
    from bloodcells.utils.files import output_file

    with as_flags("per_class", "adapt_bn", data_root="--data"):
        check_per_class(per_class)
        select_device(device)
        target = None if output is None else output_file(output, "robustness.html", OUTPUT_SUFFIXES)
        loaded = load_run(run)
        progress = None if as_json else _progress()
        result = robustness(loaded, data, tta, adapt_bn, device, per_class, progress=progress)
    if target is not None:
        _write(result, target)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    out.print(_table(result))
    for name, why in result.skipped.items():
        out.print(f"{name}: not measured, {why}")
    for mode in result.modes:
        mean, clean = result.mean(mode), result.clean[mode]
        out.print(
            Text.assemble(
                bold(f"mean under shift ({mode})"),
                f": accuracy {mean.accuracy:.3f}, balanced {mean.balanced_accuracy:.3f} "
                f"(clean {clean.accuracy:.3f}, drop {clean.accuracy - mean.accuracy:.3f})",
            )
        )
    if target is not None:
        out.print(f"wrote {target}")


def _table(result) -> Table:
    from bloodcells.ops.shifts import SEVERITIES, SHIFTS

    title = (
        f"{result.run} on {result.data} test split ({result.n} images, "
        f"{'gray' if result.channels == 1 else 'RGB'}): accuracy (balanced)"
    )
    table = Table(title=title, title_justify="left")
    for col in ("shift", "severity", "level"):
        table.add_column(col, justify="right" if col == "severity" else "left")
    for mode in result.modes:
        table.add_column(mode, justify="right")

    def cells(scores) -> list[str]:
        return [f"{s.accuracy:.3f} ({s.balanced_accuracy:.3f})" for s in scores]

    table.add_row("clean", "", "", *cells(result.clean[m] for m in result.modes))
    for name in result.shifts:
        for severity in SEVERITIES:
            table.add_row(
                name if severity == 1 else "",
                str(severity),
                SHIFTS[name].level_label(severity),
                *cells(result.scores[m][name][severity - 1] for m in result.modes),
                end_section=severity == SEVERITIES[-1],
            )
    table.add_row("mean under shift", "", "", *cells(result.mean(m) for m in result.modes))
    return table


def _progress():
    """On a terminal, one line on stderr kept current: which shift is being measured."""

    def progress(done: int, total: int, what: str) -> None:
        if err.is_terminal:
            end = "\n" if done == total else "\r"
            err.print(f"measuring {done}/{total}: {what}".ljust(40), end=end)

    return progress


def _write(result, target: Path) -> None:
    from bloodcells.utils.files import output_folder, write_atomic

    output_folder(target.parent)
    if target.suffix.lower() == ".json":
        write_atomic(target, json.dumps(result.to_dict(), indent=2))
        return
    from bloodcells.viz.robustness import robustness_figure

    page = robustness_figure(result).to_html(include_plotlyjs=True, full_html=True)
    write_atomic(target, page)
