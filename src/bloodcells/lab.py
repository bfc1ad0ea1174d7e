"""The whole lab end to end: data, three models, comparison, predictions, Grad-CAM, one report.

`run_lab(LabConfig())` is what `make lab` and `bloodcells lab` run. Without data it uses the
built-in synthetic demo set (generated once into the user cache) and says so everywhere.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bloodcells._version import versions
from bloodcells.data import Transform, load_dataset
from bloodcells.data.sources.synthetic import SYNTHETIC_NOTICE, SynthConfig, ensure_demo_set
from bloodcells.errors import BloodcellsError
from bloodcells.models.registry import MODELS, get_spec
from bloodcells.report.render import PAGE, STOPPED, render
from bloodcells.report.sources import explained_run, load
from bloodcells.runs import Run, load_run, new_run_dir, start_training
from bloodcells.training import Callback, FitState, TrainConfig
from bloodcells.utils.devices import select_device
from bloodcells.utils.files import write_atomic
from bloodcells.utils.validation import check_epochs

LAB_TITLE = "CNN Lab 1: classification of human blood cells"
LAB_MODELS = ("simple", "advanced", "vgg16")
ROBUSTNESS_CPU_PER_CLASS = 50


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
    recipe: str = "lab"  # training.recipes: the lab's own settings unless asked otherwise

    def __post_init__(self) -> None:
        if self.epochs is not None:
            check_epochs(self.epochs)


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
    spec = get_spec(model)
    train = TrainConfig(
        model=model,
        epochs=config.epochs,  # None: the recipe's (the lab's 5)
        seed=config.seed,
        device=config.device,
        channels=spec.channels,
        recipe=config.recipe,
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


def robustness_of(run: Run, device: torch.device) -> dict:
    """`bloodcells robustness` of `run`, as saved in lab.json; VGG16 on a CPU on a subset of
    the dev set (ROBUSTNESS_CPU_PER_CLASS images per class) to keep the lab's minutes."""
    from bloodcells.analysis.robustness import robustness

    per_class = None
    if run.config.model == "vgg16" and device.type != "cuda":
        per_class = ROBUSTNESS_CPU_PER_CLASS
    return robustness(run, device=str(device), per_class=per_class).to_dict()


class LabPage(Callback):
    """folder/report.html, rendered from the folder's runs and extras (report.render); as a
    fit() callback, rendered again after every epoch, live (refreshing) until a fit stops."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / PAGE
        self._runs: dict[Path, tuple[tuple, Run]] = {}  # a run is read again when it changed

    def write(self, live: bool) -> Path:
        runs, extras = load([self.folder], self._load)
        write_atomic(self.path, render(runs, extras, live=live))
        return self.path

    def on_fit_start(self, state: FitState) -> None:
        self.write(live=True)

    def on_epoch_end(self, state: FitState) -> None:
        self.write(live=True)

    def on_fit_end(self, state: FitState) -> None:
        self.write(live=state.status not in STOPPED)  # the next model may follow

    def _load(self, path: Path) -> Run:
        stamp = tuple((f.name, f.stat().st_mtime_ns) for f in sorted(path.iterdir()))
        if path not in self._runs or self._runs[path][0] != stamp:
            self._runs[path] = (stamp, load_run(path))
        return self._runs[path][1]


def run_lab(
    config: LabConfig,
    callbacks_for: Callable[[str], list[Callback]] = lambda name: [],
    say: Callable[[str], None] = print,
) -> LabResult:
    """Run the lab in its order into runs/<time>-lab/ and return where its report is.

    The lab folder holds a run folder per model and the lab's extras (lab.json, figures/):
    report.html is rendered from them after every epoch, and `bloodcells report LAB` makes
    the same page again.
    """
    from bloodcells.report.sources import Extras, Image, add_explanations, save_extras
    from bloodcells.viz.grids import figure_png, sample_grid

    models = check_models(config.models)
    device = select_device(config.device)
    plans = {name: plan(config, name, device.type == "cuda") for name in models}  # checks seed
    synthetic = config.data is None
    root = ensure_demo_set(config.demo, say) if synthetic else Path(config.data)
    gray = load_dataset(root, Transform(32, 1))  # the data layer's errors come before training
    lab_dir = new_run_dir(config.out, "lab")
    samples = figure_png(sample_grid(gray.train, seed=config.seed))
    extras = Extras(
        title=LAB_TITLE,
        synthetic=synthetic,
        dataset=gray.summary(),
        notes=list(config.notes),
        meta={
            "command": shlex.join(["bloodcells", *sys.argv[1:]]),
            "data": str(root),
            "seed": config.seed,
            "device": str(device),
            "versions": versions(),
        },
        planned={name: train.epochs for name, (train, _, _) in plans.items()},
        images={"samples": Image(samples, "Sample images per class.")},
    )
    page = LabPage(lab_dir)
    save_extras(lab_dir, extras)
    page.write(live=True)
    if synthetic:
        say(SYNTHETIC_NOTICE)
    say(f"report (updates while training): {page.path}")

    runs: dict[str, Run] = {}
    try:
        for name, (train_config, per_class, note) in plans.items():
            splits = gray if train_config.channels == 1 else load_dataset(root, Transform(32, 3))
            if per_class is not None:
                splits = splits.train_subset(per_class, config.seed)
            if note:
                say(note)
                extras.notes.append(note)
                save_extras(lab_dir, extras)
            say(f"training {name}: {train_config.epochs} epochs, {len(splits.train)} images")
            runs[name] = start_training(
                splits,
                train_config,
                callbacks=[page, *callbacks_for(name)],
                run_dir=new_run_dir(lab_dir, name),
            )
        explained = explained_run(list(runs.values()))
        say(f"predictions, mistakes and Grad-CAM of the {explained.config.model} model")
        add_explanations(extras, explained, str(device), config.seed, config.cams)
        best = max(runs.values(), key=lambda run: run.metrics.accuracy or 0.0)
        say(f"robustness of the best model, {best.config.model}, under shifts of its dev set")
        extras.robustness = robustness_of(best, device)
    except BaseException as exc:  # Ctrl-C too: the page says why it ends here, and stops
        extras.notes.append(f"The lab stopped early: {type(exc).__name__}: {exc}")
        raise
    finally:
        save_extras(lab_dir, extras)
        page.write(live=False)
    return LabResult(lab_dir, page.path, runs, synthetic)
