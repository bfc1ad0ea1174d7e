"""Training, the learning-rate range test and evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from bloodcells.cli.base import (
    BloodcellsError,
    DataOpt,
    DeviceOpt,
    RecipeOpt,
    RunArg,
    RunDataOpt,
    TtaOpt,
    app,
    bold,
    err,
    figure_output,
    out,
)

if TYPE_CHECKING:
    from bloodcells.data import Splits
    from bloodcells.runs import Run
    from bloodcells.training import TrainConfig

AmpOpt = Annotated[
    bool, typer.Option("--amp", help="bf16 autocast for the training steps (CUDA GPUs only).")
]


# The library names its parameters; train's errors show these as flags (see cli.flags).
RGB_HINT = {"(use channels=3)": "(use --rgb)"}
TRAIN_FLAGS = ("epochs", "batch_size", "seed", "augment", "schedule", "label_smoothing", "amp")


@app.command("train")
def train_cmd(
    data: DataOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="simple, advanced or vgg16.")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Train up to this many epochs (default: the recipe's; --resume: the run's)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per training step (default: the recipe's).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: the recipe's; lab: the model's).")
    ] = None,
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
    recipe: RecipeOpt = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="Learning rate per step: none, onecycle, cosine (default: recipe's)."),
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing of the training loss, e.g. 0.1.")
    ] = None,
    amp: AmpOpt = False,
    augment: Annotated[
        str | None,
        typer.Option(
            help="Augmentations, comma-separated: flip, scale, shift, brightness, contrast, "
            "gamma, blur, noise (RGB: hue, saturation, stain), NAME=STRENGTH; lab (none) or "
            "robust (default: the recipe's)."
        ),
    ] = None,
) -> None:
    """Train one model, with live progress, into a new run folder.

    --recipe lab (the default) is the lab's: 5 epochs at batch 8, the model's learning rate.
    --recipe fast: 3 epochs at batch 64, OneCycle to an lr-find peak, label smoothing 0.1.
    --recipe robust: the robust augmentations, 15 epochs, cosine from 1e-3: for other labs' cells.
    --epochs, --batch-size, --lr, --schedule, --label-smoothing and --augment override the
    recipe's.
    """
    from bloodcells.cli.flags import SIZE_FLAG, as_flags
    from bloodcells.runs import resume_training
    from bloodcells.training import TrainConfig

    with as_flags(
        *TRAIN_FLAGS, image_size="--size", data_root="--data", renamed=SIZE_FLAG | RGB_HINT
    ):
        if resume is not None:
            _refuse_with_resume(
                {
                    "--model": model,
                    "--batch-size": batch_size,
                    "--lr": lr,
                    "--seed": seed,
                    "--size": size,
                    "--rgb/--gray": rgb,
                    "--bn2": bn2 or None,
                    "--head-dropout": head_dropout,
                    "--extra-fc": extra_fc,
                    "--pretrained": pretrained or None,
                    "--recipe": recipe,
                    "--schedule": schedule,
                    "--label-smoothing": label_smoothing,
                    "--amp": amp or None,
                    "--augment": augment,
                }
            )
            with _interruptible(resume):
                progress = _progress(resume.name, plot, resume)
                run = resume_training(resume, epochs, callbacks=progress, data_root=data)
        else:
            data = _required(data)
            model = model or "advanced"
            config = TrainConfig(
                model=model,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=0 if seed is None else seed,
                device=device,
                image_size=32 if size is None else size,
                channels=_channels(model, rgb),
                options=_options(
                    bn2=bn2, head_dropout=head_dropout, extra_fc=extra_fc, pretrained=pretrained
                ),
                recipe=recipe or "lab",
                schedule=schedule,
                label_smoothing=label_smoothing,
                amp=amp,
                augment=augment,
            )
            run = _start(config, _training_data(config, data), out_dir=out_dir, plot=plot)
    m = run.metrics
    out.print(
        Text.assemble(
            bold(run.name),
            f": dev accuracy {m.accuracy:.3f} (chance {m.chance:.3f}), "
            f"balanced {m.balanced_accuracy:.3f}, {m.train_seconds:.1f} s",
        )
    )
    out.print(str(run.path))


def _refuse_with_resume(settings: dict[str, object]) -> None:
    """A one-line error naming the options given (not None) that --resume cannot take."""
    given = [flag for flag, value in settings.items() if value is not None]
    if given:
        raise BloodcellsError(
            f"--resume continues a run with its own settings; drop {', '.join(given)} "
            "(only --epochs, --data, --plot go with --resume)"
        )


def _required(data: Path | None) -> Path:
    """--data, which a new training needs."""
    if data is None:
        raise BloodcellsError("--data is required (or --resume RUN); see bloodcells train --help")
    return data


def _channels(model: str, rgb: bool | None) -> int:
    """--rgb (3) or --gray (1); neither: the model's own colour mode."""
    from bloodcells.models.registry import get_spec

    return get_spec(model).channels if rgb is None else (3 if rgb else 1)


def _options(**options: object) -> dict:
    """The model options that are on (a flag given, a value other than None or 0)."""
    return {name: value for name, value in options.items() if value}


def _training_data(config: TrainConfig, data: Path) -> Splits:
    """`data` as `config` trains on it, read after every check that needs no data: the
    device, amp, and the model at config's image size (built on the meta device)."""
    from bloodcells.data import Transform, load_dataset
    from bloodcells.training.config import check_buildable
    from bloodcells.utils.devices import select_device
    from bloodcells.utils.validation import check_amp

    check_amp(config.amp, select_device(config.device))
    check_buildable(config)
    return load_dataset(data, Transform(config.image_size, config.channels))


