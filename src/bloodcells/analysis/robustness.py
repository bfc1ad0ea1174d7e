"""The robustness benchmark: a run's dev accuracy under the fixed family of image shifts.

The shifts themselves (what each one changes, at which severities, from which seed) are
bloodcells.ops.shifts. Here a run is measured clean and under every shift and severity, for each
way of predicting asked for (plain, tta, adapt-bn, tta+adapt-bn); the mean over all shifts and
severities is the headline number ("mean under shift").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bloodcells.analysis.adapt import adapt_batchnorm, require_batchnorm, tta_probabilities
from bloodcells.data import Dataset, Transform, load_dataset, standardize, to_unit
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import predict_logits
from bloodcells.ops.shifts import (
    FAMILY,
    SEED,
    SEVERITIES,
    SHIFTS,
    is_gray,
    shift_images,
    to_channels,
)
from bloodcells.utils.devices import select_device

if TYPE_CHECKING:
    from bloodcells.runs import Run

MAX_PER_CLASS = 1_000_000
MODES = ("plain", "tta", "adapt-bn", "tta+adapt-bn")


# -- the result -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    accuracy: float
    balanced_accuracy: float


@dataclass
class RobustnessResult:
    """Accuracy and balanced accuracy of one run, clean and under each shift and severity,
    for each way of predicting asked for (plain, tta, adapt-bn, tta+adapt-bn)."""

    run: str
    data: str
    model: str
    classes: list[str]
    channels: int
    n: int  # dev images measured
    seed: int
    modes: list[str]
    clean: dict[str, Score]  # mode -> score
    scores: dict[str, dict[str, list[Score]]]  # mode -> shift -> severities 1-3
    skipped: dict[str, str] = field(default_factory=dict)  # shift -> why it was not measured

    @property
    def shifts(self) -> list[str]:
        return [name for name in SHIFTS if name in self.scores[self.modes[0]]]

    def mean(self, mode: str = "plain") -> Score:
        """The mean over every shift and severity measured: the headline number."""
        scores = [s for per_shift in self.scores[mode].values() for s in per_shift]
        if not scores:
            return Score(math.nan, math.nan)
        return Score(
            sum(s.accuracy for s in scores) / len(scores),
            sum(s.balanced_accuracy for s in scores) / len(scores),
        )

    def to_dict(self) -> dict:
        """Everything as plain JSON-able values, the means included."""
        return {
            "family": FAMILY,
            "run": self.run,
            "data": self.data,
            "model": self.model,
            "classes": list(self.classes),
            "channels": self.channels,
            "n": self.n,
            "seed": self.seed,
            "modes": list(self.modes),
            "shifts": {
                name: {
                    "description": SHIFTS[name].description,
                    "levels": list(SHIFTS[name].levels),
                    "labels": [SHIFTS[name].level_label(s) for s in SEVERITIES],
                }
                for name in self.shifts
            },
            "skipped": dict(self.skipped),
            "results": {
                mode: {
                    "clean": _score_dict(self.clean[mode]),
                    "mean_under_shift": _score_dict(self.mean(mode)),
                    "shifts": {
                        name: [_score_dict(s) for s in per_shift]
                        for name, per_shift in self.scores[mode].items()
                    },
                }
                for mode in self.modes
            },
        }

    @classmethod
    def from_dict(cls, saved: dict) -> RobustnessResult:
        """A result as to_dict wrote it; a BloodcellsError for another family's."""
        family = saved.get("family") if isinstance(saved, dict) else None
        if family != FAMILY:
            raise BloodcellsError(
                f"robustness results of family {family!r}, not {FAMILY!r}: measure the run again"
            )
        try:
            return cls._from_dict(saved)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BloodcellsError(
                f"damaged robustness results ({type(exc).__name__}: {exc})"
            ) from exc

    @classmethod
    def _from_dict(cls, saved: dict) -> RobustnessResult:
        results = saved["results"]
        return cls(
            run=saved["run"],
            data=saved["data"],
            model=saved["model"],
            classes=list(saved["classes"]),
            channels=saved["channels"],
            n=saved["n"],
            seed=saved["seed"],
            modes=list(saved["modes"]),
            clean={m: Score(**results[m]["clean"]) for m in saved["modes"]},
            scores={
                m: {name: [Score(**s) for s in row] for name, row in results[m]["shifts"].items()}
                for m in saved["modes"]
            },
            skipped=dict(saved.get("skipped", {})),
        )


def _score_dict(score: Score) -> dict:
    return {"accuracy": score.accuracy, "balanced_accuracy": score.balanced_accuracy}


