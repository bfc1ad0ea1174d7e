"""Sweeps and comparisons: exercise 3 as variants × seeds, and the answer with intervals."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from bloodcells.cli.base import BloodcellsError, DataOpt, DeviceOpt, app, bold, err, out

if TYPE_CHECKING:
    from bloodcells.experiments.plan import SweepPlan
    from bloodcells.experiments.sweep import DataCache

MetricOpt = Annotated[
    str, typer.Option(help="What to compare: accuracy or balanced_accuracy (dev set).")
]
BaselineOpt = Annotated[
    str | None, typer.Option(help="The group the others are compared with (default: base).")
]


@app.command("sweep")
def sweep_cmd(
    data: DataOpt = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated variants: base, bn2, dropout, extra_fc, KEY=VALUE "
            "(lr=1e-3, model=simple, batch_size=16, head_dropout=0.5), joined with + "
            "(bn2+dropout); lab = base,bn2,dropout,extra_fc,lr=1e-3,lr=5e-5 (the default)."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="How many seeds (5: seeds 0-4), or a list 0,3,7 / 10-14.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per run (default 5).")] = None,
    device: DeviceOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the sweep folder goes.")] = Path(
        "runs"
    ),
    stack: Annotated[
        bool,
        typer.Option(
            "--stack/--no-stack", help="Train runs of one architecture side by side (default)."
        ),
    ] = True,
    max_stack: Annotated[
        int | None, typer.Option(min=1, max=256, help="At most this many runs in one stack.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this sweep folder with its own plan.")
    ] = None,
    metric: MetricOpt = "accuracy",
    baseline: BaselineOpt = None,
) -> None:
    """Train every variant with every seed (stacked), then compare them with intervals."""
    from bloodcells.cli.flags import as_flags
    from bloodcells.experiments.compare import METRICS
    from bloodcells.experiments.plan import load_sweep, open_sweep, plan_sweep
    from bloodcells.experiments.sweep import DataCache
    from bloodcells.utils.locks import folder_lock

    if metric not in METRICS:
        raise BloodcellsError(f"unknown metric {metric!r}; use {' or '.join(METRICS)}")
    if resume is not None:
        fixed = {"--variants": variants, "--seeds": seeds, "--epochs": epochs, "--device": device}
        given = [flag for flag, value in fixed.items() if value is not None]
        if given:
            raise BloodcellsError(
                f"--resume continues a sweep with its own plan; drop {', '.join(given)}"
            )
        sweep = load_sweep(resume)
        plan, folder, continuing = sweep.plan, resume, False
        cache = DataCache(data if data is not None else plan.data, plan.classes)
        if data is None and not Path(plan.data).is_dir():
            raise BloodcellsError(
                f"{plan.data}: the sweep's data is not there any more; pass --data ROOT"
            )
    else:
        if data is None:
            raise BloodcellsError("--data is required (or --resume SWEEP); see sweep --help")
        with as_flags("variants", "seeds", "epochs"):
            plan = plan_sweep(
                data,
                variants if variants is not None else "lab",
                seeds if seeds is not None else 5,
                epochs if epochs is not None else 5,
                device,
            )
        from bloodcells.utils.devices import select_device
        from bloodcells.utils.files import check_output_folder

        select_device(device)
        check_output_folder(out_dir)
        cache = DataCache(plan.data)
        cache(plan.members()[0][2])  # read the data (and fail on it) before any folder
        folder, continuing = open_sweep(out_dir, plan)
    with folder_lock(folder, "sweep"):  # before any line: a second sweep says only who holds it
        if continuing:
            err.print(f"continuing {folder} (the same command made it)")
        _train_sweep(plan, folder, cache, stack, max_stack)
        _compare_and_print([folder], metric, baseline, as_json=False)


def _train_sweep(
    plan: SweepPlan, folder: Path, cache: DataCache, stack: bool, max_stack: int | None
) -> None:
    """Train what the sweep in `folder` still misses, with a line per epoch on stderr."""
    from bloodcells.experiments.sweep import run_sweep

    runs = len(plan.variants) * len(plan.seeds)
    err.print(
        f"sweep: {len(plan.variants)} variants × {len(plan.seeds)} seeds = {runs} runs of "
        f"{plan.epochs} epoch{'s' if plan.epochs != 1 else ''} on {plan.data} → {folder}"
    )
    start = time.perf_counter()
    try:
        outcome = run_sweep(
            plan,
            folder,
            stack=stack,
            max_stack=max_stack,
            data=cache,
            say=err.print,
            stack_callbacks=lambda job, i, n: [StackLines(f"[{i}/{n}] {job.label()}", job)],
            run_callbacks=lambda name, config: [RunLines(name, config.seed)],
        )
    except KeyboardInterrupt:
        err.print(
            f"interrupted; finished epochs are saved in {folder}; continue with: "
            f"bloodcells sweep --resume {folder}"
        )
        raise typer.Exit(130) from None
    for message in outcome.diverged:
        err.print(Text.assemble(("diverged: ", "yellow"), message))
    err.print(
        f"trained {outcome.trained} runs in {time.perf_counter() - start:.0f} s"
        + (f" ({outcome.skipped} were already done)" if outcome.skipped else "")
    )


@app.command("compare")
def compare_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Sweep folders, run folders, or folders holding run folders."),
    ],
    metric: MetricOpt = "accuracy",
    baseline: BaselineOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Group runs by config minus the seed; means, 95% intervals, paired differences."""
    _compare_and_print(paths, metric, baseline, as_json)


