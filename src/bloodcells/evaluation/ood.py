"""Unlike the training data: images a model's answer should not be trusted for.

Two simple scores, either of which flags an image `unlike-training`:

- the energy score, -logsumexp(logits) (evaluation.energy_score; Liu et al. 2020), above the
  threshold the run recorded: the 95th percentile of the dev set's scores, so 5% of the dev
  images are flagged by it by construction (both rules together flag more: flagged_share
  measures how many);
- brightness or contrast (the mean and standard deviation of the raw pixels in [0, 1])
  outside the 0.5th to 99.5th percentiles of the training images'.

The second exists because the model cannot see it: per-image standardization removes exactly
brightness and contrast, so pure noise, a flat grey patch or a page of text look, to the
network, like any other unit-variance image, and a small CNN often gives them a confident
class and a low energy. On pbc32 (advanced CNN, 3 epochs) the energy score alone flags a flat
grey patch but not uniform noise or black text on white; their brightness and contrast are far
outside the training range (noise: std 0.30 against at most 0.27; text: mean 0.92 to 0.95
against at most 0.79), so the second rule flags them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from bloodcells.data import to_unit
from bloodcells.evaluation.core import OOD_PERCENTILE, Evaluation, energy_score

PIXEL_PERCENTILES = (0.5, 99.5)
UNLIKE_TRAINING = (
    "energy score above the 95th percentile of the dev set's, or brightness or contrast "
    "outside the 0.5th to 99.5th percentiles of the training images'"
)
NO_ENERGY = "unlike-training by energy score is off: the model has no recorded threshold"
NO_PIXELS = "unlike-training by brightness and contrast is off: no training image statistics"
DEV_FLAGGED = "dev_flagged"  # the key of flagged_share of the dev images, beside the threshold


@dataclass(frozen=True)
class UnlikePolicy:
    """When an image counts as unlike the training data (see the module doc): set once, when
    a run is written, and read by predict and export as recorded."""

    score: str = "energy"
    percentile: float = OOD_PERCENTILE
    threshold: float | None = None  # energy score above which an image is flagged
    pixel_range: dict | None = None  # of the training images: see pixel_range
    dev_flagged: float | None = None  # the share of the dev images either rule flags

    @classmethod
    def measure(cls, evaluation: Evaluation, reference: UnlikeReference | None) -> UnlikePolicy:
        """The policy of a model from its dev Evaluation (logits included) and the images it
        was trained and evaluated on; without `reference`, the energy threshold alone."""
        threshold = evaluation.unlike_training_threshold()
        if reference is None:
            return cls(threshold=threshold)
        pixels = reference.pixel_range
        dev_flagged = None
        energies = energy_score(evaluation.logits) if threshold is not None else None
        if len(reference.dev_means) and len(reference.dev_means) == len(evaluation):
            flagged = _flagged(reference.dev_means, reference.dev_stds, energies, threshold, pixels)
            dev_flagged = int(flagged.sum()) / len(flagged)
        return cls(threshold=threshold, pixel_range=pixels, dev_flagged=dev_flagged)

    def flags(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """A bool per raw image (float in [0, 1]): unlike the training data by either rule."""
        return unlike_training(images, logits, self.threshold, self.pixel_range)

    def notes(self, why_no_pixels: str) -> list[str]:
        """What is off, for the user: each rule without what it needs."""
        notes = [] if self.threshold is not None else [NO_ENERGY]
        return notes + ([] if self.pixel_range is not None else [f"{NO_PIXELS}: {why_no_pixels}"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> UnlikePolicy:
        """The policy as a run folder or an exported file recorded it; older ones lack parts."""
        return cls(
            score=saved.get("score", "energy"),
            percentile=saved.get("percentile", OOD_PERCENTILE),
            threshold=saved.get("threshold"),
            pixel_range=saved.get("pixel_range"),
            dev_flagged=saved.get(DEV_FLAGGED),
        )


@dataclass(frozen=True)
class UnlikeReference:
    """What a policy is measured against: the training images' pixel range and the dev
    images' brightness and contrast (computed once, before training)."""

    pixel_range: dict
    dev_means: torch.Tensor
    dev_stds: torch.Tensor

    @classmethod
    def of(cls, train_images: torch.Tensor, dev_images: torch.Tensor) -> UnlikeReference:
        """From stored images (uint8 or float), the dev images in the dev Evaluation's order."""
        means, stds = _batched_statistics(dev_images)
        return cls(pixel_range(train_images), means, stds)


def unlike_training(
    images: torch.Tensor,
    logits: torch.Tensor,
    threshold: float | None,
    pixels: dict | None,
) -> torch.Tensor:
    """A bool per raw image: energy above `threshold`, or outside the `pixels` range."""
    means, stds = pixel_statistics(images)
    energies = energy_score(logits) if threshold is not None else None
    return _flagged(means, stds, energies, threshold, pixels)


def _flagged(
    means: torch.Tensor,
    stds: torch.Tensor,
    energies: torch.Tensor | None,
    threshold: float | None,
    pixels: dict | None,
) -> torch.Tensor:
    flagged = torch.zeros(len(means), dtype=torch.bool)
    if threshold is not None:
        flagged |= energies.cpu() > threshold
    if pixels is not None:
        for values, name in zip((means, stds), ("mean", "std"), strict=True):
            low, high = pixels[name]
            flagged |= (values < low) | (values > high)
    return flagged


def flagged_share(
    engine,
    images: torch.Tensor,
    threshold: float | None,
    pixels: dict | None,
    batch: int = 1024,
) -> float | None:
    """The share of stored `images` (uint8 or float) flagged by either rule, with `engine`
    (raw images -> logits, probabilities) giving the logits; None when there is nothing to
    measure (no images, or neither rule on)."""
    if not len(images) or (threshold is None and pixels is None):
        return None
    flagged = 0
    for start in range(0, len(images), batch):
        x = to_unit(images[start : start + batch])
        logits, _ = engine(x)
        flagged += int(unlike_training(x, logits, threshold, pixels).sum())
    return flagged / len(images)


def pixel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The brightness (mean) and contrast (unbiased std) of each raw image, over C×H×W."""
    dims = tuple(range(1, images.dim()))
    return images.mean(dim=dims).cpu(), images.std(dim=dims).cpu()


def _batched_statistics(images: torch.Tensor, batch: int = 4096) -> tuple[torch.Tensor, ...]:
    """pixel_statistics of stored images (uint8 or float), computed in batches."""
    means, stds = [torch.zeros(0)], [torch.zeros(0)]
    for start in range(0, len(images), batch):
        mean, std = pixel_statistics(to_unit(images[start : start + batch]))
        means.append(mean)
        stds.append(std)
    return torch.cat(means), torch.cat(stds)


def pixel_range(images: torch.Tensor, batch: int = 4096) -> dict:
    """The PIXEL_PERCENTILES range of brightness and contrast of stored images (uint8 or
    float), computed in batches."""
    means, stds = _batched_statistics(images, batch)
    q = torch.tensor(PIXEL_PERCENTILES, dtype=torch.float64) / 100
    mean, std = means.double(), stds.double()
    return {
        "mean": torch.quantile(mean, q).tolist(),
        "std": torch.quantile(std, q).tolist(),
        "percentiles": list(PIXEL_PERCENTILES),
        "images": len(mean),
    }
