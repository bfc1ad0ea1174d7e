"""Looking inside a trained model: Grad-CAM and its most confident mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bloodcells.cli.base import DeviceOpt, RunArg, RunDataOpt, SeedOpt, app, figure_output, out


def _trained(run_dir: Path, data: Path | None, device: str | None):
    """A run's model, its data (or `data`), and the device name, for the commands below."""
    from bloodcells.cli.flags import as_flags
    from bloodcells.runs import load_run
    from bloodcells.utils.devices import select_device

    run = load_run(run_dir)
    device_ = str(select_device(device))
    with as_flags(data_root="--data"):
        return run.load_model(device_), run.load_data(data), device_


@app.command("gradcam")
def gradcam_cmd(
    run: RunArg,
    data: RunDataOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", help="How many dev images (at most 64).")] = 6,
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers",
            "-l",
            help="Layer names (as in named_modules, e.g. 0,5 or features.28); repeat or "
            "comma-separate (default: the last conv of each map size).",
        ),
    ] = None,
    target: Annotated[str, typer.Option(help="Explain the 'predicted' or the 'true' class.")] = (
        "predicted"
    ),
    method: Annotated[
        str,
        typer.Option(
            help="gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, scorecam, "
            "ablationcam."
        ),
    ] = "gradcam",
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    output: Annotated[Path, figure_output("cam.png")] = Path("cam.png"),
) -> None:
    """What the network looks at: CAM maps of random dev images, layer by layer."""
    from bloodcells.analysis.gradcam import gradcam_grid
    from bloodcells.utils.files import output_file
    from bloodcells.utils.validation import check_count
    from bloodcells.viz.cams import cam_figure
    from bloodcells.viz.grids import save_figure

    check_count(n)
    target_file = output_file(output, "cam.png")
    model, splits, device_ = _trained(run, data, device)
    names = [name.strip() for item in layers or [] for name in item.split(",") if name.strip()]
    grid = gradcam_grid(model, splits.test, n, names, target, method, seed, device_)
    for layer in grid.layers:
        h, w = layer.size
        out.print(f"layer {layer.name} ({layer.kind}): {h}×{w} map")
    out.print(f"wrote {save_figure(cam_figure(grid), target_file)}")


@app.command("mistakes")
def mistakes_cmd(
    run: RunArg,
    data: RunDataOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", help="How many top losses (at most 64).")] = 9,
    device: DeviceOpt = None,
    output: Annotated[Path, figure_output("top_losses.png")] = Path("top_losses.png"),
) -> None:
    """The dev images the model gets most confidently wrong, and the classes it confuses."""
    import os

    from bloodcells.evaluation.core import evaluate
    from bloodcells.utils.files import output_file
    from bloodcells.utils.validation import check_count
    from bloodcells.viz.grids import save_figure, top_losses_figure

    check_count(n)
    target = output_file(output, "top_losses.png")
    model, splits, device_ = _trained(run, data, device)
    result = evaluate(model, splits.test, device_)
    title = f"top {min(n, len(result))} losses on {splits.root}/test"
    table = Table(title=title, title_justify="left", show_edge=False)
    for col in ("#", "image", "true", "predicted", "p(pred)", "loss"):
        justify = "right" if col in ("#", "p(pred)", "loss") else "left"
        table.add_column(col, justify=justify, overflow="fold")
    for i, row in enumerate(result.top_losses(n), start=1):
        image = os.path.relpath(row["path"], splits.root)
        p, loss = f"{row['probability']:.3f}", f"{row['loss']:.2f}"
        table.add_row(str(i), image, row["true"], row["predicted"], p, loss)
    out.print(table)
    confused = Table(title="most confused classes", title_justify="left")
    for col in ("true", "predicted as", "images"):
        confused.add_column(col, justify="right" if col == "images" else "left")
    for true, pred, count in result.most_confused():
        confused.add_row(true, pred, str(count))
    out.print(confused if confused.row_count else "no mistakes on the dev set")
    out.print(f"wrote {save_figure(top_losses_figure(result, splits.test, n), target)}")
