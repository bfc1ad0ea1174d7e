"""A run as one portable file: ONNX or TorchScript, with its metadata, checked, with a card.

The exported graph takes raw pixels, float32 in [0, 1], N×C×H×W with any N (for uint8
images, divide by 255 first), does the lab's per-image standardization itself and returns
`logits` and `probabilities`. Everything needed to use it travels in the same file, as one
JSON object under the key "bloodcells" (ONNX metadata_props; a TorchScript extra file
bloodcells.json): classes, size, channels, the standardization, the training data's name,
the dev-set results (confusion matrix, per-class metrics), the unlike-training threshold and
the bloodcells version. `Predictor.from_path` reads it back (load_export below, which
refuses a format_version it does not know and metadata that disagrees with the graph), so
`bloodcells predict model.onnx cells/` needs no run folder.

After writing, the file is run (onnxruntime, or torch.jit.load) on the run's dev images and
compared with the PyTorch model: any probability more than CHECK_TOLERANCE apart is an error,
and the file is not put in place. Its model card is written next to it, named after it:
NAME.card.md for NAME.onnx and NAME.pt (both formats of one run share one card), so exports
of several runs can share a folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bloodcells._version import __version__, versions
from bloodcells.data import EPS, Splits, Transform, to_unit
from bloodcells.errors import BloodcellsError, DataError, RunError
from bloodcells.evaluation.ood import DEV_FLAGGED, flagged_share, pixel_range
from bloodcells.inference.engines import TorchEngine
from bloodcells.inference.predictor import (
    METADATA_KEY,
    Predictor,
    data_name,
    dev_results,
    interrupted_note,
)
from bloodcells.utils.files import output_file, output_folder, write_atomic

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "torchscript": ()}
CHECK_TOLERANCE = 1e-4
CHECK_BATCH = 1024
INPUT, OUTPUTS = "images", ("logits", "probabilities")
EXTRA_FILE = "bloodcells.json"
CARD_SUFFIX = ".card.md"  # model.onnx -> model.card.md
FORMAT_VERSION = 1  # of the metadata: what this release writes
READ_VERSIONS = (1,)  # what it reads
INSTALL = "pip install 'bloodcells[export]'"


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
            raise BloodcellsError(f"{target}: exists; pass --overwrite to replace it")
        if card.exists() and not _is_card_of(card, run):
            raise BloodcellsError(
                f"{card}: exists and is not this run's card; choose another file name, "
                "or pass --overwrite to replace it"
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
    splits, note = _dev_data(run)  # for the check, the card's counts, the pixel range
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
                f"{target}: torch could not export this model to {fmt} ({_gist(exc)}); "
                f"try the other format, or --debug for the details"
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
        "unlike_training": _unlike_training(run, splits),
        "training": {
            "epochs": c.epochs,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "seed": c.seed,
            "parameters": run.info.get("parameters"),
            "device": run.info.get("device"),
            "created": run.info.get("created"),
            "versions": run.info.get("versions"),
        },
        "exported_with": versions(),
    }
    if splits is not None:
        meta["counts"] = {"train": splits.train.class_counts(), "dev": splits.test.class_counts()}
    return meta


def _unlike_training(run, splits: Splits | None) -> dict:
    """The run's energy threshold, the brightness/contrast range of its training images and
    the share of its dev images the two flag."""
    unlike = dict(run.metrics.get("unlike_training") or {})
    if splits is None:
        return unlike
    if "pixel_range" not in unlike:
        unlike["pixel_range"] = pixel_range(splits.train.images)
    if unlike.get(DEV_FLAGGED) is None:
        engine = TorchEngine(run.load_model("cpu"))
        unlike[DEV_FLAGGED] = flagged_share(
            engine, splits.test.images, unlike.get("threshold"), unlike["pixel_range"]
        )
    return unlike


def _quiet():
    """Silence the exporters' progress prints and deprecation warnings (torch.jit is)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _example(meta: dict) -> torch.Tensor:
    return torch.rand(2, meta["channels"], meta["size"], meta["size"])


def write_onnx(model: RawImageModel, meta: dict, path: Path) -> None:
    """One .onnx file (weights inline) with a dynamic batch axis and the metadata."""
    import onnx

    batch = torch.export.Dim("batch")
    with _quiet():
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
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, _example(meta))
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta)})


def load_export(path: Path, kind: str, device: str | None = None) -> tuple[object, dict]:
    """An exported file's engine (raw images -> logits, probabilities) and its metadata,
    checked: a format version this release reads, metadata that agrees with the graph."""
    load = _load_onnx if kind == "onnx" else _load_torchscript
    engine, meta = load(path, device)
    check_metadata(meta, path)
    if isinstance(engine, OnnxEngine):
        _check_onnx_shapes(engine.session, meta, path)
    _check_graph(engine, meta, path)
    return engine, meta


