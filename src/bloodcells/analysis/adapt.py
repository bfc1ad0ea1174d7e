"""Predicting on another lab's images: test-time augmentation and BatchNorm adaptation.

- TTA averages the softmax over the 8 dihedral views of each image (cells have no up or down).
- BN adaptation (Schneider et al. 2020, "Improving robustness against common corruptions by
  covariate shift adaptation") re-estimates every BatchNorm layer's running mean and variance
  on the target images, unlabelled, before predicting. It works on a copy: the given model
  and the run folder it came from never change.

`evaluate_adapted` (and analysis.evaluate's `evaluate_run`) are what
`bloodcells evaluate --tta --adapt-bn` needs; `tta_probabilities` and `adapt_batchnorm` are
the parts.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.data import Dataset
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import EVAL_BATCH, Evaluation, evaluate_tensors, predict_logits
from bloodcells.ops.image_ops import dihedral_views
from bloodcells.utils.devices import select_device

VIEWS = 8
ADAPT_BATCH = 256  # images per BatchNorm statistics batch: larger estimates better
ADAPT_SEED = 0  # the order images are batched in for adaptation (mixes the classes)


# -- test-time augmentation -------------------------------------------------------------------


@torch.no_grad()
def tta_probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities of standardized images `x`, averaged over their 8 dihedral views.

    The mean of the 8 softmaxes (not the softmax of the mean logits). Views are batched
    together, EVAL_BATCH images at a time, so memory stays that of plain evaluation.
    """
    chunk = max(EVAL_BATCH // VIEWS, 1)
    parts = []
    for start in range(0, len(x), chunk):
        views = torch.cat(dihedral_views(x[start : start + chunk]))
        logits = predict_logits(model, views).float()
        parts.append(F.softmax(logits, dim=1).view(VIEWS, -1, logits.shape[1]).mean(0))
    if not parts:
        return predict_logits(model, x).float().softmax(1)  # no images: 0×K
    return torch.cat(parts)


def evaluate_tta_tensors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: list[str],
    paths: list[str] | None = None,
) -> Evaluation:
    """The Evaluation of `model` with TTA on standardized images `x` with labels `y`.

    Its losses are -log of the averaged probability of the true class; it has no logits (an
    average of views has none), so it sets no threshold for images unlike the training data.
    """
    probabilities = tta_probabilities(model, x)
    return Evaluation(probabilities.cpu(), y.cpu(), list(classes), list(paths or []))


def evaluate_tta(model: nn.Module, dataset: Dataset, device: str | None = None) -> Evaluation:
    """The Evaluation of `model` on every image of `dataset`, averaging the 8 dihedral views."""
    return evaluate_adapted(model, dataset, device, tta=True)


# -- BatchNorm adaptation ---------------------------------------------------------------------


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module, images: torch.Tensor, batch_size: int = ADAPT_BATCH
) -> nn.Module:
    """A copy of `model` whose BatchNorm running statistics are those of `images`.

    `images` are standardized, on the model's device. Every BatchNorm layer's statistics are
    reset and re-estimated as the average over batches of `batch_size` images (momentum None:
    a cumulative average, not a moving one), in a seeded shuffle so batches mix the classes,
    in nearly equal batches (batch_size to 2·batch_size-1 images) so each counts the same.
    Only the BatchNorm layers run in training mode (Dropout stays off); no gradient is
    computed and no weight changes. The copy is returned in eval mode; `model` is untouched.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise BloodcellsError(f"the BatchNorm batch size must be a whole number ≥ 2: {batch_size}")
    if len(images) < 2:
        raise BloodcellsError(f"adapting BatchNorm needs at least 2 images, not {len(images)}")
    adapted = copy.deepcopy(model)
    layers = batchnorm_layers(adapted)
    if not layers:
        return adapted.eval()
    momenta = [layer.momentum for layer in layers]
    adapted.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    generator = torch.Generator().manual_seed(ADAPT_SEED)
    order = torch.randperm(len(images), generator=generator).to(images.device)
    batches = max(len(images) // batch_size, 1)  # each of batch_size to 2·batch_size-1 images
    for index in torch.tensor_split(order, batches):
        adapted(images[index])
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    return adapted.eval()


# -- both, on a dataset --------------------------------------------------------------


def evaluate_adapted(
    model: nn.Module,
    dataset: Dataset,
    device: str | None = None,
    tta: bool = False,
    adapt_bn: bool = False,
) -> Evaluation:
    """The Evaluation of `model` on `dataset`, with TTA and/or BatchNorm adapted to it.

    Without either it is `evaluation.evaluate`. `model` is moved to the device (as evaluate
    does) but otherwise unchanged: adaptation works on a copy.
    """
    device_ = select_device(device)
    model.to(device_)
    data = dataset.to(device_)
    x = data.standardized()
    if adapt_bn:
        model = adapt_batchnorm(model, x)
    if tta:
        return evaluate_tta_tensors(model, x, data.labels, dataset.classes, dataset.paths)
    return evaluate_tensors(model, x, data.labels, dataset.classes, dataset.paths)


def require_batchnorm(model: nn.Module, name: str) -> None:
    """A one-line error when `model` has no BatchNorm layer to adapt."""
    if not batchnorm_layers(model):
        raise BloodcellsError(
            f"model {name!r} has no BatchNorm layers, so adapt_bn would change nothing; "
            "drop it (the advanced CNN has BatchNorm)"
        )
