"""A run as one portable file: ONNX or TorchScript, with its metadata, checked, with a card.

The exported graph takes raw pixels, float32 in [0, 1], N×C×H×W with any N (for uint8
images, divide by 255 first), does the lab's per-image standardization itself and returns
`logits` and `probabilities`. Everything needed to use it travels in the same file, as one
JSON object under the key "bloodcells" (ONNX metadata_props; a TorchScript extra file
bloodcells.json): classes, size, channels, the standardization, the training data's name,
the dev-set results (confusion matrix, per-class metrics), the unlike-training threshold and
the bloodcells version. `Predictor.from_path` reads it back as an engine
(bloodcells.inference.engines.load_export, which refuses a format_version it does not know
and metadata that disagrees with the graph), so `bloodcells predict model.onnx cells/`
needs no run folder.

After writing, the file is run (onnxruntime, or torch.jit.load) on the run's dev images and
compared with the PyTorch model: any probability more than CHECK_TOLERANCE apart is an error,
and the file is not put in place. Its model card is written next to it, named after it:
NAME.card.md for NAME.onnx and NAME.pt (both formats of one run share one card), so exports
of several runs can share a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bloodcells._version import __version__, versions
from bloodcells.data import EPS, Splits, to_unit
from bloodcells.errors import BloodcellsError, DataError, RunError
from bloodcells.evaluation.ood import UnlikePolicy
from bloodcells.inference.engines import load_export
from bloodcells.inference.engines.base import (
    EXTRA_FILE,
    FORMAT_VERSION,
    FORMATS,
    INPUT,
    INSTALL,
    METADATA_KEY,
    OUTPUTS,
    gist,
    quiet,
)
from bloodcells.inference.predictor import Predictor, data_name, dev_results, interrupted_note
from bloodcells.utils.files import output_file, output_folder, write_atomic

NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "torchscript": ()}
CHECK_TOLERANCE = 1e-4
CHECK_BATCH = 1024
CARD_SUFFIX = ".card.md"  # model.onnx -> model.card.md


class RawImageModel(nn.Module):
    """A trained model that takes raw pixels in [0, 1] and standardizes each image itself.

    The standardization is data.standardize written out (same ops, same order), without its
    empty-batch shortcut, which an exported graph cannot carry.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        std = images.std(dim=(1, 2, 3), keepdim=True)  # unbiased, as in the lab
        logits = self.model((images - mean) / (std + EPS))
        return logits, torch.softmax(logits, dim=1)


@dataclass
class CheckResult:
    """The exported file against the PyTorch model on the run's dev images."""

    images: int
    max_difference: float  # largest |probability difference| over images and classes
    same_class: int  # images whose predicted class agrees

    @property
    def passed(self) -> bool:
        return self.max_difference <= CHECK_TOLERANCE

    def __str__(self) -> str:
        return (
            f"largest probability difference {self.max_difference:.2e} on {self.images} dev "
            f"images (limit {CHECK_TOLERANCE:g}); same class for {self.same_class} of them"
        )


@dataclass
class ExportResult:
    path: Path
    card: Path
    check: CheckResult | None
    note: str  # why the check did not run, or ""
    notes: list[str] = field(default_factory=list)  # what else the user should know


def check_format(fmt: str) -> None:
    """A BloodcellsError, before any work, when `fmt` is unknown or its packages are missing."""
    if fmt not in FORMATS:
        raise BloodcellsError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    for module in NEEDS[fmt]:
        try:
            __import__(module)
        except ImportError:
            raise BloodcellsError(
                f"export to {fmt} needs the {module} package, which is not installed; {INSTALL}"
            ) from None


def export_paths(
    run, fmt: str, output: str | Path | None = None, overwrite: bool = False
) -> tuple[Path, Path]:
    """The model file and its card (card_path): `output` (a file, or a folder, made if it has
    no suffix), by default the run folder.

    An existing model file is replaced only with `overwrite`; so is an existing card, unless
    it is this run's card written by bloodcells (it is regenerated from the run).
    """
    suffix = FORMATS[fmt]
    output = Path(run.path if output is None else output)
    if not output.suffix and not output.exists():
        output = output / f"model{suffix}"  # a folder to be made (model files have suffixes)
    target = output_file(output, f"model{suffix}", (suffix,))
    card = card_path(target)
    if not overwrite:
        if target.exists():
            raise BloodcellsError(f"{target}: exists; pass overwrite=True to replace it")
        if card.exists() and not _is_card_of(card, run):
            raise BloodcellsError(
                f"{card}: exists and is not this run's card; choose another file name, "
                "or pass overwrite=True to replace it"
            )
    return target, card


def card_path(model_file: Path) -> Path:
    """The model card of an exported file: NAME.card.md for NAME.onnx or NAME.pt."""
    return model_file.with_name(model_file.stem + CARD_SUFFIX)