def score(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Score:
    """Accuracy, and balanced accuracy: the mean recall over the classes present (sklearn's)."""
    predictions, labels = predictions.cpu(), labels.cpu()
    if len(labels) == 0:
        return Score(0.0, 0.0)
    correct = (predictions == labels).float()
    hits = torch.zeros(num_classes).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = counts > 0
    return Score(float(correct.mean()), float((hits[present] / counts[present]).mean()))


# -- the benchmark ----------------------------------------------------------------------------


def modes_for(tta: bool, adapt_bn: bool) -> list[str]:
    """The ways of predicting measured: plain, then each asked for, then both together."""
    return [
        mode
        for mode, wanted in zip(MODES, (True, tta, adapt_bn, tta and adapt_bn), strict=True)
        if wanted
    ]


def robustness(
    run: Run | str | Path,
    data_root: str | Path | None = None,
    tta: bool = False,
    adapt_bn: bool = False,
    device: str | None = None,
    per_class: int | None = None,
    seed: int = SEED,
    progress: Callable[[int, int, str], None] | None = None,
) -> RobustnessResult:
    """Accuracy of a run's model on its dev set (or `data_root`'s test split), clean and
    under every shift of SHIFTS at every severity; with `tta` and/or `adapt_bn` also so.

    `per_class` measures at most that many dev images of each class (seeded), for a quick
    look at slow models. `progress(done, total, what)` hears about each condition. Neither the
    run folder nor the model it holds changes.
    """
    from bloodcells.runs import Run, load_run

    run = run if isinstance(run, Run) else load_run(run)
    check_per_class(per_class)
    device_ = select_device(device)
    model = run.load_model(device_)
    if adapt_bn:
        require_batchnorm(model, run.config.model)
    root, dev, source = _dev_images(run, data_root)
    if per_class is not None:
        dev, source = (d.per_class_subset(per_class) for d in (dev, source))
    colour = source.images.shape[1] == 3 and not is_gray(source.images)
    skipped = {
        name: "the images are gray" for name, s in SHIFTS.items() if s.needs_colour and not colour
    }
    measured = [name for name in SHIFTS if name not in skipped]
    modes = modes_for(tta, adapt_bn)
    k, labels = len(run.classes), dev.labels
    total, done = 1 + len(measured) * len(SEVERITIES), 0

    def measure(images: torch.Tensor) -> dict[str, Score]:
        x = standardize(to_unit(images.to(device_)))
        adapted = adapt_batchnorm(model, x) if adapt_bn else None
        out = {}
        for mode in modes:
            net = adapted if "adapt-bn" in mode else model
            if mode.startswith("tta"):
                predictions = tta_probabilities(net, x).argmax(1)
            else:
                predictions = predict_logits(net, x).argmax(1)
            out[mode] = score(predictions, labels, k)
        return out

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, what)

    clean = measure(dev.images)
    step("clean")
    scores: dict[str, dict[str, list[Score]]] = {mode: {} for mode in modes}
    for name in measured:
        for severity in SEVERITIES:
            shifted = to_channels(
                shift_images(source.images, name, severity, seed), run.config.channels
            )
            for mode, s in measure(shifted).items():
                scores[mode].setdefault(name, []).append(s)
            step(f"{name} {severity}")
    return RobustnessResult(
        run=str(run.path),
        data=str(root),
        model=run.config.model,
        classes=list(run.classes),
        channels=run.config.channels,
        n=len(dev),
        seed=seed,
        modes=modes,
        clean=clean,
        scores=scores,
        skipped=skipped,
    )


def check_per_class(per_class: int | None) -> None:
    if per_class is None:
        return
    if isinstance(per_class, bool) or not isinstance(per_class, int):
        raise BloodcellsError(f"per_class must be a whole number, not {per_class!r}")
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise BloodcellsError(f"per_class must be 1 to {MAX_PER_CLASS}, not {per_class}")


def _dev_images(run: Run, data_root: str | Path | None) -> tuple[Path, Dataset, Dataset]:
    """The data root, the dev split as the model reads it, and as RGB to make the shifts from
    (the same object when the model reads RGB). A RunError when the classes are not the run's."""
    splits = run.load_data(data_root)
    dev = splits.test
    if run.config.channels == 3:
        return splits.root, dev, dev
    with warnings.catch_warnings():  # the first load reported the same files' problems
        warnings.simplefilter("ignore")
        rgb = load_dataset(splits.root, Transform(run.config.image_size, 3)).test
    if rgb.paths != dev.paths:
        raise BloodcellsError(
            f"{splits.root}: the test images read as RGB are not those read as gray "
            "(a file changed while reading?); run it again"
        )
    return splits.root, dev, rgb
