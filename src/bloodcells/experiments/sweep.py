"""Running a sweep: its runs trained side by side (stacked), one run folder each, resumable.

The plan and its folder are experiments.plan; the variant syntax is experiments.variants.
Running the same command again finds the sweep folder and continues with what is missing:
finished runs are skipped, interrupted ones continue from their last saved epoch (stacked
again when they can be: members that stopped at the same epoch resume together, exactly as
if never stopped), runs with no finished epoch start again, diverged runs stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bloodcells.cells.crop_set import read_crop_record
from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.errors import RunError, TrainingDiverged
from bloodcells.experiments.plan import SweepPlan, write_sweep_file
from bloodcells.experiments.variants import Variant
from bloodcells.runs import RunWriter, SweepMember, load_run
from bloodcells.runs.folder import read_checkpoint
from bloodcells.runs.record import CHECKPOINT, CONFIG
from bloodcells.runs.training import reference_of
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import fit, make_model, make_optimizer, restore
from bloodcells.training.records import Callback, History
from bloodcells.training.stacked.fit import Member, StackCallback, fit_stacked
from bloodcells.training.stacked.layers import stackable
from bloodcells.training.stacked.plan import max_members, split_evenly, stack_key
from bloodcells.utils.devices import select_device
from bloodcells.utils.locks import folder_lock

# --- training ---------------------------------------------------------------------------


@dataclass
class Job:
    """Members that train together: a stack, or one run trained alone with fit."""

    members: list[tuple[Variant, int, TrainConfig, Path]]
    stacked: bool
    epochs_done: int = 0

    def label(self) -> str:
        names = sorted({v.name for v, *_ in self.members})
        seeds = len(self.members)
        kind = f"stack of {seeds}" if self.stacked else "alone"
        return f"{', '.join(names)} ({kind})"


@dataclass
class SweepStatus:
    """Where each member of a sweep stands before training continues."""

    finished: list[Path] = field(default_factory=list)
    diverged: list[Path] = field(default_factory=list)
    todo: list[tuple[Variant, int, TrainConfig, Path, int]] = field(default_factory=list)


def sweep_status(folder: Path, plan: SweepPlan) -> SweepStatus:
    """Which runs are finished, which diverged, and from which epoch each other one goes on."""
    status = SweepStatus()
    for variant, seed, config, name in plan.members():
        run_dir = folder / name
        done = _epochs_done(run_dir, config)
        if done == "finished":
            status.finished.append(run_dir)
        elif done == "diverged":
            status.diverged.append(run_dir)
        else:
            status.todo.append((variant, seed, config, run_dir, done))
    return status


def _epochs_done(run_dir: Path, config: TrainConfig) -> int | str:
    """'finished', 'diverged', or how many epochs a run folder holds to continue from."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: is a file where the sweep keeps a run folder; move it away")
    if not (run_dir / CONFIG).is_file() or not (run_dir / CHECKPOINT).is_file():
        return 0  # nothing finished: (re)start from scratch
    run = load_run(run_dir)
    saved = run.config.to_dict() | {"epochs": config.epochs}
    if saved != config.to_dict():
        raise RunError(
            f"{run_dir}: holds a run of another config than the sweep plans; move it away"
        )
    pid = run.writing_elsewhere()
    if pid is not None:
        raise RunError(
            f"{run_dir}: process {pid} is training this run right now; wait for it or stop it first"
        )
    if run.metrics.status == "diverged":
        return "diverged"
    if len(run.history) >= config.epochs:
        return "finished"
    return len(run.history)


def plan_jobs(
    status: SweepStatus,
    num_classes: int,
    stack: bool = True,
    limit: int | None = None,
) -> list[Job]:
    """Stacks of members that share an architecture, batch size and epochs done; the rest
    (models the stack cannot run, or everything with stack=False) one by one."""
    groups: dict[tuple, list] = {}
    alone: list[Job] = []
    for variant, seed, config, run_dir, done in status.todo:
        if stack and stackable(config, num_classes):
            key = (stack_key(config), done)
            groups.setdefault(key, []).append((variant, seed, config, run_dir))
        else:
            alone.append(Job([(variant, seed, config, run_dir)], False, done))
    jobs = []
    for (_, done), members in groups.items():
        config = members[0][2]
        device = select_device(config.device)
        most = max_members(config, num_classes, device)
        if limit is not None:
            most = max(1, min(most, limit))
        for chunk in split_evenly(members, most):
            jobs.append(Job(chunk, len(chunk) > 1, done))  # a stack of one is just slower
    return jobs + alone


def _member(
    config: TrainConfig, run_dir: Path, done: int, num_classes: int, device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer, History]:
    """A fresh model (make_model, make_optimizer), or the one its checkpoint saved."""
    if done == 0:
        model = make_model(config, num_classes).to(device)
        return model, make_optimizer(model, config), History()
    checkpoint = read_checkpoint(run_dir / CHECKPOINT, device)
    try:
        return restore(checkpoint, config, num_classes, device)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise RunError(f"{run_dir / CHECKPOINT}: does not fit the run ({exc})") from None


def run_job(
    job: Job,
    splits: Splits,
    sweep_name: str,
    stack_callbacks: Sequence[StackCallback] = (),
    run_callbacks: Callable[[str, TrainConfig], list[Callback]] | None = None,
) -> list[str]:
    """Train one job's members into their run folders, each locked while it trains; the
    divergence messages, if any."""
    with ExitStack() as locks:
        for *_, run_dir in job.members:  # every member before any trains
            run_dir.mkdir(parents=True, exist_ok=True)
            locks.enter_context(folder_lock(run_dir, "run"))
        return _train_job(job, splits, sweep_name, stack_callbacks, run_callbacks)


