"""The `bloodcells` command: a thin typer shell over the Python API (parse, call, print).

Every module is imported inside the command that needs it, so `bloodcells --help` starts
without torch. Everything printed goes through `Console` below: markup off (a path like
`runs[final]` prints as typed) and control characters shown as escapes, never sent raw.
"""

from __future__ import annotations

import errno
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

from bloodcells.errors import BloodcellsError, DataWarning

LOG_WIDTH = 160
# C0 and C1 control characters except tab and newline: shown as \xNN instead of obeyed.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (9, 10)}


class SafeConsole(Console):
    """A rich Console that never reads markup in strings and escapes control characters."""

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, highlight=False, soft_wrap=True, **kwargs)

    def render_str(self, text: str, **kwargs) -> Text:
        return super().render_str(text.translate(_CONTROLS), **kwargs)

    def _size(self) -> ConsoleDimensions:
        """The terminal's size; in a log or a pipe at least LOG_WIDTH columns, so that
        tables keep one line per row instead of wrapping at 80."""
        size = Console.size.fget(self)
        if self.is_terminal or self._width is not None:
            return size
        return ConsoleDimensions(max(size.width, LOG_WIDTH), size.height)

    size = property(_size, Console.size.fset)


out = SafeConsole()
err = SafeConsole(stderr=True)


def _bold(text: str) -> Text:
    return Text(text.translate(_CONTROLS), style="bold")


