"""The one interface every engine has, and what an exported file's graph and metadata are.

An engine maps raw images, float32 in [0, 1], N×C×H×W on the CPU, to (logits, probabilities),
both N×K float32 on the CPU: a PyTorch model (torch.TorchEngine), an ONNX file
(onnx.OnnxEngine) or a TorchScript file (torchscript.TorchScriptEngine), all giving the same
numbers for the same images.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Protocol, runtime_checkable

import torch

METADATA_KEY = "bloodcells"  # the JSON in ONNX metadata_props / TorchScript extra files
EXTRA_FILE = "bloodcells.json"  # the TorchScript extra file that holds it
FORMAT_VERSION = 1  # of the metadata: what this release writes
READ_VERSIONS = (1,)  # what it reads
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # export format -> file suffix
KINDS = {suffix: kind for kind, suffix in FORMATS.items()}  # file suffix -> export format
INPUT, OUTPUTS = "images", ("logits", "probabilities")  # an exported graph's names
INSTALL = "pip install 'bloodcells[export]'"


@runtime_checkable
class Engine(Protocol):
    """Raw images (float32 in [0, 1], N×C×H×W) -> (logits, probabilities), N×K on the CPU."""

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def quiet() -> contextlib.ExitStack:
    """Silence the exporters' progress prints and deprecation warnings (torch.jit is)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def gist(exc: Exception) -> str:
    """The first line of an exception from torch or onnxruntime, at most 120 characters."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= 120 else first[:117] + "..."
