"""The robustness benchmark: a run's dev accuracy under a fixed family of image shifts.

Like ImageNet-C, for cells: each shift below at 3 severities, computed from the dev images and
fixed by a seed, so every run is measured on the same images. The shifts are made on the
images as RGB, on the CPU, and stored as 8 bits, as another lab's files would be; a grayscale
model then sees them converted to gray exactly as the data loader converts (PIL's "L"). So a
gray model meets the stain and hue shifts too, as it would meet them in another lab, and gray
and RGB models of one dataset are measured on the same shifted images. Hue and stain are left
out (and said so) only when the source images themselves are gray.

============ ====================== =========================================================
shift        severities 1, 2, 3     what changes
============ ====================== =========================================================
scale_down   zoom ×0.85, ×0.75, ×0.65 cells smaller in the frame (border pixels fill the edge)
scale_up     zoom ×1.15, ×1.33, ×1.5  cells larger in the frame (zoom about the centre)
blur         σ 0.5, 1, 1.5 px       defocus (Gaussian)
noise        σ 0.03, 0.06, 0.1      Gaussian noise per pixel and channel ([0, 1] range)
brightness   ×1.15, ×1.3, ×1.5      overexposure: brighter, clipped at white
contrast     ×0.7, ×0.5, ×0.3       washed out: distance from the image mean scaled
gamma        γ 0.67, 0.5, 0.33      x ** γ: midtones brighter (a camera's gamma)
jpeg         quality 50, 30, 10     JPEG compression (PIL)
hue          ±0.05, ±0.1, ±0.15 turn the hue rotated, the sign random per image
stain        ±0.15, ±0.3, ±0.5      each HED stain amount × (1 ± level), signs random per
                                    image and stain (Ruifrok-Johnston deconvolution)
============ ====================== =========================================================

Brightness and contrast would change nothing at all after the lab's per-image standardization
(see bloodcells.augment); what they measure is clipping and 8-bit rounding. Expect them near
the clean accuracy: they are in the family because the other labs' images do differ so, and a
model that fails them has a bug, not a weakness.

Hue turns about the luma axis, which is exactly what the gray conversion keeps, so for a gray
model it is no shift at all (8-bit rounding aside); stain is one.

The mean over all shifts and severities is the headline number ("mean under shift").
"""

from __future__ import annotations

import html
import io
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from bloodcells.adapt import adapt_batchnorm, require_batchnorm, tta_probabilities
from bloodcells.augment import (
    adjust_gamma,
    gaussian_blur,
    rotate_hue,
    scale_contrast,
    stain_jitter,
    zoom_shift,
)
from bloodcells.data import Dataset, Transform, load_dataset, standardize, to_unit
from bloodcells.devices import select_device
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation import predict_logits

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from bloodcells.runs import Run

# The family's name and version: results of different versions are not comparable (bump it
# whenever a shift, a level, or the code that makes the images changes).
FAMILY = "bloodcells-shifts-1"
SEED = 0  # the seed of the random parts (noise, hue and stain directions): fixed, documented
SEVERITIES = (1, 2, 3)
CHUNK = 2048  # images shifted at a time: only memory depends on it
MAX_PER_CLASS = 1_000_000
MODES = ("plain", "tta", "adapt-bn", "tta+adapt-bn")


@dataclass(frozen=True)
class Shift:
    """One shift of the family: its levels at severities 1-3 and how it is made."""

    name: str
    levels: tuple[float, float, float]
    label: str  # the level as the table shows it: label.format(level)
    description: str
    needs_colour: bool = False

    def level_label(self, severity: int) -> str:
        return self.label.format(self.levels[severity - 1])


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("scale_down", (0.85, 0.75, 0.65), "zoom ×{:g}", "cells smaller in the frame"),
        Shift("scale_up", (1.15, 1.33, 1.5), "zoom ×{:g}", "cells larger in the frame"),
        Shift("blur", (0.5, 1.0, 1.5), "σ {:g} px", "defocus (Gaussian blur)"),
        Shift("noise", (0.03, 0.06, 0.1), "σ {:g}", "Gaussian noise per pixel and channel"),
        Shift("brightness", (1.15, 1.3, 1.5), "×{:g}", "overexposure, clipped at white"),
        Shift("contrast", (0.7, 0.5, 0.3), "×{:g}", "washed out: contrast scaled"),
        Shift("gamma", (0.67, 0.5, 0.33), "γ {:g}", "x ** γ: midtones brighter"),
        Shift("jpeg", (50, 30, 10), "quality {:g}", "JPEG compression"),
        Shift("hue", (0.05, 0.1, 0.15), "±{:g} turn", "hue rotated", needs_colour=True),
        Shift("stain", (0.15, 0.3, 0.5), "±{:g}", "HED stain amounts scaled", needs_colour=True),
    )
}


# -- making the shifted images ----------------------------------------------------------------


def shift_seed(name: str, severity: int, seed: int = SEED) -> int:
    """The generator seed of one shift at one severity: independent of which others run.

    32 bits (a CPU generator uses no more), from `seed`, the shift's name and the severity.
    """
    return zlib.crc32(f"{seed}:{name}:{severity}".encode())


