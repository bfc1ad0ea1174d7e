"""`bloodcells data split` and `data check`: folders into the lab layout, and leaks found."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bloodcells.cli.base import DeviceOpt, RgbOpt, bold, data_app, decode_progress, out
from bloodcells.cli.flags import as_flags

SHOWN = 10  # rows per table on the terminal; --json lists up to 1000 of each


@data_app.command("split")
def data_split(
    src: Annotated[
        Path,
        typer.Argument(
            help="Flat class folders SRC/<class>/<image>, or (with --labels) the folder that "
            "the CSV's relative paths start from. Only read, never changed."
        ),
    ],
    dest: Annotated[Path, typer.Argument(help="New folder for the lab layout (must not exist).")],
    test_fraction: Annotated[
        float, typer.Option(help="Share of each class that goes to test, between 0 and 1.")
    ] = 0.2,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Regex searched in each path relative to SRC; its first group names the donor, "
            "slide or patient, and no group is ever on both sides. E.g. '^[^/]+/([^_]+)_'.",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV with path,label columns (header optional); relative paths are read from SRC."
        ),
    ] = None,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Hardlink the images instead of copying (symlinks across file systems). "
            "A hardlink is the same file: editing it in DEST edits it in SRC.",
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed for the split (0 or more): the same seed, the same split.")
    ] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace DEST if it is an earlier split.")
    ] = False,
) -> None:
    """Flat class folders (or a CSV of labels) -> the lab layout, stratified, optionally grouped."""
    from bloodcells.data.prepare.split import MANIFEST, split_folder

    with as_flags("test_fraction", "group_by", "labels", "seed", "overwrite"):
        result = split_folder(src, dest, test_fraction, group_by, labels, link, seed, overwrite)
    table = Table(title=str(result.dest), title_justify="left")
    for col in ("class", "train", "test"):
        table.add_column(col, justify="left" if col == "class" else "right")
    counts = result.counts
    for cls in sorted(set(counts["train"]) | set(counts["test"])):
        table.add_row(cls, str(counts["train"].get(cls, 0)), str(counts["test"].get(cls, 0)))
    totals = (sum(counts[s].values()) for s in ("train", "test"))
    table.add_row(bold("total"), *(bold(str(n)) for n in totals))
    out.print(table)
    out.print(f"test fraction: {result.test_fraction:.3f} (asked {test_fraction:g})")
    if result.groups:
        g = result.groups
        out.print(f"groups: {g['train']} in train, {g['test']} in test, none on both sides")
    done = {"copy": "copied", "hardlink": "hardlinked", "symlink": "symlinked"}
    out.print("files: " + ", ".join(f"{n} {done[how]}" for how, n in result.files.items()))
    out.print(f"wrote {result.dest} (the split is listed in {MANIFEST})")
    out.print(f"next: bloodcells data check {shlex.quote(str(result.dest))}")


@data_app.command("check")
def data_check(
    root: Annotated[
        Path, typer.Argument(help="Dataset root: ROOT/train/<class>, ROOT/test/<class>.")
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (stable keys) instead.")
    ] = False,
    threshold: Annotated[
        float,
        typer.Option(
            help="Cosine similarity of two standardized 32×32 images at or above which a test "
            "image counts as a near copy of a training image (0 to 1)."
        ),
    ] = 0.98,
    rgb: RgbOpt = False,
    device: DeviceOpt = None,
) -> None:
    """Duplicates, train/test leaks, degenerate images, imbalance, odd sizes: reported only."""
    from bloodcells.data.quality.check import check_dataset, check_threshold
    from bloodcells.utils.devices import select_device

    with as_flags("threshold"):
        check_threshold(threshold)
        report = check_dataset(
            root, threshold, 3 if rgb else 1, select_device(device), progress=decode_progress()
        )
    if json_output:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    _print_report(report)


def _print_report(report) -> None:
    images, counts = report.images, report.counts
    mode = "RGB" if report.channels == 3 else "gray"
    out.print(
        f"{report.root}: {images['train']} train + {images['test']} test images, "
        f"{len(counts['train'])} classes, checked at 32×32 {mode} in {report.seconds:.1f} s"
    )
    imbalance = report.imbalance
    table = Table(title="classes", title_justify="left")
    for col in ("class", "train", "test", "test share"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for cls, n in counts["train"].items():
        share = f"{imbalance['test_share'][cls]:.2f}"
        table.add_row(cls, str(n), str(counts["test"][cls]), share)
    out.print(table)
    out.print(
        f"baseline: always answering {imbalance['majority_class']} scores "
        f"{imbalance['majority_baseline']:.3f} accuracy on test (balanced accuracy by chance "
        f"{imbalance['balanced_baseline']:.3f}); largest / smallest class {imbalance['ratio']:g}"
    )
    _print_groups("exact duplicates (same file bytes)", report.exact_duplicates)
    _print_groups("same pixels at 32×32, other file bytes", report.same_pixels)
    _print_near(report.near_duplicates)
    _print_degenerate(report.degenerate)
    _print_sizes(report.sizes)
    problems = report.problems["items"]
    out.print(f"problems: {len(problems) or 'none'}")
    for p in problems[:SHOWN]:
        out.print(f"  - {p['path']}: {p['problem']}")
    _more(len(problems))
    lines = report.findings
    out.print(bold("summary:" if lines else "summary: nothing found that would inflate accuracy"))
    for line in lines:
        out.print(f"  - {line}")


def _more(n: int) -> None:
    if n > SHOWN:
        out.print(f"  ... and {n - SHOWN} more (--json lists up to 1000)")


def _print_groups(title: str, found: dict) -> None:
    groups = found["groups"]
    n = found["groups_across"] + found["groups_within_train"] + found["groups_within_test"]
    if not n:
        out.print(f"{title}: none")
        return
    out.print(
        f"{title}: {n} group(s), {found['groups_across']} across train/test "
        f"({found['test_images_in_train']} test images), {found['groups_within_train']} within "
        f"train, {found['groups_within_test']} within test"
    )
    table = Table()
    for col in ("where", "classes", "files"):
        table.add_column(col, overflow="fold")
    for g in groups[:SHOWN]:
        files = g["files"]
        listed = ", ".join(f["path"] for f in files[:3])
        if len(files) > 3:
            listed += f" and {len(files) - 3} more"
        classes = ", ".join(sorted({f["class"] for f in files}))
        table.add_row(g["kind"].replace("_", " "), classes, listed)
    out.print(table)
    _more(n)


def _print_near(near: dict) -> None:
    best = near["best_match"]
    spread = (
        f"; each test image's best match in train: median {best['median']:.3f}, "
        f"99% {best['p99']:.3f}, max {best['max']:.3f}"
        if best
        else ""
    )
    n = near["test_images_in_train"]
    out.print(
        f"near copies across train/test (cosine >= {near['threshold']:g}): "
        f"{f'{n} test image(s)' if n else 'none'}{spread}"
    )
    if not n:
        return
    table = Table()
    for col in ("cosine", "test", "train", "classes"):
        table.add_column(col, justify="right" if col == "cosine" else "left", overflow="fold")
    for p in near["pairs"][:SHOWN]:
        classes = (
            p["test_class"]
            if p["test_class"] == p["train_class"]
            else (f"{p['test_class']} / {p['train_class']}")
        )
        table.add_row(f"{p['similarity']:.4f}", p["test"], p["train"], classes)
    out.print(table)
    _more(n)


def _print_degenerate(degenerate: dict) -> None:
    n = degenerate["count"]
    out.print(f"degenerate images: {n or 'none'}")
    for item in degenerate["items"][:SHOWN]:
        out.print(f"  - {item['path']}: {', '.join(item['reasons'])}")
    _more(n)


def _print_sizes(sizes: dict) -> None:
    if not sizes["odd_images"]:
        common = sizes["most_common"] or "none readable"
        out.print(f"image sizes: all {common}")
        return
    out.print(
        f"image sizes: most common {sizes['most_common']} "
        f"({sizes['counts'][sizes['most_common']]}), {sizes['odd_images']} image(s) of other sizes"
    )
    table = Table()
    for col in ("size", "images", "by class", "example"):
        table.add_column(col, justify="right" if col == "images" else "left", overflow="fold")
    for odd in sizes["odd"][:SHOWN]:
        by_class = ", ".join(f"{c} {n}" for c, n in odd["by_class"].items())
        table.add_row(odd["size"], str(odd["count"]), by_class, odd["example"])
    out.print(table)
    _more(len(sizes["odd"]))
