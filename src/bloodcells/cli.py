"""The `bloodcells` command: a thin typer shell over the Python API (parse, call, print)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from bloodcells.errors import BloodcellsError, DataWarning

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DEBUG = {"on": False}


class FriendlyGroup(typer.core.TyperGroup):
    """Input errors become one line on stderr and exit code 2; tracebacks only with --debug."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (BloodcellsError, FileExistsError) as exc:
            if DEBUG["on"]:
                raise
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=FriendlyGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Classify white blood cells from small microscopy patches (the CNN lab as software).",
)
data_app = typer.Typer(no_args_is_help=True, help="Look at datasets, and make the demo set.")
app.add_typer(data_app, name="data")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    DEBUG["on"] = debug
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, DataWarning):
        err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        err.print(f"[yellow]{category.__name__}:[/] {message}", highlight=False, soft_wrap=True)


DataOpt = Annotated[
    Path, typer.Option("--data", "-d", help="Dataset root: ROOT/train/<class>, ROOT/test/<class>.")
]


@data_app.command("info")
def data_info(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    size: Annotated[int, typer.Option(help="Resize images to SIZE×SIZE.")] = 32,
    rgb: Annotated[bool, typer.Option("--rgb", help="Read as RGB instead of grayscale.")] = False,
) -> None:
    """What is in a dataset, and what is wrong with it."""
    from bloodcells.data import Transform, load_dataset

    summary = load_dataset(root, Transform(size, 3 if rgb else 1)).summary()
    table = Table(title=f"{summary['root']}", title_justify="left")
    table.add_column("index", justify="right")
    table.add_column("class")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    counts = summary["counts"]
    for cls, idx in summary["class_to_idx"].items():
        table.add_row(str(idx), cls, str(counts["train"][cls]), str(counts["test"][cls]))
    table.add_row("", "[bold]total", *(f"[bold]{sum(counts[s].values())}" for s in counts))
    out.print(table)
    for split, sources in summary["sources"].items():
        seen = ", ".join(f"{k} ({v})" for k, v in sources.items()) or "none"
        out.print(f"{split} images (mode size): {seen}", highlight=False)
    problems = summary["problems"]
    out.print(f"problems: {len(problems)}" + "".join(f"\n  - {p}" for p in problems))


@app.command("models")
def models_cmd() -> None:
    """The models you can train, with parameter counts (32×32, 5 classes)."""
    from bloodcells.models import MODELS, build_model, count_parameters

    table = Table()
    for col in ("name", "parameters", "default lr", "channels", "options", "description"):
        justify = "right" if col == "parameters" else "left"
        table.add_column(col, justify=justify, no_wrap=col != "description")
    for spec in MODELS.values():
        n = count_parameters(build_model(spec.name, spec.channels, 5, 32))
        channels = "gray" if spec.channels == 1 else "RGB"
        options = ", ".join(spec.options) or "-"
        table.add_row(
            spec.name, f"{n:,}", f"{spec.default_lr:g}", channels, options, spec.description
        )
    out.print(table)


@app.command("shapes")
def shapes(
    model: Annotated[str, typer.Argument(help="Model name (see `bloodcells models`).")],
    size: Annotated[int, typer.Option(help="Input image size.")] = 32,
    channels: Annotated[int, typer.Option(help="Input channels (1 gray, 3 RGB).")] = 1,
    classes: Annotated[int, typer.Option(help="Number of classes.")] = 5,
) -> None:
    """The output shape after every layer (the lab's exercise 1)."""
    from torchinfo import summary

    from bloodcells.models import build_model

    net = build_model(model, channels, classes, size)
    info = summary(
        net,
        input_size=(1, channels, size, size),
        col_names=("output_size", "num_params"),
        depth=3,
        verbose=0,
    )
    typer.echo(str(info))