def shift_images(images: torch.Tensor, name: str, severity: int, seed: int = SEED) -> torch.Tensor:
    """`images` (N×C×H×W, uint8 or floats in [0, 1]) under shift `name` at `severity` 1-3.

    Computed on the CPU and returned in the images' own dtype (8-bit images are rounded back
    to 8 bits), so the result depends only on the images, the shift and `seed`.
    """
    shift = SHIFTS.get(name)
    if shift is None:
        raise BloodcellsError(f"unknown shift {name!r}; the shifts: {', '.join(SHIFTS)}")
    if severity not in SEVERITIES:
        raise BloodcellsError(f"severity must be 1, 2 or 3, not {severity!r}")
    if shift.needs_colour and images.shape[1] != 3:
        raise BloodcellsError(f"the {name} shift needs RGB images, not {images.shape[1]} channel")
    level = shift.levels[severity - 1]
    generator = torch.Generator().manual_seed(shift_seed(name, severity, seed))
    parts = [
        _shift_chunk(images[i : i + CHUNK].cpu(), name, level, generator)
        for i in range(0, len(images), CHUNK)
    ]
    return torch.cat(parts) if parts else images.cpu().clone()


def _shift_chunk(
    images: torch.Tensor, name: str, level: float, generator: torch.Generator
) -> torch.Tensor:
    if name == "jpeg":
        return _from_uint8(jpeg(_to_uint8(images), int(level)), images.dtype)
    x, n = to_unit(images), len(images)
    full = torch.full((n,), float(level))
    if name in ("scale_down", "scale_up"):
        x = zoom_shift(x, full)
    elif name == "blur":
        x = gaussian_blur(x, full)
    elif name == "noise":
        x = x + level * torch.randn(x.shape, generator=generator)
    elif name == "brightness":
        x = x * level
    elif name == "contrast":
        x = scale_contrast(x, full)
    elif name == "gamma":
        x = adjust_gamma(x, full)
    elif name == "hue":
        x = rotate_hue(x, level * _signs(generator, n))
    elif name == "stain":
        x = stain_jitter(x, 1 + level * _signs(generator, n, 3), torch.zeros(n, 3))
    return _from_unit(x.clamp(0, 1), images.dtype)


def _signs(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(2, shape, generator=generator).float() * 2 - 1


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images
    return to_unit(images).mul(255).round().clamp(0, 255).to(torch.uint8)


def _from_uint8(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return images if dtype == torch.uint8 else to_unit(images).to(dtype)


def _from_unit(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return x.mul(255).round().clamp(0, 255).to(torch.uint8)
    return x.to(dtype)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 images (N×1 or N×3 ×H×W) JPEG-encoded at `quality` and decoded again (PIL)."""
    array = images.permute(0, 2, 3, 1).numpy()
    out = np.empty_like(array)
    for i, image in enumerate(array):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert(pil.mode)).reshape(image.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB images as the data loader would give them in `channels` (1: PIL's "L", exactly)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] != 3 or channels != 1:
        raise BloodcellsError(f"cannot turn {images.shape[1]}-channel images into {channels}")
    if (
        images.dtype == torch.uint8
    ):  # PIL's integer formula: L = (19595 R + 38470 G + 7471 B) / 2^16
        weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
        gray = ((images.int() * weights).sum(1, keepdim=True) + 0x8000) >> 16
        return gray.to(torch.uint8)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).to(images.dtype)


def is_gray(images: torch.Tensor) -> bool:
    """Whether RGB `images` have no colour (R = G = B everywhere)."""
    return images.shape[1] == 1 or bool(
        (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()
    )


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
        raise BloodcellsError(f"--per-class must be a whole number, not {per_class!r}")
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise BloodcellsError(f"--per-class must be 1 to {MAX_PER_CLASS}, not {per_class}")


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


# -- the figure -------------------------------------------------------------------------------


def robustness_figure(result: RobustnessResult, metric: str = "accuracy") -> go.Figure:
    """A heatmap per mode: shifts down, severities across, `metric` (accuracy or
    balanced_accuracy) as colour and text; chance at the bottom of the scale."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if metric not in ("accuracy", "balanced_accuracy"):
        raise BloodcellsError(f"metric must be accuracy or balanced_accuracy, not {metric!r}")
    shifts = result.shifts
    titles = [
        f"{mode}: mean {getattr(result.mean(mode), metric):.1%}, "
        f"clean {getattr(result.clean[mode], metric):.1%}"
        for mode in result.modes
    ]
    fig = make_subplots(
        rows=1,
        cols=len(result.modes),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=titles,
    )
    chance = 1 / max(len(result.classes), 2)
    for col, mode in enumerate(result.modes, start=1):
        z = [[getattr(s, metric) for s in result.scores[mode][name]] for name in shifts]
        levels = [[SHIFTS[name].level_label(s) for s in SEVERITIES] for name in shifts]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[f"severity {s}" for s in SEVERITIES],
                y=shifts,
                text=[[f"{v:.0%}" for v in row] for row in z],
                texttemplate="%{text}",
                customdata=levels,
                hovertemplate=(
                    "%{y} (%{customdata}): " + metric.replace("_", " ") + " %{z:.1%}<extra></extra>"
                ),
                coloraxis="coloraxis",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font_size=13)  # the subplot titles
    fig.update_layout(
        template="none",
        title={
            "text": html.escape(
                f"{metric.replace('_', ' ')} under shift: {result.model} ({result.n} dev images)",
                quote=False,
            ),
            "x": 0,
            "xref": "paper",
        },
        coloraxis={
            "colorscale": "RdYlGn",
            "cmin": chance,
            "cmax": 1,
            "colorbar": {"tickformat": ".0%", "thickness": 12},
        },
        height=120 + 32 * len(shifts),
        margin={"l": 90, "r": 20, "t": 90, "b": 50},
        paper_bgcolor="white",
        plot_bgcolor="white",
    )
    return fig
