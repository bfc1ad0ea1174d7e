"""Evaluation: a model's outputs on a dataset, computed once, and every question asked of them.

Built from a model and a Dataset (or from standardized tensors, as fit's dev pass does), an
Evaluation holds per-image probabilities, labels, losses and paths, and answers accuracy,
the confusion matrix, the sklearn metrics, the top losses and the most confused classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.data import Dataset
from bloodcells.evaluation.metrics import classification_metrics, most_confused
from bloodcells.utils.devices import select_device

EVAL_BATCH = 1024  # evaluation batch: only memory, never results, depends on it
# Images whose energy score is above this percentile of the dev set's are flagged as unlike
# the training data: 5% of the dev images themselves are, by construction.
OOD_PERCENTILE = 95.0


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """-logsumexp of the logits per image: higher for images unlike the training data.

    The energy score of Liu et al. (2020, "Energy-based out-of-distribution detection"),
    at temperature 1; it uses the logits' scale, which the max softmax probability discards.
    """
    return -torch.logsumexp(logits.float(), dim=1)


@dataclass
class Evaluation:
    """Per-image class probabilities and labels of one model on one dataset (on the CPU)."""

    probabilities: torch.Tensor  # N×K
    labels: torch.Tensor  # N
    classes: list[str]
    paths: list[str] = field(default_factory=list)  # empty when the images have no files
    losses: torch.Tensor | None = None  # N: cross-entropy of each image (from probabilities)
    logits: torch.Tensor | None = None  # N×K, when the model's raw outputs are known

    def __post_init__(self) -> None:
        if self.losses is None:
            tiny = torch.finfo(self.probabilities.dtype).tiny
            picked = self.probabilities.gather(1, self.labels[:, None]).squeeze(1)
            self.losses = -picked.clamp_min(tiny).log()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def loss(self) -> float:
        """The mean cross-entropy per image."""
        return float(self.losses.mean()) if len(self) else 0.0

    @property
    def predictions(self) -> torch.Tensor:
        return self.probabilities.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).float().mean()) if len(self) else 0.0

    def confusion(self) -> list[list[int]]:
        """Counts, rows the true class and columns the predicted one."""
        k = len(self.classes)
        counts = torch.bincount(self.labels * k + self.predictions, minlength=k * k)
        return counts.view(k, k).tolist()

    def metrics(self) -> dict:
        """Accuracy, balanced accuracy, per-class scores, baselines and the confusion matrix."""
        return classification_metrics(
            self.labels.numpy(), self.predictions.numpy(), self.classes
        ) | {"loss": self.loss}

    def top_losses(self, n: int = 9) -> list[dict]:
        """The `n` images with the highest loss, highest first: the most confident mistakes."""
        order = torch.argsort(self.losses, descending=True, stable=True)[:n].tolist()
        rows = []
        for i in order:
            true, pred = int(self.labels[i]), int(self.predictions[i])
            rows.append(
                {
                    "index": i,
                    "path": self.paths[i] if self.paths else "",
                    "true": self.classes[true],
                    "predicted": self.classes[pred],
                    "probability": float(self.probabilities[i, pred]),
                    "loss": float(self.losses[i]),
                }
            )
        return rows

    def unlike_training_threshold(self, percentile: float = OOD_PERCENTILE) -> float | None:
        """The energy score above which an image counts as unlike these (see energy_score)."""
        if self.logits is None or not len(self):
            return None
        return float(torch.quantile(energy_score(self.logits), percentile / 100))

    def most_confused(self, top: int = 5) -> list[tuple[str, str, int]]:
        """The (true, predicted, count) pairs with the most mistakes, largest first."""
        return most_confused(self.confusion(), self.classes, top)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`model`'s logits for standardized images `x`, in eval mode, in memory-sized batches."""
    was_training = model.training
    model.eval()
    try:
        starts = range(0, max(len(x), 1), EVAL_BATCH)  # one empty batch for no images
        return torch.cat([model(x[i : i + EVAL_BATCH]) for i in starts])
    finally:
        model.train(was_training)


def evaluate_tensors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: list[str],
    paths: list[str] | None = None,
) -> Evaluation:
    """The Evaluation of `model` on standardized images `x` with labels `y`."""
    logits = predict_logits(model, x).float()
    # Losses from the logits, not the probabilities: exact even where softmax rounds to 0.
    losses = F.cross_entropy(logits, y, reduction="none")
    probabilities = F.softmax(logits, dim=1)
    return Evaluation(
        probabilities.cpu(), y.cpu(), list(classes), list(paths or []), losses.cpu(), logits.cpu()
    )


def evaluate(model: nn.Module, dataset: Dataset, device: str | None = None) -> Evaluation:
    """The Evaluation of `model` on every image of `dataset`."""
    device_ = select_device(device)
    model.to(device_)
    data = dataset.to(device_)
    return evaluate_tensors(model, data.standardized(), data.labels, dataset.classes, dataset.paths)