@app.command("train")
def train_cmd(
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Dataset root.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="simple, advanced or vgg16.")] = (
        "advanced"
    ),
    epochs: Annotated[int, typer.Option(help="Train up to this many epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 8,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, shuffles, dropout.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N (default: auto).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where run folders go.")] = Path("runs"),
    size: Annotated[int, typer.Option(help="Resize images to SIZE×SIZE.")] = 32,
    rgb: Annotated[
        bool | None, typer.Option("--rgb/--gray", help="Colour mode (default: the model's).")
    ] = None,
    bn2: Annotated[
        bool, typer.Option("--bn2", help="advanced: BatchNorm after conv 2 (a).")
    ] = False,
    head_dropout: Annotated[
        float, typer.Option(help="advanced: Dropout between the linear layers, e.g. 0.3 (b).")
    ] = 0.0,
    extra_fc: Annotated[
        int, typer.Option(help="advanced: a third linear layer of N units, e.g. 32 (c).")
    ] = 0,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="vgg16: ImageNet weights from the local cache.")
    ] = False,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder up to --epochs.")
    ] = None,
    plot: Annotated[
        bool, typer.Option("--plot", help="Keep loss.png and confusion.png in the run folder.")
    ] = False,
) -> None:
    """Train one model, with live progress, into a new run folder."""
    from bloodcells.data import Transform, load_dataset
    from bloodcells.live import PlotFiles, TerminalProgress
    from bloodcells.models import get_spec
    from bloodcells.runs import new_run_dir, resume_training, start_training
    from bloodcells.train import TrainConfig

    progress = TerminalProgress(err, label=model)

    def callbacks(run_dir: Path) -> list:
        return [progress, PlotFiles(run_dir)] if plot else [progress]

    if resume is not None:
        run_dir = resume
        out.print(f"resuming {resume} up to {epochs} epochs")
        with _interruptible(run_dir):
            run = resume_training(resume, epochs, callbacks(run_dir), data)
    else:
        if data is None:
            raise BloodcellsError(
                "--data is required (or --resume RUN); see bloodcells train --help"
            )
        channels = (3 if rgb else 1) if rgb is not None else get_spec(model).channels
        options = {"bn2": bn2, "head_dropout": head_dropout, "extra_fc": extra_fc}
        options = {k: v for k, v in options.items() if v} | (
            {"pretrained": True} if pretrained else {}
        )
        config = TrainConfig(model, epochs, batch_size, lr, seed, device, size, channels, options)
        splits = load_dataset(data, Transform(size, channels))
        run_dir = new_run_dir(out_dir, model)
        out.print(
            f"training {model} on {splits.root} ({len(splits.train)} train, {len(splits.test)} "
            f"test, {len(splits.classes)} classes) → {run_dir}",
            highlight=False,
        )
        with _interruptible(run_dir):
            run = start_training(splits, config, callbacks=callbacks(run_dir), run_dir=run_dir)
    m = run.metrics
    out.print(
        f"[bold]{run.name}[/]: dev accuracy {m['accuracy']:.3f} (chance {m['chance']:.3f}), "
        f"balanced {m['balanced_accuracy']:.3f}, {m['train_seconds']:.1f} s",
        highlight=False,
    )
    out.print(str(run.path))


class _interruptible:
    """Ctrl-C during training: say what was kept and how to continue, exit 130."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is KeyboardInterrupt:
            err.print(
                f"interrupted; finished epochs are saved in {self.run_dir}; continue with: "
                f"bloodcells train --resume {self.run_dir} --epochs N",
                highlight=False,
            )
            raise typer.Exit(130)
        return False


@app.command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder made by bloodcells train.")],
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Evaluate on ROOT/test instead.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto).")] = None,
) -> None:
    """Accuracy, balanced accuracy, per-class scores and the confusion matrix of a run."""
    from bloodcells.metrics import row_percentages
    from bloodcells.runs import evaluate_run, load_run

    m = evaluate_run(load_run(run), data, device)
    out.print(f"[bold]{run}[/] on {m['data']} test split ({m['n']} images)", highlight=False)
    out.print(
        f"accuracy {m['accuracy']:.3f}   (chance {m['chance']:.3f}, "
        f"majority class {m['majority_baseline']:.3f})\n"
        f"balanced accuracy {m['balanced_accuracy']:.3f}   loss {m['loss']:.4f}",
        highlight=False,
    )
    per_class = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for cls, s in m["per_class"].items():
        per_class.add_row(
            cls, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"])
        )
    out.print(per_class)
    classes = m["classes"]
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    matrix.add_column("true \\ pred")
    for cls in classes:
        matrix.add_column(cls, justify="right")
    percent = row_percentages(m["confusion_matrix"])
    for i, cls in enumerate(classes):
        cells = [
            f"{count} ({100 * share:.0f}%)"
            for count, share in zip(m["confusion_matrix"][i], percent[i], strict=True)
        ]
        matrix.add_row(cls, *cells)
    out.print(matrix)


@data_app.command("synth")
def data_synth(
    dest: Annotated[Path, typer.Argument(help="New folder for the demo set (must not exist).")],
    per_class: Annotated[int, typer.Option(help="Training images per class.")] = 400,
    test_per_class: Annotated[int, typer.Option(help="Test images per class.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed: the same seed makes the same images.")] = 0,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 32,
) -> None:
    """Write the built-in SYNTHETIC demo set (five procedural cell classes) as PNG folders."""
    from bloodcells.synthetic import SYNTHETIC_NOTICE, SynthConfig, write_demo_set

    root = write_demo_set(dest, SynthConfig(per_class, test_per_class, seed, size))
    out.print(f"{SYNTHETIC_NOTICE}\nwritten: {root}", highlight=False)


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
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N (default: auto).")] = None,
) -> None:
    """The whole lab end to end: every model, compared, explained, in one HTML report."""
    from bloodcells.lab import LabConfig, run_lab
    from bloodcells.live import TerminalProgress

    names = tuple(m.strip() for m in models.split(",") if m.strip())
    from bloodcells.synthetic import SynthConfig

    config = LabConfig(data, names, epochs, out_dir, seed, device, demo=SynthConfig(seed=seed))
    start = time.perf_counter()
    result = run_lab(
        config,
        callbacks_for=lambda name: [TerminalProgress(err, label=name)],
        say=lambda text: err.print(text, highlight=False),
    )
    table = Table(title="comparison (dev set)", title_justify="left")
    for col in ("model", "accuracy", "balanced", "parameters", "seconds", "epochs"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, run in result.runs.items():
        m = run.metrics
        table.add_row(
            name,
            f"{m['accuracy']:.3f}",
            f"{m['balanced_accuracy']:.3f}",
            f"{run.info['parameters']:,}",
            f"{m['train_seconds']:.1f}",
            str(len(run.history)),
        )
    out.print(table)
    if result.synthetic:
        out.print("[yellow]these numbers are on SYNTHETIC demo cells, not real data[/]")
    out.print(f"lab finished in {time.perf_counter() - start:.0f} s; report: {result.report}")


RunArg = Annotated[Path, typer.Argument(help="A run folder made by bloodcells train.")]
RunDataOpt = Annotated[
    Path | None, typer.Option("--data", "-d", help="Use ROOT/test instead of the run's data.")
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N (default: auto).")]


def _trained(run_dir: Path, data: Path | None, device: str | None):
    """A run's model, its data (or `data`), and the device name, for the commands below."""
    from bloodcells.runs import load_run
    from bloodcells.train import select_device

    run = load_run(run_dir)
    device_ = str(select_device(device))
    return run.load_model(device_), run.load_data(data), device_


