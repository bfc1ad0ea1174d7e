"""Training into a run folder: a new run, or one resumed from its last finished epoch.

The folder is locked while it is written (utils.locks): a second process training it is
refused, in one line that names the holder.
"""

from __future__ import annotations

from pathlib import Path

from bloodcells.cells.crop_set import read_crop_record
from bloodcells.data import Splits
from bloodcells.errors import RunError
from bloodcells.evaluation.ood import UnlikeReference
from bloodcells.runs.folder import Run, load_run, read_checkpoint
from bloodcells.runs.record import CHECKPOINT, damaged, summary
from bloodcells.runs.writer import RunWriter, new_run_dir
from bloodcells.training import Callback, TrainConfig, fit, make_model
from bloodcells.training.loop import restore
from bloodcells.utils.devices import check_device, select_device
from bloodcells.utils.locks import folder_lock


def start_training(
    splits: Splits,
    config: TrainConfig,
    out: str | Path = "runs",
    callbacks: list[Callback] | tuple = (),
    run_dir: Path | None = None,
) -> Run:
    """Train a new model on `splits` into a new run folder under `out`; return the run."""
    check_device(config.device)  # the config checked itself when made; nothing is created yet
    model = make_model(config, len(splits.classes))
    run_dir = run_dir or new_run_dir(out, config.model)
    with folder_lock(run_dir, "run"):
        writer = writer_for(run_dir, splits)
        fit(model, splits.train, splits.test, config, [writer, *callbacks])
    return load_run(run_dir)


def resume_training(
    run_dir: str | Path,
    epochs: int | None = None,
    callbacks: list[Callback] | tuple = (),
    data_root: str | Path | None = None,
) -> Run:
    """Continue a run from its last finished epoch up to `epochs` (default: its own target).

    Everything else (model, learning rate, seed, batch size, device) is the run's own.
    """
    path = load_run(run_dir).path  # a folder that is no run is refused before it is locked
    with folder_lock(path, "run"):
        run = load_run(path)  # as it is now that no other process can write it
        config = run.config if epochs is None else run.config.with_epochs(epochs)
        _check_resumable(run, config, epochs)
        device = select_device(config.device)
        splits = run.load_data(data_root)
        checkpoint = read_checkpoint(run.path / CHECKPOINT, device)
        try:
            model, optimizer, history = restore(checkpoint, config, len(run.classes), device)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # the state does not fit
            raise damaged(run.path / CHECKPOINT, f"does not fit the run: {summary(exc)}") from exc
        writer = writer_for(run.path, splits)
        fit(model, splits.train, splits.test, config, [writer, *callbacks], optimizer, history)
    return load_run(run.path)


def writer_for(run_dir: Path, splits: Splits) -> RunWriter:
    """The RunWriter of a run trained on `splits`: its data, unlike-training reference and,
    for a crop set, how the crops were cut."""
    return RunWriter(
        run_dir, splits.root, reference=reference_of(splits), crops=read_crop_record(splits.root)
    )


def reference_of(splits: Splits) -> UnlikeReference:
    """What the unlike-training policy of a model trained on `splits` is measured against."""
    return UnlikeReference.of(splits.train.images, splits.test.images)


def _check_resumable(run: Run, config: TrainConfig, epochs: int | None) -> None:
    """A RunError when there is nothing to resume, or another process is training the run."""
    done = len(run.history)
    if done >= config.epochs and epochs is None:
        raise RunError(
            f"{run.path}: the run is finished: it already has {done} epochs; "
            f"to train it further, pass epochs above {done}"
        )
    if done >= config.epochs:
        raise RunError(f"{run.path}: already has {done} epochs; pass epochs above {done}")
    if not (run.path / CHECKPOINT).is_file():
        raise RunError(f"{run.path}: no {CHECKPOINT} to resume from; start a new run")
    pid = run.writing_elsewhere()
    if pid is not None:
        raise RunError(
            f"{run.path}: process {pid} is training this run right now; "
            "wait for it or stop it first"
        )
