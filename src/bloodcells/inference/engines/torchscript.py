"""A .pt TorchScript file made by bloodcells export as an Engine, run by torch.jit."""

from __future__ import annotations

from pathlib import Path

import torch

from bloodcells.errors import BloodcellsError
from bloodcells.inference.engines.base import EXTRA_FILE, quiet
from bloodcells.utils.devices import select_device


class TorchScriptEngine:
    """A traced exported graph (it standardizes the images itself) on `device`."""

    def __init__(self, module, device: torch.device) -> None:
        self.module, self.device = module.eval(), device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, probabilities = self.module(images.to(self.device))
        return logits.float().cpu(), probabilities.float().cpu()


def open_torchscript(path: Path, device: str | None = None) -> tuple[TorchScriptEngine, str | None]:
    """The engine of a .pt file and its bloodcells metadata as stored (JSON text, or None)."""
    device_ = select_device(device)
    extra = {EXTRA_FILE: ""}
    try:
        with quiet():
            module = torch.jit.load(str(path), map_location=device_, _extra_files=extra)
    except Exception:  # a state dict (a run's weights.pt), or a damaged file
        raise BloodcellsError(
            f"{path}: not a TorchScript file made by bloodcells export; "
            "for a run's weights.pt, pass the run folder"
        ) from None
    return TorchScriptEngine(module, device_), extra[EXTRA_FILE] or None