@app.command("gradcam")
def gradcam_cmd(
    run: RunArg,
    data: RunDataOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="How many dev images.")] = 6,
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
    seed: Annotated[int, typer.Option(help="Seed for picking the images.")] = 0,
    device: DeviceOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path("cam.png"),
) -> None:
    """What the network looks at: CAM maps of random dev images, layer by layer."""
    from bloodcells.explain import cam_figure, gradcam_grid
    from bloodcells.figures import save_figure

    model, splits, device_ = _trained(run, data, device)
    names = [name.strip() for item in layers or [] for name in item.split(",") if name.strip()]
    grid = gradcam_grid(model, splits.test, n, names, target, method, seed, device_)
    for layer in grid.layers:
        h, w = layer.size
        out.print(f"layer {layer.name} ({layer.kind}): {h}×{w} map", highlight=False)
    out.print(f"wrote {save_figure(cam_figure(grid), output)}", highlight=False)


@data_app.command("preview")
def data_preview(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    per_class: Annotated[int, typer.Option(min=1, help="Images per class.")] = 8,
    size: Annotated[int, typer.Option(help="Resize images to SIZE×SIZE.")] = 32,
    rgb: Annotated[bool, typer.Option("--rgb", help="Read as RGB instead of grayscale.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for picking the images.")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path(
        "grid.png"
    ),
) -> None:
    """Random training images, a row per class: check that the loader delivers your data."""
    from bloodcells.data import Transform, load_dataset
    from bloodcells.figures import sample_grid, save_figure

    splits = load_dataset(root, Transform(size, 3 if rgb else 1))
    path = save_figure(sample_grid(splits.train, per_class, seed), output)
    out.print(f"wrote {path}", highlight=False)


@app.command("mistakes")
def mistakes_cmd(
    run: RunArg,
    data: RunDataOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="How many top losses.")] = 9,
    device: DeviceOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path(
        "top_losses.png"
    ),
) -> None:
    """The dev images the model gets most confidently wrong, and the classes it confuses."""
    import os

    from bloodcells.figures import plot_top_losses, rank_losses, save_figure
    from bloodcells.metrics import most_confused
    from bloodcells.train import evaluate

    model, splits, device_ = _trained(run, data, device)
    result = evaluate(model, splits.test, device_)
    rows = rank_losses(result, splits.test, n)
    title = f"top {len(rows)} losses on {splits.root}/test"
    table = Table(title=title, title_justify="left", show_edge=False)
    for col in ("#", "image", "true", "predicted", "p(pred)", "loss"):
        justify = "right" if col in ("#", "p(pred)", "loss") else "left"
        table.add_column(col, justify=justify, overflow="fold")
    for i, row in enumerate(rows, start=1):
        image = os.path.relpath(row["path"], splits.root)
        p, loss = f"{row['probability']:.3f}", f"{row['loss']:.2f}"
        table.add_row(str(i), image, row["true"], row["predicted"], p, loss)
    out.print(table)
    classes = splits.classes
    confused = Table(title="most confused classes", title_justify="left")
    for col in ("true", "predicted as", "images"):
        confused.add_column(col, justify="right" if col == "images" else "left")
    for true, pred, count in most_confused(result.confusion(len(classes)), classes):
        confused.add_row(true, pred, str(count))
    out.print(confused if confused.row_count else "no mistakes on the dev set")
    out.print(f"wrote {save_figure(plot_top_losses(splits.test, rows), output)}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
