"""The package version and the versions of what a run was made with."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """bloodcells, Python, torch and torchvision versions, for a run's record."""
    import torch
    import torchvision

    return {
        "bloodcells": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
