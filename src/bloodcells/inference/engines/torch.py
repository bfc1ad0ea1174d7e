"""A PyTorch model as an Engine: raw images in, (logits, probabilities) out, computed as
training and `evaluation.evaluate` compute them.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bloodcells.data import standardize
from bloodcells.evaluation.core import predict_logits

MODEL_BATCH = 128  # images per forward pass of a PyTorch model on a CPU


class TorchEngine:
    """A PyTorch model: standardize (as training does) and predict_logits, then softmax,
    exactly as evaluation.evaluate does."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.model, self.device = model.eval(), torch.device(device)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = standardize(images.to(self.device))
        # batches of MODEL_BATCH: on a CPU, 2-3x faster than 512 or 1024 at once (the
        # activations stay in cache), and the same numbers (tests/test_predict.py)
        step = MODEL_BATCH if self.device.type == "cpu" else max(len(x), 1)
        starts = range(0, max(len(x), 1), step)
        logits = torch.cat([predict_logits(self.model, x[i : i + step]) for i in starts]).float()
        return logits.cpu(), F.softmax(logits, dim=1).cpu()
