"""One Engine interface (raw images -> logits, probabilities) and its three engines: a PyTorch
model, an exported ONNX file and an exported TorchScript file."""

from bloodcells.inference.engines.base import FORMATS, KINDS, METADATA_KEY, Engine
from bloodcells.inference.engines.exported import load_export
from bloodcells.inference.engines.onnx import OnnxEngine
from bloodcells.inference.engines.torch import TorchEngine
from bloodcells.inference.engines.torchscript import TorchScriptEngine

__all__ = [
    "FORMATS",
    "KINDS",
    "METADATA_KEY",
    "Engine",
    "OnnxEngine",
    "TorchEngine",
    "TorchScriptEngine",
    "load_export",
]