def _compare_and_print(paths, metric: str, baseline: str | None, as_json: bool) -> None:
    from bloodcells.experiments.compare import compare_paths
    from bloodcells.experiments.plan import COMPARISON_FILE, is_sweep
    from bloodcells.viz.compare import COLUMNS, reading, table_rows

    result = compare_paths(paths, metric, baseline)
    if as_json:
        out.print(json.dumps(result, indent=2))
        return
    base = result["baseline"] or "base"
    table = Table(
        title=f"dev {metric.replace('_', ' ')} over seeds ({result['data']})",
        title_justify="left",
    )
    columns = [c.format(base=base) for c in COLUMNS] + ["verdict"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("variant", "verdict") else "right")
    styles = {"better": "bold green", "worse": "bold red"}
    for row in table_rows(result):
        cells = [row[c] for c in columns[:-1]]
        table.add_row(*cells, Text(row["verdict"], styles.get(row["verdict"], "")))
    out.print(table)
    for line in reading(result):
        out.print(Text.assemble(bold("answer: "), line))
    out.print(f"95% CI: {result['interval']}; p: {result['test']}; verdict: {result['rule']}")
    if result["left_out"]:
        reasons: dict[str, int] = {}
        for item in result["left_out"]:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        out.print(
            "left out: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        )
    for note in result["notes"]:
        out.print(f"note: {note}")
    if len(paths) == 1 and is_sweep(paths[0]):
        out.print(str(Path(paths[0]) / COMPARISON_FILE))


class _Lines:
    """A line on stderr after every epoch (and a transient bar in a terminal)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.perf_counter()
        self.progress = None
        self.task = None

    def _bar(self, epoch: int, epochs: int, batch: int, batches: int) -> None:
        if not err.is_terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if self.progress is None:
            self.progress = Progress(
                TextColumn(f"{self.label} epoch {epoch}/{epochs}".replace("[", "\\[")),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=batches)
        self.progress.update(self.task, completed=batch)

    def _line(self, text: str) -> None:
        self._stop()
        err.print(f"{self.label} {text} ({time.perf_counter() - self.start:.0f} s)")

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class StackLines(_Lines):
    """Progress of one stack: a line per epoch with each variant's mean dev accuracy."""

    def __init__(self, label: str, job) -> None:
        super().__init__(label)
        self.variant_of = {id(config): v.name for v, _, config, _ in job.members}

    def on_batch_end(self, state) -> None:
        self._bar(state.epoch, state.epochs, state.batch, state.batches)

    def on_epoch_end(self, state) -> None:
        accs: dict[str, list[float]] = {}
        for m in state.members:
            if m.history.epochs and m.history.last.epoch == state.epoch:
                name = self.variant_of.get(id(m.config), "?")
                accs.setdefault(name, []).append(m.history.last.dev_accuracy)
        means = ", ".join(
            f"{name} {sum(v) / len(v):.3f}" + (f" (×{len(v)})" if len(v) > 1 else "")
            for name, v in accs.items()
        )
        self._line(f"epoch {state.epoch}/{state.epochs}: mean dev accuracy {means}")


class RunLines(_Lines):
    """Progress of one run trained alone (--no-stack): a line per epoch."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(f"{name} seed {seed}")

    def on_fit_start(self, state) -> None: ...

    def on_batch_end(self, state) -> None:
        self._bar(state.epoch, state.config.epochs, state.batch, state.batches)

    def on_epoch_end(self, state) -> None:
        e = state.history.last
        self._line(f"epoch {e.epoch}/{state.config.epochs}: dev accuracy {e.dev_accuracy:.3f}")

    def on_fit_end(self, state) -> None:
        self._stop()
