"""The models you can train: their catalogue and their layer shapes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bloodcells.cli.base import app, out


@app.command("models")
def models_cmd() -> None:
    """The models you can train, with parameter counts (32×32, 5 classes) and options."""
    # The catalogue, not the models: building them would import torch and torchvision (seconds).
    from bloodcells.models.specs import CATALOGUE

    table = Table()
    for col in ("name", "parameters", "default lr", "channels", "options", "description"):
        table.add_column(
            col,
            justify="right" if col == "parameters" else "left",
            no_wrap=col in ("name", "parameters"),
            min_width=24 if col == "description" else None,
            overflow="fold",
        )
    for spec in CATALOGUE.values():
        channels = "gray" if spec.channels == 1 else "RGB"
        options = ", ".join(_flag(o) for o in spec.options) or "-"
        table.add_row(
            spec.name,
            f"{spec.parameters:,}",
            f"{spec.default_lr:g}",
            channels,
            options,
            spec.description,
        )
    out.print(table)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


@app.command("shapes")
def shapes(
    model: Annotated[str, typer.Argument(help="Model name (see `bloodcells models`).")],
    size: Annotated[int, typer.Option(min=4, max=512, help="Input image size.")] = 32,
    channels: Annotated[int, typer.Option(min=1, max=3, help="Input channels (1 or 3).")] = 1,
    classes: Annotated[int, typer.Option(min=2, max=1000, help="Number of classes.")] = 5,
) -> None:
    """The output shape after every layer (the lab's exercise 1)."""
    from torchinfo import summary

    from bloodcells.models.registry import build_model

    net = build_model(model, channels, classes, size)
    info = summary(
        net,
        input_size=(1, channels, size, size),
        col_names=("output_size", "num_params"),
        depth=3,
        verbose=0,
    )
    typer.echo(str(info))