class FriendlyGroup(typer.core.TyperGroup):
    """Input errors become one line on stderr and exit code 2; tracebacks only with --debug."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (BloodcellsError, OSError) as exc:
            if ctx.meta.get("debug"):
                raise
            err.print(Text.assemble(("error: ", "bold red"), _one_line(exc).translate(_CONTROLS)))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            if ctx.meta.get("debug"):
                raise
            err.print("interrupted")
            raise typer.Exit(130) from None


def _one_line(exc: Exception) -> str:
    """An error as one line; an OSError names its file and says what the system said."""
    if isinstance(exc, OSError) and not isinstance(exc, BloodcellsError):
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.ENOSPC:
            reason = "no space left on device"
        return f"{exc.filename}: {reason}" if exc.filename else reason
    return str(exc).replace("\n", " ")


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
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    ctx.meta["debug"] = debug
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    label = "warning: " if issubclass(category, DataWarning) else f"{category.__name__}: "
    err.print(Text.assemble((label, "yellow"), str(message).translate(_CONTROLS)))


# Options shared by several commands, declared once.
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Dataset root: ROOT/train/<class>, ROOT/test/<class>."),
]
RunDataOpt = Annotated[
    Path | None, typer.Option("--data", "-d", help="Use ROOT/test instead of the run's data.")
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N (default: auto).")]
SizeOpt = Annotated[int, typer.Option(help="Resize images to SIZE×SIZE.")]
RgbOpt = Annotated[bool, typer.Option("--rgb", help="Read as RGB instead of grayscale.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for picking the images.")]
RunArg = Annotated[Path, typer.Argument(help="A run folder made by bloodcells train.")]


def _figure_output(default: str) -> object:
    return typer.Option(
        "--output", "-o", help=f"Image file (.png, .pdf, .svg) or a folder for {default}."
    )


# ---------------------------------------------------------------- data


@data_app.command("info")
def data_info(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    size: SizeOpt = 32,
    rgb: RgbOpt = False,
) -> None:
    """What is in a dataset, and what is wrong with it."""
    from bloodcells.data import Transform, load_dataset

    summary = load_dataset(root, Transform(size, 3 if rgb else 1)).summary()
    table = Table(title=summary["root"], title_justify="left")
    table.add_column("index", justify="right")
    table.add_column("class")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    counts = summary["counts"]
    for cls, idx in summary["class_to_idx"].items():
        table.add_row(str(idx), cls, str(counts["train"][cls]), str(counts["test"][cls]))
    table.add_row("", _bold("total"), *(_bold(str(sum(counts[s].values()))) for s in counts))
    out.print(table)
    for split, sources in summary["sources"].items():
        seen = ", ".join(f"{k} ({v})" for k, v in sources.items()) or "none"
        out.print(f"{split} images (mode size): {seen}")
    problems = summary["problems"]
    out.print(f"problems: {len(problems)}" + "".join(f"\n  - {p}" for p in problems))


@data_app.command("preview")
def data_preview(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    per_class: Annotated[int, typer.Option(help="Images per class (at most 32).")] = 8,
    size: SizeOpt = 32,
    rgb: RgbOpt = False,
    seed: SeedOpt = 0,
    output: Annotated[Path, _figure_output("grid.png")] = Path("grid.png"),
) -> None:
    """Random training images, a row per class: check that the loader delivers your data."""
    from bloodcells.data import Transform, load_dataset
    from bloodcells.figures import check_count, sample_grid, save_figure
    from bloodcells.files import output_file

    check_count(per_class, "images per class", limit=32)
    target = output_file(output, "grid.png")
    splits = load_dataset(root, Transform(size, 3 if rgb else 1))
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
    from bloodcells.data.synthetic import SYNTHETIC_NOTICE, SynthConfig, write_demo_set

    config = SynthConfig(per_class=per_class, test_per_class=test_per_class, seed=seed, size=size)
    root = write_demo_set(dest, config)
    out.print(f"{SYNTHETIC_NOTICE}\nwritten: {root}")


# ---------------------------------------------------------------- models


@app.command("models")
def models_cmd() -> None:
    """The models you can train, with parameter counts (32×32, 5 classes) and options."""
    import torch

    from bloodcells.models import MODELS, build_model, count_parameters

    table = Table()
    for col in ("name", "parameters", "default lr", "channels", "options", "description"):
        table.add_column(
            col,
            justify="right" if col == "parameters" else "left",
            no_wrap=col in ("name", "parameters"),
            min_width=24 if col == "description" else None,
            overflow="fold",
        )
    for spec in MODELS.values():
        with torch.device("meta"):  # shapes only: no memory, no weight initialisation
            n = count_parameters(build_model(spec.name, spec.channels, 5, 32))
        channels = "gray" if spec.channels == 1 else "RGB"
        options = ", ".join(_flag(o) for o in spec.options) or "-"
        table.add_row(
            spec.name, f"{n:,}", f"{spec.default_lr:g}", channels, options, spec.description
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


# ---------------------------------------------------------------- training


@app.command("train")
def train_cmd(
    data: DataOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="simple, advanced or vgg16.")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Train up to this many epochs (default 5; with --resume, the run's)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per training step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the model's).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for initialisation, shuffles, dropout.")
    ] = None,
    device: DeviceOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where run folders go.")] = Path("runs"),
    size: Annotated[int | None, typer.Option(help="Resize images to SIZE×SIZE.")] = None,
    rgb: Annotated[
        bool | None, typer.Option("--rgb/--gray", help="Colour mode (default: the model's).")
    ] = None,
    bn2: Annotated[
        bool, typer.Option("--bn2", help="advanced: BatchNorm after conv 2 (a).")
    ] = False,
    head_dropout: Annotated[
        float | None,
        typer.Option(help="advanced: Dropout between the linear layers, e.g. 0.3 (b)."),
    ] = None,
    extra_fc: Annotated[
        int | None, typer.Option(help="advanced: a third linear layer of N units, e.g. 32 (c).")
    ] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="vgg16: ImageNet weights from the local cache.")
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue this run folder (to its own target, or to --epochs)."),
    ] = None,
    plot: Annotated[
        bool, typer.Option("--plot", help="Keep loss.png and confusion.png in the run folder.")
    ] = False,
) -> None:
    """Train one model, with live progress, into a new run folder."""
    from bloodcells.runs import resume_training, start_training

    if resume is not None:
        fixed = {
            "--model": model, "--batch-size": batch_size, "--lr": lr, "--seed": seed,
            "--size": size, "--rgb/--gray": rgb, "--bn2": bn2 or None,
            "--head-dropout": head_dropout, "--extra-fc": extra_fc,
            "--pretrained": pretrained or None,
        }  # fmt: skip
        given = [flag for flag, value in fixed.items() if value is not None]
        if given:
            raise BloodcellsError(
                f"--resume continues a run with its own settings; drop {', '.join(given)} "
                "(only --epochs, --data, --plot go with --resume)"
            )
        with _interruptible(resume):
            run = resume_training(resume, epochs, _progress(resume.name, plot, resume), data)
    else:
        config, splits = _new_training(
            data, model, epochs, batch_size, lr, seed, device, size, rgb,
            {"bn2": bn2, "head_dropout": head_dropout, "extra_fc": extra_fc,
             "pretrained": pretrained},
        )  # fmt: skip
        from bloodcells.files import output_folder
        from bloodcells.runs import new_run_dir

        run_dir = new_run_dir(output_folder(out_dir), config.model)
        out.print(
            f"training {config.model} on {splits.root} ({len(splits.train)} train, "
            f"{len(splits.test)} test, {len(splits.classes)} classes) → {run_dir}"
        )
        with _interruptible(run_dir):
            progress = _progress(config.model, plot, run_dir)
            run = start_training(splits, config, callbacks=progress, run_dir=run_dir)
    m = run.metrics
    out.print(
        Text.assemble(
            _bold(run.name),
            f": dev accuracy {m['accuracy']:.3f} (chance {m['chance']:.3f}), "
            f"balanced {m['balanced_accuracy']:.3f}, {m['train_seconds']:.1f} s",
        )
    )
    out.print(str(run.path))


def _new_training(data, model, epochs, batch_size, lr, seed, device, size, rgb, options):
    """A checked TrainConfig and its data: every option and the device before any folder."""
    import torch

    from bloodcells.data import Transform, load_dataset
    from bloodcells.models import build_model, get_spec
    from bloodcells.train import TrainConfig, select_device

    if data is None:
        raise BloodcellsError("--data is required (or --resume RUN); see bloodcells train --help")
    model = model or "advanced"
    channels = get_spec(model).channels if rgb is None else (3 if rgb else 1)
    config = TrainConfig(
        model=model,
        epochs=5 if epochs is None else epochs,
        batch_size=8 if batch_size is None else batch_size,
        lr=lr,
        seed=0 if seed is None else seed,
        device=device,
        image_size=32 if size is None else size,
        channels=channels,
        options={k: v for k, v in options.items() if v},
    )
    select_device(config.device)
    with torch.device("meta"):  # checks the options and the image size, allocates nothing
        build_model(model, channels, 2, config.image_size, **config.options)
    return config, load_dataset(data, Transform(config.image_size, channels))


def _progress(label: str, plot: bool, run_dir: Path) -> list:
    from bloodcells.live import PlotFiles, TerminalProgress

    progress = TerminalProgress(err, label=label)
    return [progress, PlotFiles(run_dir)] if plot else [progress]


@contextmanager
def _interruptible(run_dir: Path) -> Iterator[None]:
    """Ctrl-C during training: say what was kept and how to continue, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(
            f"interrupted; finished epochs are saved in {run_dir}; continue with: "
            f"bloodcells train --resume {run_dir}"
        )
        raise typer.Exit(130) from None