def _train_job(
    job: Job,
    splits: Splits,
    sweep_name: str,
    stack_callbacks: Sequence[StackCallback],
    run_callbacks: Callable[[str, TrainConfig], list[Callback]] | None,
) -> list[str]:
    num_classes = len(splits.classes)
    trained = "stacked" if job.stacked else "alone"
    reference = reference_of(splits)
    members = []
    for variant, seed, config, run_dir in job.members:
        device = select_device(config.device)
        model, optimizer, history = _member(config, run_dir, job.epochs_done, num_classes, device)
        sweep = SweepMember(
            folder=sweep_name,
            variant=variant.name,
            seed=seed,
            trained=trained,
            stack_size=len(job.members) if job.stacked else 1,
        )
        callbacks: list[Callback] = [
            RunWriter(run_dir, splits.root, sweep, reference, read_crop_record(splits.root))
        ]
        if run_callbacks is not None and not job.stacked:
            callbacks += run_callbacks(variant.name, config)
        members.append(Member(model, optimizer, config, history, callbacks))
    if job.stacked:
        fit_stacked(members, splits.train, splits.test, stack_callbacks)
        return [f"{job.members[i][3].name}: {m.error}" for i, m in enumerate(members) if m.error]
    errors = []
    for (_, _, _, run_dir), m in zip(job.members, members, strict=True):
        try:
            fit(m.model, splits.train, splits.test, m.config, m.callbacks, m.optimizer, m.history)
        except TrainingDiverged as exc:  # the run folder says so too; the others go on
            errors.append(f"{run_dir.name}: {exc}")
    return errors


class DataCache:
    """The plan's dataset, read once per transform (variants may change size or channels)."""

    def __init__(self, root: str | Path, classes: Sequence[str] = ()) -> None:
        self.root = root
        self.classes = list(classes)
        self._splits: dict[Transform, Splits] = {}

    def __call__(self, config: TrainConfig) -> Splits:
        transform = Transform(config.image_size, config.channels)
        if transform not in self._splits:
            splits = load_dataset(self.root, transform)
            if self.classes and splits.classes != self.classes:
                raise RunError(
                    f"{self.root}: classes {splits.classes} differ from the sweep's "
                    f"{self.classes}; use the data the sweep was made with"
                )
            self.classes = list(splits.classes)
            self._splits[transform] = splits
        return self._splits[transform]


@dataclass
class SweepOutcome:
    """What a sweep call did: the folder, its runs, and what stopped early."""

    folder: Path
    runs: list[Path]
    trained: int  # runs trained (or continued) by this call
    skipped: int  # runs already finished
    diverged: list[str]  # messages of runs whose loss became non-finite


def run_sweep(
    plan: SweepPlan,
    folder: Path,
    stack: bool = True,
    max_stack: int | None = None,
    data: DataCache | None = None,
    say: Callable[[str], None] = lambda _: None,
    stack_callbacks: Callable[[Job, int, int], Sequence[StackCallback]] | None = None,
    run_callbacks: Callable[[str, TrainConfig], list[Callback]] | None = None,
) -> SweepOutcome:
    """Train every run the sweep in `folder` still misses; see the module docstring.

    The sweep folder, and each run folder it has already, is locked for the call: another
    process writing any of them is a RunError before anything trains.
    """
    with ExitStack() as locks:
        locks.enter_context(folder_lock(folder, "sweep"))
        for *_, name in plan.members():
            if (folder / name).is_dir():
                locks.enter_context(folder_lock(folder / name, "run"))
        return _run_sweep(plan, folder, stack, max_stack, data, say, stack_callbacks, run_callbacks)


def _run_sweep(
    plan: SweepPlan,
    folder: Path,
    stack: bool,
    max_stack: int | None,
    data: DataCache | None,
    say: Callable[[str], None],
    stack_callbacks: Callable[[Job, int, int], Sequence[StackCallback]] | None,
    run_callbacks: Callable[[str, TrainConfig], list[Callback]] | None,
) -> SweepOutcome:
    data = data or DataCache(plan.data, plan.classes)
    members = plan.members()
    first = data(members[0][2])
    if plan.classes != first.classes:
        plan.classes = list(first.classes)
        write_sweep_file(folder, plan)
    status = sweep_status(folder, plan)
    diverged = [f"{p.name}: diverged earlier" for p in status.diverged]
    jobs = plan_jobs(status, len(first.classes), stack, max_stack)
    if status.finished or status.diverged:
        say(
            f"{len(status.finished)} of {len(members)} runs already finished"
            + (f", {len(status.diverged)} diverged" if status.diverged else "")
            + (f"; training the other {len(status.todo)}" if status.todo else "")
        )
    resumed = sum(1 for *_, done in status.todo if done)
    if resumed:
        say(f"{resumed} interrupted runs continue from their last saved epoch")
    for i, job in enumerate(jobs, start=1):
        splits = data(job.members[0][2])
        callbacks = stack_callbacks(job, i, len(jobs)) if stack_callbacks else ()
        diverged += run_job(job, splits, folder.name, callbacks, run_callbacks)
    return SweepOutcome(
        folder=folder,
        runs=[folder / name for *_, name in members],
        trained=len(status.todo),
        skipped=len(status.finished) + len(status.diverged),
        diverged=diverged,
    )
