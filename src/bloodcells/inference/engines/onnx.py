"""An .onnx file made by bloodcells export as an Engine, run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import torch

from bloodcells.errors import BloodcellsError
from bloodcells.inference.engines.base import INPUT, INSTALL, METADATA_KEY, OUTPUTS, gist


class OnnxEngine:
    """An onnxruntime session of an exported graph (it standardizes the images itself)."""

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.detach().cpu().float().contiguous().numpy()
        logits, probabilities = self.session.run(list(OUTPUTS), {INPUT: x})
        return torch.from_numpy(logits), torch.from_numpy(probabilities)


def open_onnx(path: Path, device: str | None = None) -> tuple[OnnxEngine, str | None]:
    """The engine of an .onnx file and its bloodcells metadata as stored (JSON text, or None)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BloodcellsError(
            f"{path}: running an .onnx file needs onnxruntime, which is not installed; {INSTALL}"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device and device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BloodcellsError(f"{path}: this onnxruntime cannot use {device}; use device='cpu'")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for a damaged file
        raise BloodcellsError(f"{path}: not a readable ONNX model ({gist(exc)})") from None
    return OnnxEngine(session), session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