@app.command("evaluate")
def evaluate_cmd(run: RunArg, data: RunDataOpt = None, device: DeviceOpt = None) -> None:
    """Accuracy, balanced accuracy, per-class scores and the confusion matrix of a run."""
    from bloodcells.metrics import row_percentages
    from bloodcells.runs import evaluate_run, load_run

    m = evaluate_run(load_run(run), data, device)
    out.print(Text.assemble(_bold(str(run)), f" on {m['data']} test split ({m['n']} images)"))
    out.print(
        f"accuracy {m['accuracy']:.3f}   (chance {m['chance']:.3f}, "
        f"majority class {m['majority_baseline']:.3f})\n"
        f"balanced accuracy {m['balanced_accuracy']:.3f}   loss {m['loss']:.4f}"
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
) -> None:
    """The whole lab end to end: every model, compared, explained, in one HTML report."""
    from bloodcells.data.synthetic import SynthConfig
    from bloodcells.files import check_output_folder
    from bloodcells.lab import LabConfig, run_lab
    from bloodcells.live import TerminalProgress
    from bloodcells.train import select_device

    names = tuple(m.strip() for m in models.split(",") if m.strip())
    config = LabConfig(
        data=data,
        models=names,
        epochs=epochs,
        out=out_dir,
        seed=seed,
        device=device,
        demo=SynthConfig(seed=seed),
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
            f"{m['accuracy']:.3f}",
            f"{m['balanced_accuracy']:.3f}",
            f"{run.info['parameters']:,}",
            f"{m['train_seconds']:.1f}",
            str(len(run.history)),
        )
    out.print(table)
    if result.synthetic:
        out.print(Text("these numbers are on SYNTHETIC demo cells, not real data", "yellow"))
    out.print(f"lab finished in {time.perf_counter() - start:.0f} s; report: {result.report}")


# ---------------------------------------------------------------- looking inside


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
    output: Annotated[Path, _figure_output("cam.png")] = Path("cam.png"),
) -> None:
    """What the network looks at: CAM maps of random dev images, layer by layer."""
    from bloodcells.explain import cam_figure, gradcam_grid
    from bloodcells.figures import check_count, save_figure
    from bloodcells.files import output_file

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
    output: Annotated[Path, _figure_output("top_losses.png")] = Path("top_losses.png"),
) -> None:
    """The dev images the model gets most confidently wrong, and the classes it confuses."""
    import os

    from bloodcells.figures import check_count, plot_top_losses, rank_losses, save_figure
    from bloodcells.files import output_file
    from bloodcells.metrics import most_confused
    from bloodcells.train import evaluate

    check_count(n)
    target = output_file(output, "top_losses.png")
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
    out.print(f"wrote {save_figure(plot_top_losses(splits.test, rows), target)}")


def main() -> None:
    """Console-script entry point."""
    app()
