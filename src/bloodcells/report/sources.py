"""The report page's sources: what a page shows besides its runs, and where it comes from.

`load(paths)` reads run folders (or a folder of them, as a lab's) and, for one folder, the
`Extras` a lab keeps there (lab.json, figures/; `save_extras`, `read_extras`);
`add_explanations` makes the figures a page lacks from one run. `report.render` draws the page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bloodcells.errors import BloodcellsError, RunError
from bloodcells.experiments.compare import compare_paths, load_comparison
from bloodcells.experiments.plan import is_sweep
from bloodcells.runs import Run, load_run
from bloodcells.runs.record import CHECKPOINT, CONFIG, HISTORY, METRICS, WEIGHTS
from bloodcells.utils.files import write_atomic

MAX_RUNS = 200  # on one page: each run adds two figures, and reading one reads its checkpoint
LAB_FILE, FIGURES = "lab.json", "figures"
IMAGES = ("samples", "predictions", "top_losses", "gradcam")  # the extra images, by name


@dataclass
class Image:
    """A PNG the page embeds, and what it shows."""

    png: bytes
    caption: str = ""


@dataclass
class Extras:
    """What a page shows besides its runs; a lab keeps them in its folder (`save_extras`)."""

    title: str = "bloodcells report"
    synthetic: bool = False  # the built-in demo set: a banner says the numbers mean nothing
    dataset: dict | None = None  # Splits.summary()
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # command, data, seed, device, versions
    planned: dict[str, int] = field(default_factory=dict)  # the lab's models: their epochs
    explained: str | None = None  # the run folder that predictions, mistakes, CAMs are of
    images: dict[str, Image] = field(default_factory=dict)  # keyed by IMAGES
    robustness: dict | None = None  # bloodcells robustness of the best run (RobustnessResult)
    comparison: dict | None = None  # not saved: a sweep folder's variants compared
    sources: list[str] = field(default_factory=list)  # not saved: the folders given to `load`
    skipped: list[str] = field(default_factory=list)  # not saved: notes on what is missing
    left_out: list[tuple[str, str]] = field(default_factory=list)  # not saved: (run folder, why)


SAVED = ("title", "synthetic", "dataset", "notes", "meta", "planned", "explained", "robustness")


def save_extras(folder: Path, extras: Extras) -> None:
    """Write `extras` into `folder`: figures/<name>.png and lab.json, each atomically."""
    (folder / FIGURES).mkdir(parents=True, exist_ok=True)
    for name, image in extras.images.items():
        write_atomic(folder / FIGURES / f"{name}.png", image.png)
    saved = {name: getattr(extras, name) for name in SAVED}
    saved["images"] = {name: image.caption for name, image in extras.images.items()}
    write_atomic(folder / LAB_FILE, json.dumps(saved, indent=2))


def read_extras(folder: Path) -> Extras | None:
    """The extras saved in `folder`, or None when it has none."""
    file = folder / LAB_FILE
    if not file.is_file():
        return None
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
        extras = Extras(**{name: saved[name] for name in SAVED if name in saved})
        captions = dict(saved.get("images", {}))
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise RunError(
            f"{file}: unreadable ({type(exc).__name__}); the lab folder is damaged"
        ) from exc
    for name in IMAGES:
        if name in captions and (folder / FIGURES / f"{name}.png").is_file():
            png = (folder / FIGURES / f"{name}.png").read_bytes()
            extras.images[name] = Image(png, str(captions[name]))
    return extras


def load(
    paths: Sequence[str | Path], load_one: Callable[[Path], Run] = load_run
) -> tuple[list[Run], Extras]:
    """The runs in `paths` (run folders, or folders holding them, as a lab's does) and, when
    one folder is given, its extras. A RunError names a path that holds no run; a damaged run
    in a folder of runs is left out, and Extras.left_out says which and why."""
    if not paths:
        raise RunError("no run folders given")
    runs: dict[Path, Run] = {}
    extras, left_out = None, []
    for path in map(Path, paths):
        lab = None
        if (path / CONFIG).is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if (p / CONFIG).is_file())
            left_out += [
                (str(p), f"no {CONFIG}; the run folder is damaged") for p in _headless(path)
            ]
            lab = read_extras(path)
            if not found and lab is None:
                raise RunError(
                    f"{path}: not a run folder, nor a folder of run folders (no {CONFIG} in it "
                    "or its subfolders); bloodcells train and bloodcells lab make them"
                )
        else:
            what = "not a folder" if path.exists() else "no such folder"
            raise RunError(f"{path}: {what}; give run folders or a lab's folder")
        if len(runs) + len(found) > MAX_RUNS:
            raise RunError(f"{path}: more than {MAX_RUNS} runs for one page; give fewer")
        for folder in found:
            try:
                runs.setdefault(folder.resolve(), load_one(folder))
            except RunError as exc:  # in a folder of runs: damaged, or killed before epoch 1
                if folder == path:
                    raise
                left_out.append((str(folder), _reason(exc, folder)))
        extras = lab if len(paths) == 1 else None
    extras = extras or Extras()
    extras.sources, extras.left_out = [str(p) for p in paths], left_out
    if len(paths) == 1 and is_sweep(paths[0]):
        extras.comparison = _sweep_comparison(Path(paths[0]), extras)
    return list(runs.values()), extras


def _headless(folder: Path) -> list[Path]:
    """Subfolders with a run's files but no config.json: runs whose config was lost."""
    return sorted(
        p
        for p in folder.iterdir()
        if not (p / CONFIG).is_file()
        and any((p / f).is_file() for f in (HISTORY, METRICS, WEIGHTS, CHECKPOINT))
    )


def _reason(exc: RunError, folder: Path) -> str:
    """The error without the run folder it starts with: "metrics.json: unreadable (...)"."""
    text = str(exc)
    for prefix in (f"{folder}/", f"{folder}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _sweep_comparison(folder: Path, extras: Extras) -> dict | None:
    """The sweep's comparison.json, else one made now; a note says why there is none."""
    try:
        return load_comparison(folder) or compare_paths([folder], save=False)
    except BloodcellsError as exc:
        extras.skipped.append(f"no comparison of the variants: {exc}")
        return None


def explained_run(runs: Sequence[Run], folder: str | None = None) -> Run:
    """The run whose predictions, mistakes and CAMs a page shows: the run folder named
    `folder`, else the first advanced CNN (the lab's choice), else the last run."""
    advanced = next((r for r in runs if r.config.model == "advanced"), runs[-1])
    return next((r for r in runs if r.name == folder), advanced)


def add_explanations(
    extras: Extras, run: Run, device: str | None = None, seed: int = 0, cams: int = 6
) -> None:
    """Add what `extras` lacks, made from `run`: predictions, top losses and Grad-CAM of its
    model on its dev images, its dataset's summary and sample images. Every figure is made
    here, by the module that owns it (adapt a call here when a signature changes)."""
    from bloodcells.evaluation.core import evaluate
    from bloodcells.utils.devices import select_device
    from bloodcells.viz.cams import gradcam_figure
    from bloodcells.viz.grids import figure_png, prediction_grid, sample_grid, top_losses_figure

    device_ = str(select_device(device))
    splits = run.load_data()
    dev, model, name = splits.test, run.load_model(device_), run.config.model
    extras.explained, extras.dataset = run.name, extras.dataset or splits.summary()
    makers = {
        "samples": lambda: sample_grid(splits.train, seed=seed),
        "predictions": lambda: prediction_grid(model, dev, seed=seed, device=device_),
        "top_losses": lambda: top_losses_figure(evaluate(model, dev, device_), dev),
        "gradcam": lambda: gradcam_figure(model, dev, n=cams, seed=seed, device=device_),
    }
    captions = {
        "samples": "Sample images per class.",
        "predictions": f"The {name} model on random dev images",
        "top_losses": f"The {name} model's most confidently wrong dev images",
        "gradcam": f"Grad-CAM of the {name} model on dev images",
    }
    for key, make in makers.items():
        if key not in extras.images:
            extras.images[key] = Image(figure_png(make()), captions[key])
