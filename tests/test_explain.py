"""Grad-CAM: layer choice, the library made safe on a user's model, the lab's grid, the command."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bloodcells.analysis.gradcam import (
    METHODS,
    compute_cams,
    gradcam_grid,
    select_layers,
    spatial_layers,
)
from bloodcells.cli import app
from bloodcells.errors import BloodcellsError
from bloodcells.models.registry import build_model
from bloodcells.viz.cams import cam_figure, gradcam_figure

VGG_DEFAULTS = ["features.8", "features.15", "features.22", "features.29"]  # the ReLUs


@pytest.fixture
def model(trained):
    """A fresh copy of the trained model for each test."""
    return trained[0].load_model()


@pytest.fixture
def images(trained):
    """Two test images of each class, standardized as the model takes them."""
    return trained[1].test.standardized(torch.tensor([0, 1, 12, 13, 24, 25]))


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return build_model("vgg16", 1, 3, 32).eval()


def no_hooks_left(model: torch.nn.Module) -> bool:
    return not any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in model.modules()
    )


def test_unknown_method_lists_the_known_ones(model, images):
    with pytest.raises(BloodcellsError, match="gradcam, gradcam\\+\\+") as info:
        compute_cams(model, images, method="gradkam")
    assert "'gradkam'" in str(info.value) and "\n" not in str(info.value)


def test_default_layers_of_the_advanced_cnn_are_the_labs_two_convs(model):
    layers = select_layers(model, None, 1, 32)
    assert [(name, size) for name, _, size in layers] == [("0", (30, 30)), ("5", (13, 13))]
    assert layers[0].module is model[0] and layers[1].module is model[5]
    assert [layer.name for layer in spatial_layers(model, 1, 32, convs_only=True)] == ["0", "5"]
    at_64 = build_model("advanced", 1, 3, 64)
    assert [layer.size for layer in select_layers(at_64, None, 1, 64)] == [(62, 62), (29, 29)]


def test_default_layers_of_vgg16_stop_before_the_1x1_maps(vgg):
    layers = select_layers(vgg, None, 1, 32)
    assert [layer.name for layer in layers] == VGG_DEFAULTS
    assert [(layer.kind, layer.size[0]) for layer in layers] == [
        ("ReLU", 16),
        ("ReLU", 8),
        ("ReLU", 4),
        ("ReLU", 2),
    ]  # each block's last conv, as the rectified map its in-place ReLU leaves
    sizes = {layer.name: layer.size for layer in spatial_layers(vgg, 1, 32)}
    assert sizes["features.28"] == (2, 2) and sizes["features.30"] == (1, 1)
    assert len(spatial_layers(vgg, 3, 32, convs_only=True)) == 13


def test_naming_a_1x1_layer_warns_and_still_computes(vgg):
    x = torch.randn(2, 1, 32, 32)
    with pytest.warns(UserWarning, match=r"features\.30 \(1×1\).*constant.*features\.28 \(2×2\)"):
        cams = compute_cams(vgg, x, ["features.30"])
    assert cams["features.30"].shape == (2, 32, 32) and not cams["features.30"].any()


def test_a_2x2_layer_gives_no_warning(vgg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_layers(vgg, ["features.28"], 1, 32)[0].size == (2, 2)


def test_unknown_layer_names_the_valid_ones(model):
    with pytest.raises(BloodcellsError, match=r"unknown layer '9'.*0, 1, 2, 3, 4, 5"):
        select_layers(model, ["5", "9"], 1, 32)


@pytest.mark.parametrize("training", [True, False])
def test_the_model_comes_back_as_it_went_in(model, images, training):
    expected = compute_cams(model, images)  # model in eval mode here
    model.train(training)
    model[2].eval()  # a mixed-mode model: frozen BatchNorm statistics
    modes = [m.training for m in model.modules()]
    model(images).sum().backward()
    grads = [p.grad for p in model.parameters()]
    cams = compute_cams(model, images)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert no_hooks_left(model)
    for name in expected:  # computed in eval mode: no dropout, BatchNorm running statistics
        np.testing.assert_allclose(cams[name], expected[name], atol=1e-5)


def test_gradients_are_on_inside_no_grad_and_inference_mode(model, images):
    expected = compute_cams(model, images)
    with torch.no_grad():
        under_no_grad = compute_cams(model, images)
    with torch.inference_mode():
        under_inference = compute_cams(model, images.clone())
    for name in expected:
        assert expected[name].max() > 0
        np.testing.assert_allclose(under_no_grad[name], expected[name], atol=1e-6)
        np.testing.assert_allclose(under_inference[name], expected[name], atol=1e-6)


def test_frozen_parameters_still_give_the_same_maps(model, images):
    expected = compute_cams(model, images)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = compute_cams(model, images)
    for name in expected:
        np.testing.assert_allclose(frozen[name], expected[name], atol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_batch_gives_the_maps_of_its_images_one_by_one(model, images, method):
    x = images[::2]
    batch = compute_cams(model, x, ["5"], method=method)["5"]
    assert batch.shape == (3, 32, 32) and batch.dtype == np.float32
    assert batch.min() >= 0 and batch.max() <= 1 and batch.max() > 0.5
    for i in range(len(x)):
        one = compute_cams(model, x[i : i + 1], ["5"], method=method)["5"][0]
        np.testing.assert_allclose(batch[i], one, atol=1e-4)  # float32 batch arithmetic
    assert no_hooks_left(model)


@pytest.mark.parametrize(("method", "channels"), [(name, 1) for name in METHODS] + [("gradcam", 3)])
def test_every_method_runs_on_vgg16_gray_and_rgb(vgg, method, channels):
    reference = str(vgg)
    cams = compute_cams(vgg, torch.randn(1, channels, 32, 32), ["features.2"], method=method)
    assert cams["features.2"].shape == (1, 32, 32) and np.isfinite(cams["features.2"]).all()
    assert cams["features.2"].min() >= 0 and cams["features.2"].max() <= 1
    assert str(vgg) == reference and no_hooks_left(vgg)  # ablation swaps its layer back


def test_in_place_relus_do_not_change_the_map_and_are_restored(vgg):
    x = torch.randn(2, 1, 32, 32)
    plain = copy.deepcopy(vgg)
    for module in plain.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    expected = compute_cams(plain, x, ["features.21"])["features.21"]
    # without the guard the CPU copy of the hooked conv output is overwritten by its ReLU
    np.testing.assert_allclose(compute_cams(vgg, x, ["features.21"])["features.21"], expected)
    assert vgg.features[22].inplace is True


def test_trained_maps_are_not_blank(model, images):
    for name, cams in compute_cams(model, images).items():
        spread = cams.max(axis=(1, 2)) - cams.min(axis=(1, 2))
        assert (spread > 0.5).all(), name


def test_maps_point_at_the_shape_not_transposed_or_shifted(trained, model):
    test = trained[1].test
    x = test.standardized()
    shape = x[:, 0].abs().numpy() > 1.5  # the disc, square or bar stands out from the noise
    cams = compute_cams(model, x, ["0"], targets=test.labels, method="layercam")["0"]
    inside = (cams * shape).sum((1, 2)) / shape.sum((1, 2))
    outside = (cams * ~shape).sum((1, 2)) / (~shape).sum((1, 2))
    assert (inside > outside).mean() > 0.8
    wrong = cams.transpose(0, 2, 1)  # the bars are vertical: a transposed map misses them
    assert (wrong * shape).sum() / shape.sum() < (cams * shape).sum() / shape.sum()


def test_targets_choose_the_class_and_are_checked(model, images):
    predicted = model(images).argmax(1)
    default = compute_cams(model, images, ["5"])["5"]
    np.testing.assert_allclose(compute_cams(model, images, ["5"], predicted)["5"], default)
    other = compute_cams(model, images, ["5"], (predicted + 1) % 3)["5"]
    assert not np.allclose(other, default, atol=1e-3)
    with pytest.raises(BloodcellsError, match=r"target class 3 does not exist.*3 classes"):
        compute_cams(model, images, ["5"], [3] * len(images))
    with pytest.raises(BloodcellsError, match="2 targets for 6 images"):
        compute_cams(model, images, ["5"], [0, 1])


def test_grid_picks_images_by_seed_and_explains_the_true_class(trained, model):
    test = trained[1].test
    grid = gradcam_grid(model, test, n=5, target="true", seed=3)
    assert grid.indices == gradcam_grid(model, test, n=5, seed=3).indices
    assert grid.indices != gradcam_grid(model, test, n=5, seed=4).indices
    assert len(set(grid.indices)) == 5 and grid.labels == test.labels[grid.indices].tolist()
    expected = compute_cams(model, test.standardized(torch.tensor(grid.indices)), None, grid.labels)
    for name in ("0", "5"):
        np.testing.assert_allclose(grid.cams[name], expected[name], atol=1e-6)
    with pytest.raises(BloodcellsError, match="predicted, true"):
        gradcam_grid(model, test, target="label")


def test_figure_has_an_image_row_and_a_labelled_row_per_layer(trained, model):
    test = trained[1].test
    fig = gradcam_figure(model, test, n=4, layers=["5"], method="gradcam++")
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 8
    assert "layer 5" in fig.axes[4].get_ylabel() and "13×13 map" in fig.axes[4].get_ylabel()
    assert "Grad-CAM++" in fig.axes[4].get_ylabel()
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert all(t.startswith("true: ") and "\npred: " in t for t in titles)
    assert [len(ax.images) for ax in fig.axes[4:]] == [2] * 4  # the image under the map


def test_an_all_zero_map_says_so(trained, model):
    grid = gradcam_grid(model, trained[1].test, n=2, layers="5")
    grid.cams["5"][0] = 0
    fig = cam_figure(grid)
    assert [t.get_text() for t in fig.axes[2].texts] == ["all zero"] and not fig.axes[3].texts


def test_gradcam_command_writes_the_png_and_names_the_layers(trained, tmp_path):
    run = trained[0]
    out = tmp_path / "figs" / "cam.png"
    result = CliRunner().invoke(app, ["gradcam", str(run.path), "-n", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "layer 0 (Conv2d): 30×30 map" in result.output
        and "layer 5 (Conv2d): 13×13" in result.output
    )
    assert out.read_bytes()[:4] == b"\x89PNG" and str(out) in result.output
    result = CliRunner().invoke(
        app, ["gradcam", str(run.path), "--layers", "5", "-l", "0,3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "layer 5 (Conv2d): 13×13" in result.output and "3 (MaxPool2d): 15×15" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "9,x"], "unknown layer '9', 'x'"),  # 9 is Flatten: no map
        (["--method", "cam"], "unknown CAM method 'cam'"),
        (["--target", "label"], "target must be one of predicted, true"),
    ],
)
def test_gradcam_command_bad_input_is_one_line(trained, tmp_path, args, message):
    result = CliRunner().invoke(
        app, ["gradcam", str(trained[0].path), *args, "-o", str(tmp_path / "c.png")]
    )
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.png").exists()
