"""`bloodcells data ...`: look at datasets, and make the demo set."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bloodcells.cli.base import (
    RgbOpt,
    SeedOpt,
    SizeOpt,
    bold,
    data_app,
    decode_progress,
    figure_output,
    out,
)
from bloodcells.cli.flags import SIZE_FLAG, as_flags


@data_app.command("info")
def data_info(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    size: SizeOpt = 32,
    rgb: RgbOpt = False,
) -> None:
    """What is in a dataset, and what is wrong with it."""
    from bloodcells.data import Transform, load_dataset

    with as_flags("size", renamed=SIZE_FLAG):
        splits = load_dataset(root, Transform(size, 3 if rgb else 1), progress=decode_progress())
    summary = splits.summary()
    table = Table(title=summary["root"], title_justify="left")
    table.add_column("index", justify="right")
    table.add_column("class")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    counts = summary["counts"]
    for cls, idx in summary["class_to_idx"].items():
        table.add_row(str(idx), cls, str(counts["train"][cls]), str(counts["test"][cls]))
    table.add_row("", bold("total"), *(bold(str(sum(counts[s].values()))) for s in counts))
    out.print(table)
    for split, sources in summary["sources"].items():
        seen = ", ".join(f"{k} ({v})" for k, v in sources.items()) or "none"
        out.print(f"{split} images (mode size): {seen}")
    problems = summary["problems"]
    out.print(f"problems: {len(problems)}" + "".join(f"\n  - {p}" for p in problems))
    out.print(_check_hint(summary))


def _check_hint(summary: dict) -> str:
    """That leaks are not checked by `data info`, why to check this dataset, and how."""
    from bloodcells.data.quality.check import worth_checking

    reasons = worth_checking(summary)
    why = f" ({', '.join(reasons)})" if reasons else ""
    command = f"bloodcells data check {shlex.quote(summary['root'])}"
    return f"duplicates and train/test leaks are not checked here{why}: run {command}"


@data_app.command("preview")
def data_preview(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    per_class: Annotated[int, typer.Option(help="Images per class (at most 32).")] = 8,
    size: SizeOpt = 32,
    rgb: RgbOpt = False,
    seed: SeedOpt = 0,
    output: Annotated[Path, figure_output("grid.png")] = Path("grid.png"),
) -> None:
    """Random training images, a row per class: check that the loader delivers your data."""
    from bloodcells.data import Transform, load_dataset
    from bloodcells.utils.files import output_file
    from bloodcells.utils.validation import check_count
    from bloodcells.viz.grids import sample_grid, save_figure

    check_count(per_class, "images per class", limit=32)
    target = output_file(output, "grid.png")
    with as_flags("size", renamed=SIZE_FLAG):
        splits = load_dataset(root, Transform(size, 3 if rgb else 1), progress=decode_progress())
    out.print(f"wrote {save_figure(sample_grid(splits.train, per_class, seed), target)}")


@data_app.command("synth")
def data_synth(
    dest: Annotated[Path, typer.Argument(help="New folder for the demo set (must not exist).")],
    per_class: Annotated[int, typer.Option(help="Training images per class.")] = 400,
    test_per_class: Annotated[int, typer.Option(help="Test images per class.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed: the same seed makes the same images.")] = 0,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 32,
) -> None:
    """Write the built-in SYNTHETIC demo set (five procedural cell classes) as PNG folders."""
    from bloodcells.data.sources.synthetic import SYNTHETIC_NOTICE, SynthConfig, write_demo_set

    with as_flags("per_class", "test_per_class", "seed", "size"):
        config = SynthConfig(
            per_class=per_class, test_per_class=test_per_class, seed=seed, size=size
        )
        root = write_demo_set(dest, config)
    out.print(f"{SYNTHETIC_NOTICE}\nwritten: {root}")
