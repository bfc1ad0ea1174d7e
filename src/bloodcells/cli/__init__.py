"""The `bloodcells` command: a thin typer shell over the Python API (parse, call, print).

Every module is imported inside the command that needs it, so `bloodcells --help` starts
without torch. Each module here adds one group of commands to the one typer app.
"""

from bloodcells.cli import (
    data,
    fetch,
    inspect,
    predict,
    prepare,
    report,
    robustness,
    sweep,
)

# isort: split
# `bloodcells --help` lists commands in the order they are registered: models, training, lab.
from bloodcells.cli import models

# isort: split
from bloodcells.cli import training

# isort: split
from bloodcells.cli import lab
from bloodcells.cli.base import app, main

__all__ = [
    "app",
    "data",
    "fetch",
    "inspect",
    "lab",
    "main",
    "models",
    "predict",
    "prepare",
    "report",
    "robustness",
    "sweep",
    "training",
]