def _start(config: TrainConfig, splits: Splits, *, out_dir: Path, plot: bool) -> Run:
    """Train `config` on `splits` into a new run folder under `out_dir`, with progress."""
    from bloodcells.runs import new_run_dir, start_training
    from bloodcells.utils.files import output_folder

    run_dir = new_run_dir(output_folder(out_dir), config.model)
    out.print(
        f"training {config.model} on {splits.root} ({len(splits.train)} train, "
        f"{len(splits.test)} test, {len(splits.classes)} classes) → {run_dir}"
    )
    with _interruptible(run_dir):
        progress = _progress(config.model, plot, run_dir)
        return start_training(splits, config, callbacks=progress, run_dir=run_dir)


def _progress(label: str, plot: bool, run_dir: Path) -> list:
    from bloodcells.viz.live import PlotFiles, TerminalProgress

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


@app.command("lr-find")
def lr_find_cmd(
    data: DataOpt = None,
    model: Annotated[str, typer.Option("--model", "-m", help="simple, advanced or vgg16.")] = (
        "advanced"
    ),
    recipe: Annotated[
        str, typer.Option(help="The recipe whose batch size and label smoothing to use.")
    ] = "fast",
    batch_size: Annotated[
        int | None, typer.Option(help="Images per step (default: the recipe's).")
    ] = None,
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-6,
    end: Annotated[
        float, typer.Option(help="Last learning rate (stops early on a blow-up).")
    ] = 1.0,
    steps: Annotated[int, typer.Option(min=10, max=10_000, help="Steps (one rate each).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and shuffles.")] = 0,
    device: DeviceOpt = None,
    size: Annotated[int | None, typer.Option(help="Resize images to SIZE×SIZE.")] = None,
    rgb: Annotated[
        bool | None, typer.Option("--rgb/--gray", help="Colour mode (default: the model's).")
    ] = None,
    output: Annotated[Path | None, figure_output("lr_find.png")] = None,
) -> None:
    """The learning-rate range test: loss against a rising learning rate, and a suggestion.

    Trains a fresh model one step per rate, rates rising geometrically from --start to --end,
    and suggests a third of the rate where the smoothed loss bottoms out: a peak for
    --schedule onecycle (train --recipe fast --lr). Nothing is saved but the plot (-o).
    """
    from bloodcells.training import TrainConfig
    from bloodcells.training.lr_find import lr_find_figure, lr_range_test
    from bloodcells.utils.files import output_file

    target = output_file(output, "lr_find.png") if output is not None else None
    data = _required(data)
    config = TrainConfig(
        model=model,
        batch_size=batch_size,
        seed=seed,
        device=device,
        image_size=32 if size is None else size,
        channels=_channels(model, rgb),
        recipe=recipe,
    )
    splits = _training_data(config, data)
    err.print(
        f"LR range test: {config.model}, batch {config.batch_size}, "
        f"label smoothing {config.label_smoothing:g}, {len(splits.train)} images, "
        f"rates {start:g} to {end:g} in {steps} steps"
    )
    result = lr_range_test(splits.train, config, start, end, steps)
    table = Table(title="smoothed training loss", title_justify="left")
    table.add_column("learning rate", justify="right")
    table.add_column("loss", justify="right")
    every = max(1, len(result.lrs) // 12)
    for lr, loss in list(zip(result.lrs, result.smoothed, strict=True))[::every]:
        table.add_row(f"{lr:.2g}", f"{loss:.4f}")
    out.print(table)
    out.print(
        f"minimum of the smoothed loss at lr {result.minimum:.3g}; "
        f"steepest descent at lr {result.steepest:.3g}"
    )
    out.print(
        Text.assemble("suggested peak learning rate: ", bold(f"{result.suggestion:.3g}")),
    )
    out.print(
        f"e.g. bloodcells train --data {splits.root} --model {config.model} --recipe fast "
        f"--lr {result.suggestion:.2g}"
    )
    if target is not None:
        from bloodcells.viz.grids import save_figure

        title = f"{config.model}, batch {config.batch_size}, {splits.root.name}"
        out.print(str(save_figure(lr_find_figure(result, title), target)))


@app.command("evaluate")
def evaluate_cmd(
    run: RunArg,
    data: RunDataOpt = None,
    device: DeviceOpt = None,
    tta: TtaOpt = False,
    adapt_bn: Annotated[
        bool,
        typer.Option(
            "--adapt-bn",
            help="Re-estimate BatchNorm statistics on the test images first (the run is kept).",
        ),
    ] = False,
    find_cells: Annotated[
        bool,
        typer.Option(
            "--find-cells",
            help="--data holds whole fields: cut each field's centre cell as the run's "
            "training crops were cut, then evaluate.",
        ),
    ] = False,
) -> None:
    """Accuracy, balanced accuracy, per-class scores and the confusion matrix of a run."""
    from bloodcells.analysis.evaluate import evaluate_run
    from bloodcells.cli.flags import as_flags
    from bloodcells.evaluation.metrics import row_percentages
    from bloodcells.runs.folder import load_run

    loaded = load_run(run)
    if loaded.interrupted:
        err.print(
            f"note: {run} was interrupted at epoch {loaded.epochs_done} of "
            f"{loaded.epochs_target}; evaluating that epoch (finish it: "
            f"bloodcells train --resume {run})"
        )
    with as_flags("adapt_bn", "find_cells", data_root="--data"):
        m = evaluate_run(loaded, data, device, tta=tta, adapt_bn=adapt_bn, find_cells=find_cells)
    used = [name for name, on in (("TTA", tta), ("adapted BatchNorm", adapt_bn)) if on]
    how = f" with {' and '.join(used)}" if used else ""
    out.print(Text.assemble(bold(str(run)), f" on {m['data']} test split ({m['n']} images){how}"))
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
