"""The `bloodcells` command: a thin typer shell over the Python API (parse, call, print).

Every module is imported inside the command that needs it, so `bloodcells --help` starts
without torch. Each module here adds one group of commands to the one typer app; `--help`
lists them in the order they are imported below (the order of the work: the lab, training,
looking inside, putting a model to work, data), so the imports are kept in that order.
"""

# isort: off
from bloodcells.cli import lab, models, training, sweep, inspect, robustness, report, predict
from bloodcells.cli import data, fetch, prepare, cells
from bloodcells.cli.base import app, main

# isort: on

__all__ = [
    "app",
    "cells",
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
