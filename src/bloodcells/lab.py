"""The whole lab end to end: data, three models, comparison, predictions, Grad-CAM, one report.

`run_lab(LabConfig())` is what `make lab` and `bloodcells lab` run. Without data it uses the
built-in synthetic demo set (generated once into the user cache) and says so everywhere.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.data.synthetic import SynthConfig, ensure_demo_set
from bloodcells.errors import BloodcellsError
from bloodcells.models import MODELS, get_spec
from bloodcells.runs import Run, new_run_dir, start_training, versions
from bloodcells.train import Callback, TrainConfig, select_device

if TYPE_CHECKING:
    import torch

    from bloodcells.report import LabReport

LAB_MODELS = ("simple", "advanced", "vgg16")
LAB_EPOCHS = 5  # the lab's setting, used as is on a GPU
MAX_EPOCHS = 1000


@dataclass
class LabConfig:
    """What `bloodcells lab` runs; None means the lab's choice for this machine."""

    data: Path | None = None
    models: tuple[str, ...] = LAB_MODELS
    epochs: int | None = None  # None: 5, except VGG16 on a CPU (see cpu_plan)
    out: Path = Path("runs")
    seed: int = 0
    device: str | None = None
    vgg16_cpu_train_per_class: int = 120  # VGG16 on a CPU trains on this many images per class
    vgg16_cpu_epochs: int = 3
    cams: int = 6
    demo: SynthConfig = field(default_factory=SynthConfig)  # used when data is None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.epochs is not None and not 1 <= self.epochs <= MAX_EPOCHS:
            raise BloodcellsError(f"epochs must be between 1 and {MAX_EPOCHS}, not {self.epochs}")


@dataclass
class LabResult:
    """Where the lab wrote its report and the run of each model."""

    lab_dir: Path
    report: Path
    runs: dict[str, Run]
    synthetic: bool


def check_models(names: tuple[str, ...]) -> tuple[str, ...]:
    """The model names, or a BloodcellsError that lists the known ones."""
    for name in names:
        get_spec(name)
    if not names:
        raise BloodcellsError(f"no models given; known models: {', '.join(MODELS)}")
    return names


def plan(config: LabConfig, model: str, on_gpu: bool) -> tuple[TrainConfig, int | None, str]:
    """The training config for one model, its train subset per class (None: all) and a note."""
    epochs = config.epochs if config.epochs is not None else LAB_EPOCHS
    spec = get_spec(model)
    train = TrainConfig(
        model=model, epochs=epochs, seed=config.seed, device=config.device, channels=spec.channels
    )
    if model == "vgg16" and not on_gpu and config.epochs is None:
        train.epochs = config.vgg16_cpu_epochs
        per_class = config.vgg16_cpu_train_per_class
        note = (
            f"VGG16 on a CPU: trained {train.epochs} epochs on {per_class} training images per "
            f"class (the lab's 5 epochs on all images take a GPU); its dev set is complete"
        )
        return train, per_class, note
    return train, None, ""


def run_lab(
    config: LabConfig,
    callbacks_for: Callable[[str], list[Callback]] = lambda name: [],
    say: Callable[[str], None] = print,
) -> LabResult:
    """Run the lab in its order and write runs/<time>-lab/report.html; return where."""
    from bloodcells import figures
    from bloodcells.report import LabReport

    models = check_models(config.models)
    device = select_device(config.device)
    plans = {name: plan(config, name, device.type == "cuda") for name in models}  # checks seed
    synthetic = config.data is None
    root = ensure_demo_set(config.demo, say) if synthetic else Path(config.data)
    gray = load_dataset(root, Transform(32, 1))  # the data layer's errors come before training
    lab_dir = new_run_dir(config.out, "lab")
    report = LabReport(
        lab_dir / "report.html",
        title="CNN Lab 1: classification of human blood cells",
        synthetic=synthetic,
        meta={
            "command": shlex.join(["bloodcells", *sys.argv[1:]]),
            "data": str(root),
            "seed": config.seed,
            "device": str(device),
            "versions": versions(),
        },
    )
    if synthetic:
        from bloodcells.data.synthetic import SYNTHETIC_NOTICE

        say(SYNTHETIC_NOTICE)
    report.set_dataset(gray.summary(), figures.figure_png(figures.sample_grid(gray.train)))
    report.write(live=True)
    say(f"report (updates while training): {report.path}")

    runs: dict[str, Run] = {}
    for name, (train_config, per_class, note) in plans.items():
        splits = gray if train_config.channels == 1 else load_dataset(root, Transform(32, 3))
        if per_class is not None:
            splits = splits.train_subset(per_class, config.seed)
        if note:
            say(note)
            report.add_note(note)
        say(f"training {name}: {train_config.epochs} epochs, {len(splits.train)} images")
        start = time.perf_counter()
        run = start_training(
            splits,
            train_config,
            callbacks=[report.model_callback(name), *callbacks_for(name)],
            run_dir=new_run_dir(lab_dir, name),
        )
        runs[name] = run
        report.set_model_result(
            name,
            metrics=run.metrics,
            parameters=run.info["parameters"],
            seconds=time.perf_counter() - start,
            epochs=len(run.history),
            run_dir=str(run.path),
        )
        report.write(live=True)

    _explain(report, runs, gray, root, config, device, say)
    report.finish()
    return LabResult(lab_dir, report.path, runs, synthetic)


def _explain(
    report: LabReport,
    runs: dict[str, Run],
    gray: Splits,
    root: Path,
    config: LabConfig,
    device: torch.device,
    say: Callable[[str], None],
) -> None:
    """Predictions, top losses and Grad-CAM of the advanced CNN (or the last model trained)."""
    from bloodcells import explain, figures
    from bloodcells.metrics import most_confused

    name = "advanced" if "advanced" in runs else next(reversed(runs))
    run = runs[name]
    dev = gray.test if run.config.channels == 1 else run.load_data(root).test
    model = run.load_model(device)
    say(f"predictions, mistakes and Grad-CAM of the {name} model")
    report.set_predictions(
        figures.figure_png(figures.prediction_grid(model, dev, seed=config.seed, device=device))
    )
    pairs = most_confused(run.metrics["confusion_matrix"], run.classes)
    report.set_mistakes(
        figures.figure_png(figures.top_losses_figure(model, dev, device=device)), pairs
    )
    cam = explain.gradcam_figure(model, dev, n=config.cams, seed=config.seed, device=device)
    report.set_gradcam(figures.figure_png(cam), f"Grad-CAM of the {name} model on dev images")
