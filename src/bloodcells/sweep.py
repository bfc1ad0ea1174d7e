"""Sweeps: variants × seeds of a model, trained side by side (stacked), one run folder each.

A variant is a change to the lab's advanced CNN, written as on the command line: a name of
exercise 3 (`base`, `bn2`, `dropout`, `extra_fc`), any train option as KEY=VALUE (`lr=1e-3`,
`model=simple`, `batch_size=16`, `head_dropout=0.5`), or several joined with `+`
(`bn2+dropout`). `lab` stands for the whole of exercise 3.

A sweep folder holds sweep.json (the plan: variants, seeds, epochs, data, format version,
and the members' run folder names), one ordinary run folder per (variant, seed) and, once
compared, comparison.json. Its name is derived from the plan, so running the same command
again finds it and continues with what is missing: finished runs are skipped, interrupted
ones continue from their last saved epoch (stacked again when they can be: members that
stopped at the same epoch resume together, exactly as if never stopped), runs with no
finished epoch start again, diverged runs stay as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from bloodcells.config import MAX_EPOCHS, MAX_SEED, TrainConfig, check_whole
from bloodcells.data import Splits, Transform, load_dataset
from bloodcells.devices import check_device, select_device
from bloodcells.errors import BloodcellsError, ModelError, RunError, TrainingDiverged
from bloodcells.files import check_output_folder, write_atomic
from bloodcells.models import build_model, get_spec
from bloodcells.runs import (
    CHECKPOINT,
    CONFIG,
    RunWriter,
    load_run,
    read_checkpoint,
    writer_alive,
)
from bloodcells.stacked import (
    Member,
    StackCallback,
    fit_stacked,
    max_members,
    split_evenly,
    stack_key,
    stackable,
)
from bloodcells.train import Callback, History, fit, make_model, make_optimizer, restore
from bloodcells.version import __version__

SWEEP_FILE = "sweep.json"
COMPARISON_FILE = "comparison.json"
SWEEP_FORMAT = 1  # sweep.json's layout; another number is refused in one line
SWEEP_KIND = "bloodcells sweep"

LAB_VARIANTS = ("base", "bn2", "dropout", "extra_fc", "lr=1e-3", "lr=5e-5")
NAMED = {
    "base": {},
    "bn2": {"bn2": True},  # (a) BatchNorm after the second conv block
    "dropout": {"head_dropout": 0.3},  # (b) Dropout(0.3) between the linear layers
    "extra_fc": {"extra_fc": 32},  # (c) a third linear layer of 32 units
}
# KEY=VALUE a variant may set: TrainConfig fields, then model options
FIELDS: dict[str, type] = {
    "model": str,
    "lr": float,
    "batch_size": int,
    "image_size": int,
    "channels": int,
    "recipe": str,
    "schedule": str,
    "label_smoothing": float,
    "amp": bool,
}
OPTIONS: dict[str, type] = {"bn2": bool, "head_dropout": float, "extra_fc": int, "pretrained": bool}
ALIASES = {"size": "image_size", "batch": "batch_size"}
SWEEP_WIDE = ("seed", "epochs", "device")  # set for the whole sweep, never per variant

MAX_VARIANTS = 24
MAX_SEEDS = 50
MAX_RUNS = 400


@dataclass(frozen=True)
class Variant:
    """A named change to the default training config (the lab's advanced CNN)."""

    name: str
    settings: tuple[tuple[str, object], ...] = ()  # (key, value), keys from FIELDS or OPTIONS

    def config(self, seed: int = 0, epochs: int = 5, device: str | None = None) -> TrainConfig:
        """The TrainConfig of this variant; a one-line error naming the variant if invalid."""
        values = dict(self.settings)
        model = values.get("model", "advanced")
        try:
            spec = get_spec(model)
            fields = {k: v for k, v in values.items() if k in FIELDS}
            config = TrainConfig(
                **fields
                | {
                    "model": model,
                    "epochs": epochs,
                    "seed": seed,
                    "device": device,
                    "channels": values.get("channels", spec.channels),
                    "options": {k: v for k, v in values.items() if k in OPTIONS and v},
                }
            )
            with torch.device("meta"):  # the options and image size, allocating nothing
                build_model(model, config.channels, 2, config.image_size, **config.options)
        except BloodcellsError as exc:
            raise type(exc)(f"variant {self.name!r}: {exc}") from None
        return config

    def to_dict(self) -> dict:
        return {"name": self.name, "settings": dict(self.settings)}


def parse_variant(text: str) -> Variant:
    """One variant: names and KEY=VALUE joined with '+'; a ModelError says what is wrong."""
    name = text.strip()
    if not name:
        raise ModelError("an empty variant; use e.g. base, bn2, dropout, extra_fc, lr=1e-3")
    settings: dict[str, object] = {}
    for part in (p.strip() for p in name.split("+")):
        if part in NAMED:
            changes = NAMED[part]
        elif "=" in part:
            key, _, raw = part.partition("=")
            key = _key(key.strip(), name)
            changes = {key: _value(key, raw.strip(), name)}
        else:
            raise ModelError(
                f"unknown variant {part!r}; use {', '.join(NAMED)}, lab, or KEY=VALUE "
                f"with KEY one of {', '.join([*FIELDS, *OPTIONS])} (join with +)"
            )
        for key, value in changes.items():
            if key in settings and settings[key] != value:
                raise ModelError(f"variant {name!r} sets {key} twice")
            settings[key] = value
    return Variant(name, tuple(sorted(settings.items())))


def _key(key: str, variant: str) -> str:
    key = key.replace("-", "_").lower()
    key = ALIASES.get(key, key)
    if key in SWEEP_WIDE:
        flag = "--seeds" if key == "seed" else f"--{key}"
        raise ModelError(f"variant {variant!r}: {key} is set for the whole sweep ({flag})")
    if key not in FIELDS and key not in OPTIONS:
        raise ModelError(
            f"variant {variant!r}: unknown option {key!r}; "
            f"options: {', '.join([*FIELDS, *OPTIONS])}"
        )
    return key


def _value(key: str, raw: str, variant: str) -> object:
    kind = FIELDS.get(key) or OPTIONS[key]
    try:
        if kind is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes", "on")
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if not raw:
            raise ValueError(raw)
        return raw
    except ValueError:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "")
        raise ModelError(
            f"variant {variant!r}: {key}={raw!r} is not {wanted or 'a value'}"
        ) from None


