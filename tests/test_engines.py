"""One Engine interface: a run's model, its ONNX file and its TorchScript file give the same
probabilities for the same raw images."""

from __future__ import annotations

import pytest
import torch

from bloodcells.data import to_unit
from bloodcells.inference.engines import (
    FORMATS,
    Engine,
    OnnxEngine,
    TorchEngine,
    TorchScriptEngine,
    load_export,
)
from bloodcells.inference.export import export_run
from bloodcells.inference.predictor import Predictor

KINDS = {"torch": TorchEngine, "onnx": OnnxEngine, "torchscript": TorchScriptEngine}


@pytest.fixture(scope="module")
def engines(trained, tmp_path_factory) -> dict[str, Engine]:
    """The trained run as each engine: its PyTorch model, and the files export makes."""
    run = trained[0]
    folder = tmp_path_factory.mktemp("engines")
    made: dict[str, Engine] = {"torch": TorchEngine(run.load_model("cpu"))}
    for fmt, suffix in FORMATS.items():
        exported = export_run(run, fmt, folder / f"model{suffix}", check=False)
        made[fmt] = load_export(exported.path, fmt)[0]
    return made


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_engine_satisfies_the_engine_protocol(engines, trained, kind):
    engine = engines[kind]
    assert isinstance(engine, KINDS[kind]) and isinstance(engine, Engine)
    images = to_unit(trained[1].test.images[:5])
    logits, probabilities = engine(images)
    for output in (logits, probabilities):
        assert output.shape == (5, 3) and output.dtype == torch.float32
        assert output.device.type == "cpu"
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exported_engines_give_the_torch_engines_probabilities(engines, trained, kind):
    images = to_unit(trained[1].test.images)
    _, expected = engines["torch"](images)
    _, probabilities = engines[kind](images)
    assert (probabilities - expected).abs().max() < 1e-5
    assert torch.equal(probabilities.argmax(dim=1), expected.argmax(dim=1))


def test_a_predictor_takes_any_engine(engines, trained):
    run, splits = trained
    images, names = to_unit(splits.test.images[:4]), [f"{i}.png" for i in range(4)]
    expected = [r["predicted"] for r in Predictor.from_run(run, "cpu").rows(images, names)]
    for engine in engines.values():
        predictor = Predictor(engine=engine, classes=run.classes, transform=run.transform)
        assert [r["predicted"] for r in predictor.rows(images, names)] == expected
