"""`bloodcells lab`: the whole lab end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from bloodcells.cli.base import DeviceOpt, RecipeOpt, app, err, out


@app.command("lab")
def lab_cmd(
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Dataset root (default: the demo set).")
    ] = None,
    models: Annotated[
        str, typer.Option(help="Comma-separated models, in order.")
    ] = "simple,advanced,vgg16",
    epochs: Annotated[
        int | None, typer.Option(help="Epochs per model (default: 5; VGG16 fewer on a CPU).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the lab folder goes.")] = Path(
        "runs"
    ),
    seed: Annotated[int, typer.Option(help="Seed for the demo set and training.")] = 0,
    device: DeviceOpt = None,
    recipe: RecipeOpt = None,
) -> None:
    """The whole lab end to end: every model, compared, explained, in one HTML report."""
    from bloodcells.cli.flags import SIZE_FLAG, as_flags
    from bloodcells.data.sources.synthetic import SynthConfig
    from bloodcells.lab import LabConfig, run_lab
    from bloodcells.utils.devices import select_device
    from bloodcells.utils.files import check_output_folder
    from bloodcells.viz.live import TerminalProgress

    with as_flags("epochs", "seed", "models", renamed=SIZE_FLAG):
        names = tuple(m.strip() for m in models.split(",") if m.strip())
        config = LabConfig(
            data=data,
            models=names,
            epochs=epochs,
            out=out_dir,
            seed=seed,
            device=device,
            demo=SynthConfig(seed=seed),
            recipe=recipe or "lab",
        )
        select_device(device)
        check_output_folder(out_dir)
        start = time.perf_counter()
        result = run_lab(
            config,
            callbacks_for=lambda name: [TerminalProgress(err, label=name)],
            say=err.print,
        )
    table = Table(title="comparison (dev set)", title_justify="left")
    for col in ("model", "accuracy", "balanced", "parameters", "seconds", "epochs"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, run in result.runs.items():
        m = run.metrics
        table.add_row(
            name,
            f"{m.accuracy:.3f}",
            f"{m.balanced_accuracy:.3f}",
            f"{run.info.parameters:,}",
            f"{m.train_seconds:.1f}",
            str(len(run.history)),
        )
    out.print(table)
    if result.synthetic:
        out.print(Text("these numbers are on SYNTHETIC demo cells, not real data", "yellow"))
    out.print(f"lab finished in {time.perf_counter() - start:.0f} s; report: {result.report}")