def parse_variants(text: str) -> list[Variant]:
    """Comma-separated variants; `lab` is exercise 3's six. Duplicates are refused."""
    parts = [p.strip() for p in str(text).split(",")]
    names: list[str] = []
    for part in parts:
        if not part:
            continue
        names.extend(LAB_VARIANTS if part == "lab" else [part])
    if not names:
        raise ModelError("no variants given; use e.g. --variants lab or --variants base,bn2")
    variants = [parse_variant(n) for n in names]
    seen: dict[str, str] = {}
    for v in variants:  # each checked now (a one-line error naming it), and told apart
        key = json.dumps(v.config().to_dict(), sort_keys=True)
        if key in seen:
            raise ModelError(f"variants {seen[key]!r} and {v.name!r} are the same config; keep one")
        seen[key] = v.name
    if len(variants) > MAX_VARIANTS:
        raise ModelError(f"at most {MAX_VARIANTS} variants in one sweep, not {len(variants)}")
    return variants


def parse_seeds(text: str | int) -> list[int]:
    """`5` (seeds 0 to 4), `0,3,7` or `10-14`; between 1 and MAX_SEEDS distinct seeds."""
    text = str(text).strip()
    try:
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if not 1 <= count <= MAX_SEEDS:
                raise BloodcellsError(f"--seeds must be from 1 to {MAX_SEEDS}, not {count}")
            return list(range(count))
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
            low, high = int(m[1]), int(m[2])
            if high < low:
                raise ValueError(text)
            seeds = list(range(low, high + 1)) if high - low < MAX_SEEDS else [0] * (MAX_SEEDS + 1)
        else:
            seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise BloodcellsError(
            f"--seeds takes a count (5), a list (0,3,7) or a range (10-14), not {text!r}"
        ) from None
    if len(seeds) > MAX_SEEDS:
        raise BloodcellsError(f"at most {MAX_SEEDS} seeds in one sweep, not {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise BloodcellsError(f"--seeds lists a seed twice: {text}")
    if any(s > MAX_SEED for s in seeds):
        raise BloodcellsError(f"seeds must be at most {MAX_SEED}")
    return seeds


def lr_text(lr: float) -> str:
    """A learning rate as the lab writes it: 1e-3, 5e-5, 2.5e-4, 0.01."""
    if lr >= 0.01 or lr <= 0:
        return f"{lr:g}"
    exponent = math.floor(math.log10(lr))
    mantissa = float(f"{lr / 10**exponent:.6g}")
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def variant_name(config: TrainConfig) -> str:
    """The variant a config is, named as `parse_variant` reads it back ('base' for none).

    Settings are named where they differ from the default config of the same model and
    recipe; the number of epochs never is (a sweep sets it for every variant).
    """
    parts = []
    defaults = TrainConfig(model=config.model, recipe=config.recipe)
    if config.model != "advanced":
        parts.append(f"model={config.model}")
    if config.recipe != "lab":
        parts.append(f"recipe={config.recipe}")
    options = {k: v for k, v in config.options.items() if v}
    if options.get("bn2"):
        parts.append("bn2")
    if "head_dropout" in options:
        hd = options["head_dropout"]
        parts.append("dropout" if hd == 0.3 else f"head_dropout={hd:g}")
    if "extra_fc" in options:
        fc = options["extra_fc"]
        parts.append("extra_fc" if fc == 32 else f"extra_fc={fc}")
    if options.get("pretrained"):
        parts.append("pretrained")
    if config.lr is not None and config.lr != defaults.lr:
        parts.append(f"lr={lr_text(config.lr)}")
    if config.batch_size != defaults.batch_size:
        parts.append(f"batch_size={config.batch_size}")
    if config.schedule != defaults.schedule:
        parts.append(f"schedule={config.schedule}")
    if config.label_smoothing != defaults.label_smoothing:
        parts.append(f"label_smoothing={config.label_smoothing:g}")
    if config.amp:
        parts.append("amp=true")
    if config.image_size != defaults.image_size:
        parts.append(f"image_size={config.image_size}")
    if config.channels != get_spec(config.model).channels:
        parts.append(f"channels={config.channels}")
    return "+".join(parts) or "base"


def run_folder_name(variant: str, seed: int) -> str:
    """The member's run folder in the sweep folder: the variant, safe for any file system."""
    slug = re.sub(r"[^A-Za-z0-9._+=-]", "_", variant)[:80]
    return f"{slug}-seed{seed}"


@dataclass
class SweepPlan:
    """What a sweep trains: every variant with every seed, for `epochs` epochs on `data`."""

    data: str
    variants: list[Variant]
    seeds: list[int]
    epochs: int = 5
    device: str | None = None
    classes: list[str] = field(default_factory=list)  # filled in once the data is read

    def __post_init__(self) -> None:
        runs = len(self.variants) * len(self.seeds)
        if runs > MAX_RUNS:
            raise BloodcellsError(
                f"{len(self.variants)} variants × {len(self.seeds)} seeds = {runs} runs; "
                f"at most {MAX_RUNS} in one sweep"
            )
        for v in self.variants:
            v.config(self.seeds[0], self.epochs, self.device)  # every variant checked now

    def members(self) -> list[tuple[Variant, int, TrainConfig, str]]:
        """(variant, seed, config, run folder name) of every run, variants first."""
        return [
            (v, s, v.config(s, self.epochs, self.device), run_folder_name(v.name, s))
            for v in self.variants
            for s in self.seeds
        ]

    def fingerprint(self) -> str:
        """A short hash of what decides the results; the sweep folder's name holds it."""
        key = {
            "data": self.data,
            "variants": [v.to_dict() for v in self.variants],
            "seeds": self.seeds,
            "epochs": self.epochs,
            "device": self.device,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]

    def folder_name(self) -> str:
        return f"sweep-{self.fingerprint()}"

    def to_dict(self) -> dict:
        return {
            "kind": SWEEP_KIND,
            "format": SWEEP_FORMAT,
            "bloodcells": __version__,
            "data": self.data,
            "classes": self.classes,
            "variants": [v.to_dict() for v in self.variants],
            "seeds": self.seeds,
            "epochs": self.epochs,
            "device": self.device,
            "members": [
                {"variant": v.name, "seed": s, "run": name} for v, s, _, name in self.members()
            ],
        }

    @classmethod
    def from_dict(cls, saved: dict, where: Path) -> SweepPlan:
        """A plan as sweep.json recorded it; a RunError for another format version."""
        fmt = saved.get("format") if isinstance(saved, dict) else None
        if not isinstance(saved, dict) or saved.get("kind") != SWEEP_KIND:
            raise RunError(f"{where}: not a sweep file (made by bloodcells sweep)")
        if fmt != SWEEP_FORMAT:
            made = saved.get("bloodcells", "an unknown version")
            newer = isinstance(fmt, int) and fmt > SWEEP_FORMAT
            raise RunError(
                f"{where}: sweep format {fmt} (bloodcells {made}) is "
                + (
                    f"newer than this bloodcells {__version__} reads; update bloodcells"
                    if newer
                    else f"older than this bloodcells {__version__} reads ({SWEEP_FORMAT}); "
                    "its runs still work with compare; run the sweep again into a new folder"
                )
            )
        try:
            variants = [
                Variant(v["name"], tuple(sorted(v["settings"].items()))) for v in saved["variants"]
            ]
            return cls(
                data=saved["data"],
                variants=variants,
                seeds=[int(s) for s in saved["seeds"]],
                epochs=int(saved["epochs"]),
                device=saved.get("device"),
                classes=list(saved.get("classes") or []),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RunError(f"{where}: damaged ({type(exc).__name__}: {exc})") from None


def plan_sweep(
    data: str | Path,
    variants: str | Sequence[Variant] = "lab",
    seeds: str | int | Sequence[int] = 5,
    epochs: int = 5,
    device: str | None = None,
) -> SweepPlan:
    """A checked plan: every variant's config is valid and the device exists (nothing made)."""
    check_whole("--epochs", epochs, 1, MAX_EPOCHS)
    variants = parse_variants(variants) if isinstance(variants, str) else list(variants)
    seeds = parse_seeds(seeds if isinstance(seeds, str | int) else ",".join(map(str, seeds)))
    check_device(device)
    for v in variants:
        if v.config(0, epochs, device).amp and select_device(device).type != "cuda":
            raise ModelError(f"variant {v.name!r}: amp (bf16 autocast) needs a CUDA device")
    root = Path(data)
    if not root.is_dir():
        raise BloodcellsError(f"{data}: no such dataset folder")
    return SweepPlan(str(root.resolve()), variants, seeds, epochs, device)


@dataclass
class Sweep:
    """A sweep folder read back: its plan and where its runs are."""

    path: Path
    plan: SweepPlan
    info: dict

    def run_paths(self) -> list[Path]:
        return [self.path / m["run"] for m in self.info.get("members", [])]


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep folder's sweep.json; a RunError (one line) when it is not one."""
    path = Path(path)
    file = path / SWEEP_FILE
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: is a file, not a sweep folder")
    if not file.is_file():
        raise RunError(
            f"{path}: not a sweep folder (no {SWEEP_FILE}); sweeps are made by bloodcells sweep"
        )
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{file}: unreadable ({type(exc).__name__}); the sweep is damaged") from None
    return Sweep(path, SweepPlan.from_dict(info, file), info)


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


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
    writer = run.metrics.get("writer")
    running = run.metrics.get("status") == "running" and writer_alive(writer)
    if running and writer.get("pid") != os.getpid():
        raise RunError(
            f"{run_dir}: process {writer.get('pid')} is training this run right now; "
            "wait for it or stop it first"
        )
    if run.metrics.get("status") == "diverged":
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
    """Train one job's members into their run folders; the divergence messages, if any."""
    num_classes = len(splits.classes)
    trained = "stacked" if job.stacked else "alone"
    members = []
    for variant, seed, config, run_dir in job.members:
        device = select_device(config.device)
        run_dir.mkdir(parents=True, exist_ok=True)
        model, optimizer, history = _member(config, run_dir, job.epochs_done, num_classes, device)
        extra = {
            "sweep": {
                "folder": sweep_name,
                "variant": variant.name,
                "seed": seed,
                "trained": trained,
                "stack_size": len(job.members) if job.stacked else 1,
            }
        }
        callbacks: list[Callback] = [RunWriter(run_dir, splits.root, extra)]
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


def open_sweep(out: str | Path, plan: SweepPlan) -> tuple[Path, bool]:
    """The plan's sweep folder under `out` (made, with sweep.json, if new); and whether
    it already existed (a continued sweep)."""
    out = check_output_folder(out)
    folder = out / plan.folder_name()
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder}: is a file, not a sweep folder; move it away")
    if (folder / SWEEP_FILE).is_file():
        saved = load_sweep(folder).plan
        if saved.fingerprint() != plan.fingerprint():
            raise RunError(f"{folder}: holds another sweep; move it away")
        plan.classes = plan.classes or saved.classes
        return folder, True
    folder.mkdir(parents=True, exist_ok=True)
    write_sweep_file(folder, plan)
    return folder, False


def write_sweep_file(folder: Path, plan: SweepPlan) -> None:
    info = plan.to_dict() | {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
    }
    old = folder / SWEEP_FILE
    if old.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            info["created"] = json.loads(old.read_text()).get("created", info["created"])
    write_atomic(old, json.dumps(info, indent=2))


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
    """Train every run the sweep in `folder` still misses; see the module docstring."""
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


def iter_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders named by `paths`: sweep folders (their members), run folders, or folders
    holding run folders; in the order given, each once."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.exists() and not path.is_dir():
            raise RunError(f"{path}: is a file, not a run or sweep folder")
        if not path.exists():
            raise RunError(f"{path}: no such run or sweep folder")
        if is_sweep(path):
            found += load_sweep(path).run_paths()
        elif (path / CONFIG).is_file():
            found.append(path)
        else:
            inner = sorted(p for p in path.iterdir() if (p / CONFIG).is_file() or is_sweep(p))
            if not inner:
                raise RunError(f"{path}: holds no run or sweep folders")
            found += iter_runs(inner)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique
