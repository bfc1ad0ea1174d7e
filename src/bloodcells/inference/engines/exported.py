"""A file made by bloodcells export, opened as an Engine and checked: a format version this
release reads, and metadata (classes, size, channels) that agrees with the graph."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bloodcells._version import __version__
from bloodcells.data import Transform
from bloodcells.errors import BloodcellsError, DataError
from bloodcells.inference.engines.base import INPUT, OUTPUTS, READ_VERSIONS, Engine, gist, quiet
from bloodcells.inference.engines.onnx import OnnxEngine, open_onnx
from bloodcells.inference.engines.torchscript import open_torchscript

OPEN = {"onnx": open_onnx, "torchscript": open_torchscript}


def load_export(path: Path, kind: str, device: str | None = None) -> tuple[Engine, dict]:
    """An exported file's engine and its metadata, checked; `kind` is onnx or torchscript."""
    engine, stored = OPEN[kind](path, device)
    meta = parse_metadata(stored, path)
    check_metadata(meta, path)
    if isinstance(engine, OnnxEngine):
        _check_onnx_shapes(engine.session, meta, path)
    _check_graph(engine, meta, path)
    return engine, meta


def parse_metadata(stored: str | bytes | None, path: Path) -> dict:
    """The metadata JSON object as stored in the file at `path`."""
    if not stored:
        raise BloodcellsError(
            f"{path}: a model file without bloodcells metadata; "
            "predict takes files made by bloodcells export, or run folders"
        )
    try:
        parsed = json.loads(stored)
    except ValueError as exc:
        raise BloodcellsError(f"{path}: its bloodcells metadata is damaged ({exc})") from None
    if not isinstance(parsed, dict):
        raise BloodcellsError(f"{path}: its bloodcells metadata is damaged (not an object)")
    return parsed


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


def _check_graph(engine: Engine, meta: dict, path: Path) -> None:
    """Run the graph on one blank image of the metadata's shape: one output per class."""
    c, size, k = meta["channels"], meta["size"], len(meta["classes"])
    try:
        with quiet():
            outputs = engine(torch.zeros(1, c, size, size))
    except Exception as exc:  # onnxruntime and TorchScript raise their own types
        raise _disagree(
            path, f"the graph fails on the 1×{c}×{size}×{size} images it describes ({gist(exc)})"
        ) from None
    for name, output in zip(OUTPUTS, outputs, strict=True):
        if tuple(output.shape) != (1, k):
            shape = "×".join(map(str, output.shape))
            raise _disagree(
                path, f"the metadata lists {k} classes, the graph's {name} are {shape} per image"
            )
