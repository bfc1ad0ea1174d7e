"""The run folder: its record, its writer, loading it back, training into it."""

from bloodcells.runs.folder import Run, load_run
from bloodcells.runs.record import RunInfo, RunMetrics, Status, SweepMember
from bloodcells.runs.training import resume_training, start_training
from bloodcells.runs.writer import RunWriter, new_run_dir

__all__ = [
    "Run",
    "RunInfo",
    "RunMetrics",
    "RunWriter",
    "Status",
    "SweepMember",
    "load_run",
    "new_run_dir",
    "resume_training",
    "start_training",
]
