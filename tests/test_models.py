"""The lab's models: shapes, parameter counts, options, the registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bloodcells.errors import ModelError
from bloodcells.models.registry import MODELS, build_model, count_parameters
from bloodcells.models.specs import CATALOGUE, TABLE_CLASSES, TABLE_SIZE


def test_the_catalogue_holds_the_labs_parameter_counts():
    assert {name: info.parameters for name, info in CATALOGUE.items()} == {
        "simple": 1_135,
        "advanced": 153_061,
        "vgg16": 15_245_125,
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_counts_are_the_catalogues(name):
    """`bloodcells models` prints stored counts; building every model keeps them honest."""
    spec = MODELS[name]
    with torch.device("meta"):  # shapes only: no memory, no weight initialisation
        model = build_model(name, spec.channels, TABLE_CLASSES, TABLE_SIZE)
    assert count_parameters(model) == CATALOGUE[name].parameters
    assert spec.parameters == CATALOGUE[name].parameters


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_at_32_and_64(name, size, channels):
    model = build_model(name, channels, 4, size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 4)


def test_advanced_keeps_the_labs_layer_indices_for_grad_cam():
    model = build_model("advanced")
    assert isinstance(model[0], torch.nn.Conv2d) and isinstance(model[5], torch.nn.Conv2d)


def test_exercise_3_options_change_the_architecture():
    base = build_model("advanced")
    a = build_model("advanced", bn2=True)
    b = build_model("advanced", head_dropout=0.3)
    c = build_model("advanced", extra_fc=32)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in a) == 2
    assert [m.p for m in b if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2, 0.3]
    assert [m.out_features for m in c if isinstance(m, torch.nn.Linear)] == [128, 32, 5]
    assert count_parameters(a) == count_parameters(base) + 64
    assert count_parameters(c) == count_parameters(base) - 645 + 128 * 32 + 32 + 32 * 5 + 5


def test_vgg16_repeats_gray_input_to_three_channels():
    torch.manual_seed(0)
    model = build_model("vgg16", 1, 5, 32).eval()
    gray = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(gray), model(gray.repeat(1, 3, 1, 1)))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match="known models: simple, advanced, vgg16"):
        build_model("resnet")


def test_option_a_model_does_not_take_is_an_error():
    with pytest.raises(ModelError, match="has no option bn2"):
        build_model("simple", bn2=True)


def test_pretrained_vgg16_fails_clearly_without_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match=r"not in the local torch cache.*never downloads"):
        build_model("vgg16", 3, 5, 32, pretrained=True)


def test_default_learning_rates_are_the_labs():
    assert {n: s.default_lr for n, s in MODELS.items()} == {
        "simple": 1e-3,
        "advanced": 1e-4,
        "vgg16": 1e-4,
    }


def test_every_described_model_is_built_and_every_built_one_described():
    assert list(MODELS) == list(CATALOGUE)


def test_the_models_command_imports_neither_torch_nor_torchvision():
    code = (
        "import sys; from typer.testing import CliRunner; from bloodcells.cli import app; "
        "r = CliRunner().invoke(app, ['models']); assert r.exit_code == 0, r.output; "
        "assert '153,061' in r.output, r.output; "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
