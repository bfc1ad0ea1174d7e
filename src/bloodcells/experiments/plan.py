"""The sweep plan and its folder: variants × seeds, sweep.json written and read back.

A sweep folder holds sweep.json (the plan: variants, seeds, epochs, data, format version,
and the members' run folder names), one ordinary run folder per (variant, seed) and, once
compared, comparison.json. Its name is derived from the plan, so running the same command
again finds it (see bloodcells.experiments.sweep for how training continues).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bloodcells._version import __version__
from bloodcells.errors import BloodcellsError, ModelError, RunError
from bloodcells.experiments.variants import Variant, parse_seeds, parse_variants
from bloodcells.runs.record import CONFIG
from bloodcells.training.config import TrainConfig
from bloodcells.utils.devices import check_device, select_device
from bloodcells.utils.files import check_output_folder, write_atomic
from bloodcells.utils.validation import check_amp, check_epochs

SWEEP_FILE = "sweep.json"
COMPARISON_FILE = "comparison.json"
SWEEP_FORMAT = 1  # sweep.json's layout; another number is refused in one line
SWEEP_KIND = "bloodcells sweep"


MAX_RUNS = 400


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
    check_epochs(epochs)
    variants = parse_variants(variants) if isinstance(variants, str) else list(variants)
    seeds = parse_seeds(seeds if isinstance(seeds, str | int) else ",".join(map(str, seeds)))
    check_device(device)
    for v in variants:
        amp = v.config(0, epochs, device).amp
        try:
            check_amp(amp, select_device(device))
        except BloodcellsError as exc:
            raise ModelError(f"variant {v.name!r}: {exc}") from None
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
