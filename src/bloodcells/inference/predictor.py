"""Predictor: a run folder or an exported file, put to work on new, unlabelled images.

    predictor = Predictor.from_path("runs/<id>")       # or "model.onnx", "model.pt"
    predictions = predictor.predict("cells/")          # files, folders, globs, or arrays
    predictions.count()                                 # the differential count

Preprocessing is the run's own, exactly: decode_image with the run's Transform (colour mode,
size), scaling to [0, 1] and the lab's per-image standardization, the same functions training
and `evaluate` use. Each image gets a row: path, predicted class, its probability, one
probability per class, the second most likely class and a status:

- `unreadable`: the file cannot be decoded (listed, never dropped; no probabilities);
- `unlike-training`: an energy score above the run's dev-set threshold, or a brightness or
  contrast outside the training images' range (see bloodcells.evaluation.ood);
- `unsure`: its top probability is below `min_confidence` (default MIN_CONFIDENCE);
- `ok`: the rest.

MIN_CONFIDENCE is 0.5: below it the model gives the predicted class less than even odds.
On pbc32 (advanced CNN, 3 epochs, dev accuracy 0.889) it flags 3.6% of the dev images, and
those are right 24% of the time, chance level for four classes: they are guesses worth a
person's look. At 0.6, 12.7% are flagged and already 57% of those are right.

Work is streamed (predict_csv writes the rows to a CSV as they come): files are decoded in a
thread pool one chunk ahead of the model, so memory holds two chunks at most, whatever the
number of files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bloodcells.analysis.adapt import adapt_batchnorm, require_batchnorm
from bloodcells.cells.crops import CropPolicy
from bloodcells.data import Transform, standardize
from bloodcells.data.inputs import find_images, in_memory, load_image
from bloodcells.errors import BloodcellsError, RunError
from bloodcells.evaluation.ood import UNLIKE_TRAINING, UnlikePolicy, unlike_training
from bloodcells.inference.count import DifferentialCount, Tally, differential_count
from bloodcells.inference.engines import KINDS, Engine, TorchEngine, load_export
from bloodcells.ops.image_ops import dihedral_views
from bloodcells.runs.record import RunMetrics
from bloodcells.utils.devices import cpu_threads, decode_workers

MIN_CONFIDENCE = 0.5
CHUNK = 512  # images decoded and predicted at a time (batch_size)
MAX_CHUNK = 8192
NOT_A_MODEL = "neither a run folder nor a model file exported by bloodcells export (.onnx, .pt)"


@dataclass
class Predictor:
    """A trained model with everything needed to apply it: classes, transform, dev results.

    `engine` maps raw images (float32 in [0, 1], N×C×H×W, on the CPU) to (logits,
    probabilities), both N×K float32 on the CPU (see bloodcells.inference.engines).
    """

    engine: Engine
    classes: list[str]
    transform: Transform
    confusion: list[list[int]] | None = None  # dev set, rows true, columns predicted
    unlike_threshold: float | None = None  # energy score above which unlike-training
    pixel_range: dict | None = None  # {"mean": [low, high], "std": [...]}: evaluation.ood
    min_confidence: float = MIN_CONFIDENCE
    source: str = ""  # the run folder or file it came from
    kind: str = "model"  # run, onnx, torchscript or model
    info: dict | None = None  # what is known about the model (see export.metadata)
    notes: list[str] = field(default_factory=list)  # what the user should know (checks off)
    tta: bool = False  # average the probabilities over the 8 dihedral views
    dev_flagged: float | None = None  # share of the dev images flagged unlike-training
    crop_policy: CropPolicy | None = None  # how its training crops were cut (data crop-cells)

    def __post_init__(self) -> None:
        check_min_confidence(self.min_confidence)

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        device: str | None = None,
        min_confidence: float = MIN_CONFIDENCE,
        tta: bool = False,
    ) -> Predictor:
        """A run folder, or a .onnx or .pt (TorchScript) file made by `bloodcells export`."""
        path = Path(path)
        if path.is_dir():
            from bloodcells.runs.folder import load_run

            try:
                run = load_run(path)
            except RunError as exc:
                if (path / "config.json").exists():
                    raise
                raise RunError(f"{path}: {NOT_A_MODEL}") from exc
            return cls.from_run(run, device, min_confidence, tta)
        if not path.exists():
            raise BloodcellsError(f"{path}: no such file or folder")
        kind = KINDS.get(path.suffix.lower())
        if kind is None:
            raise BloodcellsError(f"{path}: {NOT_A_MODEL}")
        engine, meta = load_export(path, kind, device)
        return cls._from_metadata(engine, meta, path, kind, min_confidence, tta)

    @classmethod
    def from_run(
        cls,
        run,
        device: str | None = None,
        min_confidence: float = MIN_CONFIDENCE,
        tta: bool = False,
    ) -> Predictor:
        """The Predictor of a loaded run (bloodcells.runs.folder.Run)."""
        from bloodcells.utils.devices import select_device

        device_ = select_device(device)
        engine = TorchEngine(run.load_model(device_), device_)
        m = run.metrics
        unlike = m.unlike_training or UnlikePolicy()
        notes = [interrupted_note(run)] if run.interrupted else []
        notes += unlike.notes("the run did not record them")
        return cls(
            engine=engine,
            classes=list(run.classes),
            transform=run.transform,
            confusion=m.confusion_matrix,
            unlike_threshold=unlike.threshold,
            pixel_range=unlike.pixel_range,
            min_confidence=min_confidence,
            source=str(run.path),
            kind="run",
            info={
                "model": run.config.model,
                "data": data_name(run.data_root),
                "dev": dev_results(m),
            },
            notes=notes,
            tta=tta,
            dev_flagged=unlike.dev_flagged,
            crop_policy=crop_policy_of(run.info.crops),
        )

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, classes: Sequence[str], transform: Transform, **kwargs
    ) -> Predictor:
        """A Predictor of a model in hand (trained by fit, say): no dev results unless given."""
        device = next(model.parameters()).device
        engine = TorchEngine(model, device)
        return cls(engine=engine, classes=list(classes), transform=transform, **kwargs)

    @classmethod
    def _from_metadata(
        cls, engine: Engine, meta: dict, path: Path, kind: str, min_confidence: float, tta: bool
    ) -> Predictor:
        try:
            transform = Transform(int(meta["size"]), int(meta["channels"]))
            classes = [str(c) for c in meta["classes"]]
        except (KeyError, TypeError, ValueError, BloodcellsError) as exc:
            raise BloodcellsError(f"{path}: its bloodcells metadata is damaged ({exc})") from None
        dev = meta.get("dev") or {}
        unlike = UnlikePolicy.from_dict(meta.get("unlike_training") or {})
        notes = unlike.notes("the file does not carry them")
        info = {k: meta.get(k) for k in ("model", "data", "run", "bloodcells")} | {"dev": dev}
        return cls(
            engine=engine,
            classes=classes,
            transform=transform,
            confusion=dev.get("confusion_matrix"),
            unlike_threshold=unlike.threshold,
            pixel_range=unlike.pixel_range,
            min_confidence=min_confidence,
            source=str(path),
            kind=kind,
            info=info,
            notes=notes,
            tta=tta,
            dev_flagged=unlike.dev_flagged,
            crop_policy=crop_policy_of(meta.get("crops")),
        )

    @property
    def columns(self) -> list[str]:
        probabilities = [f"p_{c}" for c in self.classes]
        return ["path", "predicted", "probability", *probabilities, "second", "status"]

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, probabilities) of raw images, float32 in [0, 1], N×C×H×W.

        With `tta` the probabilities are the mean over the 8 dihedral views (any engine: the
        views are taken of the raw images); the logits, which the unlike-training score
        reads, stay those of the images as they are.
        """
        logits, probabilities = self.engine(images)
        if self.tta:
            views = [self.engine(view)[1] for view in dihedral_views(images)[1:]]
            probabilities = torch.stack([probabilities, *views]).mean(dim=0)
        return logits, probabilities

    def adapt_batchnorm(self, images: torch.Tensor) -> None:
        """Re-estimate the model's BatchNorm statistics on raw target `images` (Schneider et
        al. 2020), on a copy: the run or file it came from is never changed."""
        if not isinstance(self.engine, TorchEngine):
            raise BloodcellsError(
                f"{self.source}: adapt_batchnorm needs a run folder (an exported file is fixed)"
            )
        require_batchnorm(self.engine.model, (self.info or {}).get("model", self.source))
        x = standardize(images.to(self.engine.device))
        self.engine = TorchEngine(adapt_batchnorm(self.engine.model, x), self.engine.device)
        self.notes.append(f"BatchNorm statistics re-estimated on {len(images):,} of the images")

    def rows(self, images: torch.Tensor, paths: Sequence[str]) -> list[dict]:
        """One row per image (see the module doc) for raw images and their names."""
        if not len(images):
            return []
        logits, probabilities = self.outputs(images)
        top = probabilities.topk(min(2, len(self.classes)), dim=1)
        unlike = self.unlike_training(images, logits).tolist()
        p, index = top.values.tolist(), top.indices.tolist()
        rows = []
        for i, path in enumerate(paths):
            if unlike[i]:
                status = "unlike-training"
            elif p[i][0] < self.min_confidence:
                status = "unsure"
            else:
                status = "ok"
            row = {"path": path, "predicted": self.classes[index[i][0]], "probability": p[i][0]}
            row.update(zip(self.columns[3:-2], probabilities[i].tolist(), strict=True))
            row["second"] = self.classes[index[i][1]] if len(index[i]) > 1 else ""
            row["status"] = status
            rows.append(row)
        return rows

    def unlike_training(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Which raw images are unlike the training data (see bloodcells.evaluation.ood)."""
        return unlike_training(images, logits, self.unlike_threshold, self.pixel_range)

    def dev_flagged_share(self) -> float | None:
        """The share of the model's dev images flagged unlike-training, as recorded when it
        was trained; None when it was not (older runs and files)."""
        return self.dev_flagged

    def unreadable_row(self, path: str) -> dict:
        return dict.fromkeys(self.columns, None) | {"path": path, "status": "unreadable"}

    def stream(
        self, files: Sequence[str], batch_size: int = CHUNK, workers: int | None = None
    ) -> Iterator[list[dict]]:
        """Rows of `files`, a chunk of `batch_size` at a time, in order; unreadable files get
        unreadable rows. The next chunk is decoded in a thread pool while this one is
        predicted.

        The cores are shared: until the stream ends, PyTorch's intra-op threads are the
        cores the decoding pool leaves (at least one), then restored (a process-wide
        setting). Two workers decoding on two cores while two OpenMP threads spun for the
        model made predict 3-5x slower on a busy machine (benchmarks/bench_predict.py).
        """
        check_batch_size(batch_size)
        workers = workers or decode_workers()
        pool = ThreadPoolExecutor(max_workers=workers)

        def decode(start: int) -> list[Future]:
            chunk = files[start : start + batch_size]
            return [pool.submit(load_image, f, self.transform) for f in chunk]

        try:
            with cpu_threads(max(1, (os.cpu_count() or 1) - workers)):
                pending = decode(0)
                for start in range(0, len(files), batch_size):
                    current, pending = pending, decode(start + batch_size)  # [] past the end
                    yield self._chunk_rows(files[start : start + batch_size], current)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _chunk_rows(self, paths: Sequence[str], futures: list) -> list[dict]:
        decoded = [f.result() for f in futures]
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        if good:
            images = torch.stack([decoded[i] for i in good])
            predicted = iter(self.rows(images, [paths[i] for i in good]))
        rows = []
        for path, d in zip(paths, decoded, strict=True):
            rows.append(self.unreadable_row(path) if isinstance(d, str) else next(predicted))
        return rows

    def predict(
        self, images_or_paths, batch_size: int = CHUNK, workers: int | None = None
    ) -> Predictions:
        """Rows for image files, folders, glob patterns, arrays or PIL images.

        Arrays (numpy or torch) are N×C×H×W (or one C×H×W) at the model's size and channels,
        uint8 or float in [0, 1]; PIL images are converted and resized as files are.
        """
        images, names = in_memory(images_or_paths, self.transform)
        if images is not None:
            chunks = range(0, len(images), check_batch_size(batch_size))
            rows = [
                r
                for s in chunks
                for r in self.rows(images[s : s + batch_size], names[s : s + batch_size])
            ]
            return Predictions(self, rows)
        found = find_images(images_or_paths)
        rows = [r for chunk in self.stream(found.files, batch_size, workers) for r in chunk]
        return Predictions(self, rows, found.skipped_count)

    def count(self, rows, n_resamples: int | None = None, seed: int = 0) -> DifferentialCount:
        """The differential count of prediction rows (or a Tally of them)."""
        from bloodcells.stats.intervals import BOOTSTRAP_RESAMPLES

        tally = rows if isinstance(rows, Tally) else Tally(list(self.classes)).add(rows)
        return differential_count(
            tally, self.confusion, self.settings(), n_resamples or BOOTSTRAP_RESAMPLES, seed
        )

    def settings(self) -> dict:
        """How the rows were made, for the count's JSON."""
        return {
            "model": self.source,
            "kind": self.kind,
            "classes": list(self.classes),
            "size": self.transform.size,
            "channels": self.transform.channels,
            "min_confidence": self.min_confidence,
            "unlike_training": {
                "energy_threshold": self.unlike_threshold,
                "pixel_range": self.pixel_range,
                "meaning": UNLIKE_TRAINING,
            },
        }


@dataclass
class Predictions:
    """Prediction rows (dicts with `columns` keys), pandas-free; to_frame() for a DataFrame."""

    predictor: Predictor
    rows: list[dict]
    skipped: int = 0  # files skipped as not images

    @property
    def columns(self) -> list[str]:
        return self.predictor.columns

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, key: str | int):
        """A column (a list) by name, or a row (a dict) by position."""
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(f"no column {key!r}; columns: {', '.join(self.columns)}")
            return [row[key] for row in self.rows]
        return self.rows[key]

    def to_dict(self) -> dict[str, list]:
        return {c: self[c] for c in self.columns}

    def to_frame(self):
        """The rows as a pandas DataFrame (pandas is optional: not a dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise BloodcellsError(
                "to_frame needs pandas, which is not installed (pip install pandas); "
                "the rows, columns and to_dict() work without it"
            ) from None
        return pd.DataFrame(self.rows, columns=self.columns)

    def count(self, n_resamples: int | None = None, seed: int = 0) -> DifferentialCount:
        return self.predictor.count(self.rows, n_resamples, seed)


def crop_policy_of(crops: dict | None) -> CropPolicy | None:
    """The crop policy in a crop set's record (cells.crop_set), or None without one."""
    if not crops or "crop_policy" not in crops:
        return None
    return CropPolicy.from_dict(crops["crop_policy"])


def check_min_confidence(min_confidence: float) -> float:
    ok = isinstance(min_confidence, int | float) and not isinstance(min_confidence, bool)
    if not ok or not 0 <= min_confidence <= 1:  # nan too
        raise BloodcellsError(f"min_confidence must be a number from 0 to 1, not {min_confidence}")
    return min_confidence


def interrupted_note(run) -> str:
    """What to say of an interrupted run (runs.Run.interrupted) that is put to use."""
    return (
        f"{run.path}: interrupted at epoch {run.epochs_done} of {run.epochs_target}; "
        "using its last saved epoch"
    )


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_CHUNK:
        raise BloodcellsError(f"batch_size must be 1 to {MAX_CHUNK}, not {batch_size}")
    return batch_size


def data_name(data_root: str | None) -> str | None:
    return Path(data_root).name if data_root else None


def dev_results(metrics: RunMetrics) -> dict:
    """The dev-set results a Predictor and an export carry, from a run's record."""
    keys = ("n", "accuracy", "balanced_accuracy", "per_class", "confusion_matrix", "epoch")
    return {k: getattr(metrics, k) for k in keys if getattr(metrics, k) is not None}
