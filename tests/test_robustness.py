"""The robustness benchmark: the shift family, the benchmark, its figure and its command."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bloodcells.analysis.adapt import evaluate_tta
from bloodcells.analysis.robustness import MODES, RobustnessResult, robustness
from bloodcells.data import Transform, load_dataset
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import evaluate
from bloodcells.ops.shifts import SEVERITIES, SHIFTS, shift_images, to_channels
from bloodcells.runs import start_training
from bloodcells.training.loop import TrainConfig
from bloodcells.viz.robustness import robustness_figure
from tests.conftest import easy_image, write_layout
from tests.helpers import invoke, one_line_error

RANDOM_SHIFTS = {"noise", "hue", "stain"}  # the shifts whose seed matters


def colour_images(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Stained-looking RGB uint8 cells: the easy patterns tinted purple on pink."""
    rng = np.random.default_rng(seed)
    tint = np.array([0.85, 0.65, 0.9])[:, None, None]
    gray = np.stack([easy_image(i % 3, rng) for i in range(n)]).astype(float)
    return torch.from_numpy((gray[:, None] * tint).round().astype(np.uint8))


def write_colour_layout(root, per_class=(20, 6)):
    """The easy layout written as RGB PNGs of colour_images."""
    for split, count in zip(("train", "test"), per_class, strict=True):
        for k, cls in enumerate(("disc", "square", "bar")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            images = colour_images(3 * count, seed=k + 10 * len(split))[k::3]
            for i, image in enumerate(images):
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def colour_runs(tmp_path_factory):
    """A gray and an RGB advanced CNN, one epoch each, on the colour layout."""
    root = write_colour_layout(tmp_path_factory.mktemp("colour") / "cells")
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for channels in (1, 3):
        splits = load_dataset(root, Transform(32, channels), cache=False)
        config = TrainConfig(model="advanced", epochs=1, lr=1e-3, channels=channels)
        runs[channels] = start_training(splits, config, out=out)
    return runs


# -- the shifts -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shifts_are_deterministic_and_keep_shape_and_dtype(name):
    images = colour_images()
    for severity in SEVERITIES:
        shifted = shift_images(images, name, severity)
        assert shifted.shape == images.shape and shifted.dtype == torch.uint8
        assert torch.equal(shifted, shift_images(images, name, severity))
        assert not torch.equal(shifted, images)
        changed = shift_images(images, name, severity, seed=1)
        assert torch.equal(changed, shifted) == (name not in RANDOM_SHIFTS)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_severity_shifts_further(name):
    images = colour_images(9)
    distance = [
        float((shift_images(images, name, s).float() - images.float()).abs().mean())
        for s in SEVERITIES
    ]
    assert distance[0] < distance[1] < distance[2], distance


def test_a_shift_of_some_images_is_the_shift_of_those_alone():
    images = colour_images(6)
    for name in ("blur", "scale_up", "jpeg", "gamma"):
        whole = shift_images(images, name, 2)
        assert torch.equal(shift_images(images[2:4], name, 2), whole[2:4])


def test_float_images_stay_float():
    images = colour_images(3).float().div(255).half()
    shifted = shift_images(images, "blur", 1)
    assert shifted.dtype == torch.float16 and shifted.shape == images.shape
    assert shift_images(images, "jpeg", 1).dtype == torch.float16


def test_gray_conversion_is_pils():
    rgb = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    pil = [np.asarray(Image.fromarray(im.permute(1, 2, 0).numpy()).convert("L")) for im in rgb]
    assert torch.equal(to_channels(rgb, 1)[:, 0], torch.from_numpy(np.stack(pil)))


def test_bad_shifts_are_one_line():
    images = colour_images(2)
    with pytest.raises(BloodcellsError, match="unknown shift 'fog'"):
        shift_images(images, "fog", 1)
    with pytest.raises(BloodcellsError, match="severity must be 1, 2 or 3"):
        shift_images(images, "blur", 4)
    with pytest.raises(BloodcellsError, match="needs RGB"):
        shift_images(images[:, :1], "stain", 1)


# -- the benchmark ----------------------------------------------------------------------------


def test_robustness_of_a_gray_run_on_gray_images(trained):
    run, splits = trained
    result = robustness(run, device="cpu")
    clean = evaluate(run.load_model(), splits.test, "cpu")
    assert result.clean["plain"].accuracy == pytest.approx(clean.accuracy)
    assert result.clean["plain"].balanced_accuracy == pytest.approx(
        clean.metrics()["balanced_accuracy"]
    )
    assert result.skipped == {"hue": "the images are gray", "stain": "the images are gray"}
    assert result.shifts == [n for n in SHIFTS if n not in ("hue", "stain")]
    values = [s.accuracy for row in result.scores["plain"].values() for s in row]
    assert len(values) == 3 * len(result.shifts) and all(0 <= v <= 1 for v in values)
    assert result.mean().accuracy == pytest.approx(sum(values) / len(values))
    saved = json.loads(json.dumps(result.to_dict()))
    assert RobustnessResult.from_dict(saved) == result
    with pytest.raises(BloodcellsError, match="family None"):
        RobustnessResult.from_dict({k: v for k, v in saved.items() if k != "family"})
    with pytest.raises(BloodcellsError, match="damaged robustness results"):
        RobustnessResult.from_dict({**saved, "results": {}})
    assert robustness(run, device="cpu").to_dict() == saved  # the same images every time


def test_tta_and_adapt_bn_on_colour_images_leave_the_run_alone(colour_runs):
    run = colour_runs[1]
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in run.path.iterdir()}
    result = robustness(run, tta=True, adapt_bn=True, device="cpu", per_class=4)
    assert result.modes == list(MODES) and result.n == 12 and not result.skipped
    assert set(result.shifts) == set(SHIFTS)  # a gray model meets hue and stain too
    dev = run.load_data().test.per_class_subset(4)
    tta = evaluate_tta(run.load_model(), dev, "cpu")
    assert result.clean["tta"].accuracy == pytest.approx(tta.accuracy)
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in run.path.iterdir()} == files
    figure = robustness_figure(result)
    assert len(figure.data) == len(MODES)
    assert np.asarray(figure.data[0].z).shape == (len(SHIFTS), 3)