def check_metadata(meta: dict, path: Path) -> None:
    """A BloodcellsError naming `path` unless `meta` is metadata this release can use."""
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        readable = ", ".join(str(v) for v in READ_VERSIONS)
        raise BloodcellsError(
            f"{path}: its bloodcells metadata has format_version {version!r}, and bloodcells "
            f"{__version__} reads only format_version {readable}; use the bloodcells that "
            "exported it, or export the run again with this one"
        )
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes:
        raise _damaged(path, "its classes are not a list of names")
    if not all(isinstance(c, str) and c for c in classes):
        raise _damaged(path, "a class name is not a non-empty text")
    if len(set(classes)) != len(classes):
        raise _damaged(path, "a class name appears twice")
    for key in ("size", "channels"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
            raise _damaged(path, f"{key} is {meta.get(key)!r}, not a whole number")
    try:
        Transform(meta["size"], meta["channels"])
    except DataError as exc:
        raise _damaged(path, str(exc)) from None


def _damaged(path: Path, what: str) -> BloodcellsError:
    return BloodcellsError(
        f"{path}: its bloodcells metadata is damaged ({what}); export the run again"
    )


def _disagree(path: Path, what: str) -> BloodcellsError:
    return BloodcellsError(
        f"{path}: its bloodcells metadata disagrees with its graph: {what}; "
        "the file was changed after export: export the run again"
    )


def _check_onnx_shapes(session, meta: dict, path: Path) -> None:
    """The graph's input and outputs: the names export gives them, the metadata's shapes."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if INPUT not in inputs or not all(name in outputs for name in OUTPUTS):
        takes = ", ".join(inputs) or "nothing"
        gives = ", ".join(outputs) or "nothing"
        raise _disagree(
            path, f"it takes {takes} and gives {gives}, not {INPUT} -> {', '.join(OUTPUTS)}"
        )
    shape = inputs[INPUT]
    if len(shape) != 4:
        raise _disagree(path, f"its input has {len(shape)} dimensions, not N×C×H×W")
    channels, height, width = shape[1:]
    if isinstance(channels, int) and channels != meta["channels"]:
        raise _disagree(
            path, f"the metadata says {meta['channels']} channels, the graph takes {channels}"
        )
    size = meta["size"]
    if any(isinstance(d, int) and d != size for d in (height, width)):
        raise _disagree(
            path, f"the metadata says {size}×{size} images, the graph takes {height}×{width}"
        )
    k = len(meta["classes"])
    for name in OUTPUTS:
        got = outputs[name][-1] if outputs[name] else None
        if isinstance(got, int) and got != k:
            raise _disagree(path, f"the metadata lists {k} classes, the graph gives {got}")


def _check_graph(engine, meta: dict, path: Path) -> None:
    """Run the graph on one blank image of the metadata's shape: one output per class."""
    c, size, k = meta["channels"], meta["size"], len(meta["classes"])
    try:
        with _quiet():
            outputs = engine(torch.zeros(1, c, size, size))
    except Exception as exc:  # onnxruntime and TorchScript raise their own types
        raise _disagree(
            path, f"the graph fails on the 1×{c}×{size}×{size} images it describes ({_gist(exc)})"
        ) from None
    for name, output in zip(OUTPUTS, outputs, strict=True):
        if tuple(output.shape) != (1, k):
            shape = "×".join(map(str, output.shape))
            raise _disagree(
                path, f"the metadata lists {k} classes, the graph's {name} are {shape} per image"
            )


class OnnxEngine:
    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.detach().cpu().float().contiguous().numpy()
        logits, probabilities = self.session.run(list(OUTPUTS), {INPUT: x})
        return torch.from_numpy(logits), torch.from_numpy(probabilities)


class TorchScriptEngine:
    def __init__(self, module, device: torch.device) -> None:
        self.module, self.device = module.eval(), device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, probabilities = self.module(images.to(self.device))
        return logits.float().cpu(), probabilities.float().cpu()


def _load_onnx(path: Path, device: str | None) -> tuple[OnnxEngine, dict]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BloodcellsError(
            f"{path}: running an .onnx file needs onnxruntime, which is not installed; {INSTALL}"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device and device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BloodcellsError(f"{path}: this onnxruntime cannot use {device}; use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for a damaged file
        raise BloodcellsError(f"{path}: not a readable ONNX model ({_gist(exc)})") from None
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return OnnxEngine(session), _parse(meta, path)


def _load_torchscript(path: Path, device: str | None) -> tuple[TorchScriptEngine, dict]:
    from bloodcells.utils.devices import select_device

    device_ = select_device(device)
    extra = {EXTRA_FILE: ""}
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location=device_, _extra_files=extra)
    except Exception:  # a state dict (a run's weights.pt), or a damaged file
        raise BloodcellsError(
            f"{path}: not a TorchScript file made by bloodcells export; "
            "for a run's weights.pt, pass the run folder"
        ) from None
    return TorchScriptEngine(module, device_), _parse(extra[EXTRA_FILE] or None, path)


def _parse(meta: str | bytes | None, path: Path) -> dict:
    if not meta:
        raise BloodcellsError(
            f"{path}: a model file without bloodcells metadata; "
            "predict takes files made by bloodcells export, or run folders"
        )
    try:
        parsed = json.loads(meta)
    except ValueError as exc:
        raise BloodcellsError(f"{path}: its bloodcells metadata is damaged ({exc})") from None
    if not isinstance(parsed, dict):
        raise BloodcellsError(f"{path}: its bloodcells metadata is damaged (not an object)")
    return parsed


def _gist(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= 120 else first[:117] + "..."


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
    return f"<!-- bloodcells model card of run {run.name} ({run.info.get('created')}) -->"


def model_card(run, meta: dict, name: str = "model") -> str:
    """The card of `name`.onnx / `name`.pt: data, classes and counts, dev metrics, settings,
    intended use, limits."""
    from bloodcells.inference.modelcard import card_markdown

    return card_markdown(_card_marker(run), meta, name)