def export_run(
    run,
    fmt: str,
    output: str | Path | None = None,
    check: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export `run` (a runs.Run) to `fmt`; check it on the dev images unless told not."""
    check_format(fmt)
    target, card = export_paths(run, fmt, output, overwrite)
    splits, note = _dev_data(run)  # for the check and the card's counts
    meta = metadata(run, splits)
    model = RawImageModel(run.load_model("cpu"))
    made = not target.parent.exists()
    output_folder(target.parent)
    temp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        try:
            (write_onnx if fmt == "onnx" else write_torchscript)(model, meta, temp)
        except Exception as exc:  # the exporters raise many types; a bug, but the user's problem
            raise BloodcellsError(
                f"{target}: torch could not export this model to {fmt} ({gist(exc)}); "
                "try the other format"
            ) from exc
        result = None
        if check and splits is not None:
            result = check_export(Predictor.from_run(run, "cpu"), temp, fmt, splits)
            if not result.passed:
                raise BloodcellsError(
                    f"{target}: the exported model differs from the run's: {result}; "
                    "nothing was written"
                )
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
        if made and not target.exists():
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # the folder this export made, if it is still empty
    write_atomic(card, model_card(run, meta, target.stem))
    notes = [interrupted_note(run)] if run.interrupted else []
    notes += _unlike_notes(run)
    return ExportResult(target, card, result, note, notes)


def _dev_data(run) -> tuple[Splits | None, str]:
    """The run's data for the check, or None and why it is not there."""
    try:
        return run.load_data(), ""
    except (RunError, DataError) as exc:
        return None, f"the check could not run: {str(exc).splitlines()[0]}"


def metadata(run, splits: Splits | None = None) -> dict:
    """What an exported file carries about itself (see the module doc)."""
    c = run.config
    meta = {
        "format_version": FORMAT_VERSION,
        "bloodcells": __version__,
        "run": run.name,
        "model": c.model,
        "options": dict(c.options),
        "classes": list(run.classes),
        "size": c.image_size,
        "channels": c.channels,
        "input": {
            "name": INPUT,
            "dtype": "float32",
            "layout": "NCHW, any N",
            "range": [0.0, 1.0],
            "note": "raw pixels (uint8 / 255), grayscale or RGB as `channels`; resize to "
            "`size` with PIL bilinear; the standardization is inside the graph",
        },
        "outputs": list(OUTPUTS),
        "standardization": f"per image over C×H×W: (x - mean) / (std + {EPS:g}), unbiased std",
        "data": data_name(run.data_root),
        "dev": dev_results(run.metrics),
        "unlike_training": _unlike_training(run),
        "training": {
            "epochs": c.epochs,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "seed": c.seed,
            "parameters": run.info.parameters,
            "device": run.info.device,
            "created": run.info.created,
            "versions": run.info.versions,
        },
        "exported_with": versions(),
    }
    if splits is not None:
        meta["counts"] = {"train": splits.train.class_counts(), "dev": splits.test.class_counts()}
    return meta


def _unlike_training(run) -> dict:
    """The run's unlike-training policy as recorded in training (evaluation.ood.UnlikePolicy):
    the energy threshold, the training images' brightness/contrast range, the dev share."""
    policy = run.metrics.unlike_training
    return policy.to_dict() if policy is not None else {}


def _unlike_notes(run) -> list[str]:
    """What of the unlike-training check the exported file lacks (runs of older versions)."""
    policy = run.metrics.unlike_training or UnlikePolicy()
    return [f"the exported file: {n}" for n in policy.notes("the run did not record them")]


def _example(meta: dict) -> torch.Tensor:
    """Two images for tracing, drawn from a generator of their own: the caller's is untouched."""
    shape = (2, meta["channels"], meta["size"], meta["size"])
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def write_onnx(model: RawImageModel, meta: dict, path: Path) -> None:
    """One .onnx file (weights inline) with a dynamic batch axis and the metadata."""
    import onnx

    batch = torch.export.Dim("batch")
    with quiet():
        program = torch.onnx.export(
            model,
            (_example(meta),),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes={"images": {0: batch}},
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = f"bloodcells {meta['model']} ({meta['run']}): classes {meta['classes']}"
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    onnx.save_model(proto, str(path))


def write_torchscript(model: RawImageModel, meta: dict, path: Path) -> None:
    """A traced TorchScript file with the metadata as the extra file bloodcells.json."""
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(model, _example(meta))
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta)})


def check_export(reference: Predictor, path: Path, fmt: str, splits: Splits) -> CheckResult:
    """Run the exported file and the run's model on the dev images and compare."""
    engine, _ = load_export(path, fmt, "cpu")
    images = splits.test.images
    worst, same = 0.0, 0
    for start in range(0, len(images), CHECK_BATCH):
        x = to_unit(images[start : start + CHECK_BATCH])
        _, expected = reference.outputs(x)
        _, got = engine(x)
        worst = max(worst, float((expected - got).abs().max()))
        same += int((expected.argmax(1) == got.argmax(1)).sum())
    return CheckResult(len(images), worst, same)


def _is_card_of(card: Path, run) -> bool:
    try:
        with card.open(encoding="utf-8") as f:
            return f.readline().strip() == _card_marker(run)
    except (OSError, UnicodeDecodeError):
        return False


def _card_marker(run) -> str:
    return f"<!-- bloodcells model card of run {run.name} ({run.info.created}) -->"


def model_card(run, meta: dict, name: str = "model") -> str:
    """The card of `name`.onnx / `name`.pt: data, classes and counts, dev metrics, settings,
    intended use, limits."""
    from bloodcells.inference.modelcard import card_markdown

    return card_markdown(_card_marker(run), meta, name)