def test_an_rgb_run_is_measured_on_the_same_images(colour_runs):
    result = robustness(colour_runs[3], device="cpu", per_class=2)
    assert result.channels == 3 and set(result.shifts) == set(SHIFTS)


# -- the command ------------------------------------------------------------------------------


def test_command_prints_the_table_and_writes_json_and_html(colour_runs, tmp_path):
    run = colour_runs[1].path
    result = invoke("robustness", run, "--per-class", "2", "--adapt-bn", "-o", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    for text in ("clean", "stain", "zoom ×0.65", "adapt-bn", "mean under shift (plain)"):
        assert text in result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["modes"] == ["plain", "adapt-bn"] and saved["n"] == 6
    printed = invoke("robustness", run, "--per-class", "2", "--json", "-o", tmp_path)
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["results"]["plain"] == saved["results"]["plain"]
    page = (tmp_path / "robustness.html").read_text()
    assert "plotly" in page and "<script src=" not in page  # the library inline: offline


def test_command_rejects_bad_input_in_one_line(colour_runs, trained, tmp_path):
    run = colour_runs[1].path
    one_line_error(invoke("robustness", tmp_path), "not a run folder")
    one_line_error(invoke("robustness", run, "-o", tmp_path / "r.png"), "unsupported file type")
    one_line_error(invoke("robustness", run, "--per-class", "0"), "--per-class must be 1 to")
    one_line_error(invoke("robustness", run, "--device", "tpu"), "unsupported device")
    other = write_layout(tmp_path / "other", classes=("x", "y"), per_class=(3, 2))
    one_line_error(invoke("robustness", run, "--data", other), "differ from the run's")
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.html"))


def test_adapt_bn_on_a_model_without_batchnorm_is_one_line(trained, tmp_path):
    splits = trained[1]
    run = start_training(splits, TrainConfig(model="simple", epochs=1), out=tmp_path)
    one_line_error(invoke("robustness", run.path, "--adapt-bn"), "no BatchNorm layers")


@pytest.mark.realdata
def test_pbc32_gray_images_are_its_rgb_images_made_gray(pbc32):
    gray = load_dataset(pbc32, Transform(32, 1)).test
    rgb = load_dataset(pbc32, Transform(32, 3)).test
    assert gray.paths == rgb.paths
    assert torch.equal(to_channels(rgb.images, 1), gray.images)
