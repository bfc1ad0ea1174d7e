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

import warnings

import torch

from bloodcells.data import to_unit
from bloodcells.errors import DataError, RunError
from bloodcells.evaluation.core import energy_score

PIXEL_PERCENTILES = (0.5, 99.5)
UNLIKE_TRAINING = (
    "energy score above the 95th percentile of the dev set's, or brightness or contrast "
    "outside the 0.5th to 99.5th percentiles of the training images'"
)
NO_ENERGY = "unlike-training by energy score is off: the model has no recorded threshold"
NO_PIXELS = "unlike-training by brightness and contrast is off: no training image statistics"
DEV_FLAGGED = "dev_flagged"  # the key of flagged_share of the dev images, beside the threshold


def unlike_training(
    images: torch.Tensor,
    logits: torch.Tensor,
    threshold: float | None,
    pixels: dict | None,
) -> torch.Tensor:
    """A bool per raw image: energy above `threshold`, or outside the `pixels` range."""
    flagged = torch.zeros(len(images), dtype=torch.bool)
    if threshold is not None:
        flagged |= energy_score(logits) > threshold
    if pixels is not None:
        for values, name in zip(pixel_statistics(images), ("mean", "std"), strict=True):
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


def pixel_range(images: torch.Tensor, batch: int = 4096) -> dict:
    """The PIXEL_PERCENTILES range of brightness and contrast of stored images (uint8 or
    float), computed in batches."""
    means, stds = [], []
    for start in range(0, len(images), batch):
        mean, std = pixel_statistics(to_unit(images[start : start + batch]))
        means.append(mean)
        stds.append(std)
    q = torch.tensor(PIXEL_PERCENTILES, dtype=torch.float64) / 100
    mean, std = torch.cat(means).double(), torch.cat(stds).double()
    return {
        "mean": torch.quantile(mean, q).tolist(),
        "std": torch.quantile(std, q).tolist(),
        "percentiles": list(PIXEL_PERCENTILES),
        "images": len(mean),
    }


def run_pixel_range(run) -> tuple[dict | None, str]:
    """The pixel range of a run's training images, or None and why it cannot be had."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the data's problems were reported in training
            splits = run.load_data()
    except (RunError, DataError) as exc:
        return None, f"{NO_PIXELS}: {str(exc).splitlines()[0]}"
    return pixel_range(splits.train.images), ""
