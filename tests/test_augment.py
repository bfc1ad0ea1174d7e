"""Augmentations on batches, the dihedral views, TTA and BatchNorm adaptation."""

from __future__ import annotations

import itertools

import pytest
import torch

from bloodcells.analysis.adapt import (
    adapt_batchnorm,
    batchnorm_layers,
    evaluate_adapted,
    evaluate_tta,
    require_batchnorm,
    tta_probabilities,
)
from bloodcells.data import Dataset, standardize
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import evaluate, predict_logits
from bloodcells.models.registry import build_model
from bloodcells.ops.augment import OPS, ROBUST_GRAY, ROBUST_RGB, Augmenter, parse_augment
from bloodcells.ops.image_ops import (
    dihedral,
    dihedral_views,
    gaussian_blur,
    gaussian_kernels,
    rotate_hue,
    scale_saturation,
    stain_jitter,
    zoom_shift,
)

GRAY_OPS = [name for name, op in OPS.items() if not op.rgb_only]
ALL_OPS = list(OPS)


def images(n: int = 6, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images in [0.05, 0.95], no two alike and none symmetric."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    return 0.05 + 0.9 * (x + 0.1 * torch.rand(n, channels, size, size, generator=g)) / 1.1


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the --augment value ----------------------------------------------------------------------


def test_lab_is_none_and_robust_is_the_recommended_set():
    assert parse_augment("lab") == {} and parse_augment(None) == {}
    assert not Augmenter.from_spec("lab")
    assert list(parse_augment("robust", 1)) == list(ROBUST_GRAY)
    assert set(parse_augment("robust", 3)) == set(ROBUST_RGB)
    override = parse_augment("robust, blur=2", 1)
    assert override["blur"] == 2 and set(override) == set(ROBUST_GRAY)


def test_spec_writes_every_strength_and_reads_back():
    augmenter = Augmenter.from_spec("noise,flip,scale=1.2", 1)
    assert augmenter.spec == "flip,scale=1.2,noise=0.04"  # in the order applied
    assert Augmenter.from_spec(augmenter.spec, 1).ops == augmenter.ops
    assert Augmenter.from_spec("robust", 3).spec.count("=") == len(ROBUST_RGB) - 1  # flip: none


@pytest.mark.parametrize(
    ("spec", "channels", "message"),
    [
        ("rotate", 1, "unknown augmentation 'rotate'"),
        ("hue", 1, "hue needs RGB images"),
        ("robust,stain", 1, "stain needs RGB images"),
        ("flip,flip", 1, "flip is given twice"),
        (" , ", 1, "augment is empty"),
        ("lab,flip", 1, "give it alone"),
        ("flip=2", 1, "flip takes no strength"),
        ("blur=nan", 1, "blur strength must be a number above 0 and at most 3"),
        ("scale=1", 1, "scale strength must be"),
        ("noise=-1", 1, "noise strength must be"),
        ("noise=abc", 1, "noise strength must be"),
        ("flip," * 300, 1, "characters long"),
    ],
)
def test_bad_augment_values_are_one_line(spec, channels, message):
    with pytest.raises(BloodcellsError, match=message) as caught:
        parse_augment(spec, channels)
    assert "\n" not in str(caught.value)


def test_augmenter_refuses_images_it_cannot_augment():
    with pytest.raises(BloodcellsError, match=r"N×3×H×W"):
        Augmenter.from_spec("hue", 3)(images(2, 1), generator())
    with pytest.raises(BloodcellsError, match=r"floats in \[0, 1\]"):
        Augmenter.from_spec("flip")(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), generator())


# -- every augmentation -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_augmentation_keeps_shape_dtype_device_and_range(name, dtype):
    channels = 3 if OPS[name].rgb_only else 1
    x = images(5, channels).to(dtype)
    out = Augmenter.from_spec(name, channels)(x, generator())
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)  # it does something


@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_stays_itself_so_labels_still_fit(channels):
    """Image i's augmentation depends on image i alone: the batch order, hence the labels,
    are kept, and no image leaks into another."""
    augmenter = Augmenter.from_spec(",".join(OPS) if channels == 3 else "robust", channels)
    x = images(6, channels)
    y = x.clone()
    y[3] = images(1, channels, seed=9)[0]
    a, b = augmenter(x, generator(5)), augmenter(y, generator(5))
    others = [i for i in range(6) if i != 3]
    assert torch.equal(a[others], b[others]) and not torch.equal(a[3], b[3])


@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_is_fixed_by_the_generator(channels):
    augmenter = Augmenter.from_spec(
        ",".join(OPS) if channels == 3 else ",".join(GRAY_OPS), channels
    )
    x = images(8, channels)
    first, again = augmenter(x, generator(1)), augmenter(x, generator(1))
    assert torch.equal(first, again)
    assert not torch.equal(first, augmenter(x, generator(2)))
    g = generator(1)
    batch1, batch2 = augmenter(x, g), augmenter(x, g)  # a generator's state moves on
    assert torch.equal(batch1, first) and not torch.equal(batch2, first)


def test_no_augmentation_returns_the_batch_and_draws_nothing():
    x, g = images(3), generator(3)
    state = g.get_state()
    assert Augmenter.from_spec("lab")(x, g) is x
    assert torch.equal(g.get_state(), state)
    assert Augmenter.from_spec("robust")(x[:0], g).shape == (0, 1, 16, 16)


def test_brightness_and_contrast_change_nothing_a_standardized_model_sees():
    """Per-image standardization undoes x -> a·x + b: without clipping (images in 0.3-0.7,
    strengths 0.2) both are no-ops for gray and RGB models alike; gamma is not."""
    for channels in (1, 3):
        x = 0.3 + 0.4 * images(8, channels)
        for spec in ("brightness", "contrast", "brightness,contrast"):
            out = Augmenter.from_spec(spec, channels)(x, generator())
            assert not torch.allclose(out, x, atol=1e-3)
            torch.testing.assert_close(standardize(out), standardize(x), atol=2e-4, rtol=0)
        gamma = Augmenter.from_spec("gamma", channels)(x, generator())
        assert (standardize(gamma) - standardize(x)).abs().max() > 0.05


def test_parameters_at_their_neutral_value_change_nothing():
    x, rgb = images(4), images(4, 3)
    ones, zeros = torch.ones(4), torch.zeros(4)
    torch.testing.assert_close(zoom_shift(x, ones, torch.zeros(4, 2)), x)
    assert torch.equal(gaussian_blur(x, zeros), x)
    torch.testing.assert_close(rotate_hue(rgb, zeros), rgb)
    torch.testing.assert_close(scale_saturation(rgb, ones), rgb)
    torch.testing.assert_close(stain_jitter(rgb, torch.ones(4, 3), torch.zeros(4, 3)), rgb)


def test_hue_and_saturation_keep_grays_and_brightness():
    gray = images(3).expand(-1, 3, -1, -1)
    torch.testing.assert_close(rotate_hue(gray, torch.full((3,), 0.3)), gray)
    torch.testing.assert_close(scale_saturation(gray, torch.full((3,), 1.5)), gray)
    rgb, luma = images(3, 3), torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    turned = rotate_hue(rgb, torch.full((3,), 0.25))
    torch.testing.assert_close((turned * luma).sum(1), (rgb * luma).sum(1), atol=1e-5, rtol=0)


def test_stain_jitter_scales_hematoxylin_in_optical_density():
    """Scaling the hematoxylin amount moves each pixel's optical density along the
    hematoxylin vector of Ruifrok and Johnston (outwards where the amount is positive)."""
    rgb = images(1, 3)
    scale = torch.tensor([[2.0, 1.0, 1.0]])
    before, after = -rgb.log(), -stain_jitter(rgb, scale, torch.zeros(1, 3)).log()
    extra = (after - before).permute(0, 2, 3, 1).reshape(-1, 3)
    hematoxylin = torch.tensor([0.650, 0.704, 0.286])
    cosine = extra @ hematoxylin / (extra.norm(dim=1) * hematoxylin.norm())
    torch.testing.assert_close(cosine.abs(), torch.ones_like(cosine))


def test_zoom_enlarges_and_shift_moves_the_cell():
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    disc = ((yy**2 + xx**2) < 8**2).float().view(1, 1, 32, 32)
    area = float(disc.sum())
    assert float(zoom_shift(disc, torch.tensor([1.33])).sum()) > 1.5 * area
    assert float(zoom_shift(disc, torch.tensor([0.75])).sum()) < 0.7 * area
    moved = zoom_shift(disc, None, torch.tensor([[0.25, 0.0]]))  # 8 px to the right
    torch.testing.assert_close(moved[..., 8:], disc[..., :-8])


# -- the dihedral group -----------------------------------------------------------------------


def test_flip_views_are_the_dihedral_group():
    x = images(1, size=8)  # no symmetry: the 8 views must all differ
    views = dihedral_views(x)
    assert torch.equal(views[0], x)
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(views, 2))
    for k in range(4):  # the four rotations are there...
        assert any(torch.equal(torch.rot90(x, k, (-2, -1)), v) for v in views)
    assert any(torch.equal(x.flip(-1), v) for v in views)  # ...and a mirror image

    def index(view: torch.Tensor) -> int:
        (i,) = [i for i, v in enumerate(views) if torch.equal(v, view)]
        return i

    for a, b in itertools.product(range(8), repeat=2):  # closed under composition
        index(dihedral(dihedral(x, a), b))
    for a in range(8):  # and every element has an inverse
        assert any(index(dihedral(dihedral(x, a), b)) == 0 for b in range(8))


def test_flip_augmentation_draws_every_element_and_nothing_else():
    x = images(1, size=8)
    views = dihedral_views(x)
    out = Augmenter.from_spec("flip")(x.expand(200, -1, -1, -1), generator())
    drawn = [next(i for i, v in enumerate(views) if torch.equal(v[0], o)) for o in out]
    assert set(drawn) == set(range(8))
    per_image = dihedral(x.expand(8, -1, -1, -1), torch.arange(8))
    assert all(torch.equal(per_image[i], views[i][0]) for i in range(8))


def test_one_resampling_flips_like_dihedral():
    """With zoom or shift, the flip is folded into the same grid_sample: the same 8 elements."""
    x = images(8, size=8)
    element = torch.arange(8)
    folded = zoom_shift(x, torch.ones(8), torch.zeros(8, 2), element)
    torch.testing.assert_close(folded, dihedral(x, element), atol=1e-5, rtol=0)


@pytest.mark.parametrize("band_floats", [2**24, 300])  # all images at once, or a few at a time
def test_blur_is_a_gaussian_with_the_border_repeated(monkeypatch, band_floats):
    monkeypatch.setattr("bloodcells.ops.image_ops.BAND_FLOATS", band_floats)
    x, sigma = images(5, 3, size=12), torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])
    out = gaussian_blur(x, sigma, radius=9)
    for i in range(5):
        kernel = gaussian_kernels(sigma[i : i + 1], 9)[0]
        padded = torch.nn.functional.pad(x[i : i + 1], (9, 9, 9, 9), mode="replicate")
        weight = (kernel[:, None] * kernel[None, :]).expand(3, 1, 19, 19)
        expected = torch.nn.functional.conv2d(padded, weight, groups=3)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0)


def test_flips_need_square_images():
    with pytest.raises(BloodcellsError, match="square"):
        dihedral(torch.zeros(1, 1, 4, 6), 4)


# -- test-time augmentation -------------------------------------------------------------------


def advanced(channels: int = 1, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("advanced", channels, 3, 32, **options).eval()


def symmetric_images(n: int = 4) -> torch.Tensor:
    """Images that every rotation and mirror leaves as they are: functions of the radius."""
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    radius = (yy**2 + xx**2).sqrt()
    return torch.stack([torch.cos(radius / (2 + i)) for i in range(n)])[:, None]


def test_tta_of_a_rotation_invariant_input_is_plain_prediction():
    model = advanced()
    x = standardize(symmetric_images())
    plain = predict_logits(model, x).softmax(1)
    torch.testing.assert_close(tta_probabilities(model, x), plain)
    asymmetric = standardize(images(4, size=32))
    assert not torch.allclose(
        tta_probabilities(model, asymmetric), predict_logits(model, asymmetric).softmax(1)
    )


def dataset(n: int = 12, channels: int = 1) -> Dataset:
    x = (images(n, channels, size=32) * 255).round().to(torch.uint8)
    labels = torch.arange(n) % 3
    return Dataset(x, labels, ["a", "b", "c"], [f"img{i}.png" for i in range(n)])


def test_evaluate_tta_averages_the_views_of_a_dataset():
    model, data = advanced(), dataset(200)  # more than one batch of views (128 images)
    result = evaluate_tta(model, data, "cpu")
    x = data.standardized()
    manual = torch.stack([predict_logits(model, v).softmax(1) for v in dihedral_views(x)]).mean(0)
    torch.testing.assert_close(result.probabilities, manual)
    assert result.paths == data.paths and torch.equal(result.labels, data.labels)
    assert result.logits is None and result.unlike_training_threshold() is None
    plain = evaluate_adapted(model, data, "cpu")
    torch.testing.assert_close(plain.probabilities, evaluate(model, data, "cpu").probabilities)


# -- BatchNorm adaptation ---------------------------------------------------------------------


def test_adapt_bn_changes_running_stats_only_on_a_copy():
    model = advanced(bn2=True, head_dropout=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = standardize(images(40, size=32) ** 2)  # another "lab": other statistics
    adapted = adapt_batchnorm(model, target, batch_size=16)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original: untouched
    assert not model.training and not adapted.training
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(
        k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
        for k in changed
    )
    assert [m.momentum for m in batchnorm_layers(adapted)] == [0.1, 0.1]  # restored


def test_adapted_statistics_are_the_targets_with_dropout_off():
    """With one batch, each BatchNorm's running mean and variance are those of its inputs on
    the target images in eval mode: Dropout (before the second BatchNorm) stayed off."""
    model = advanced(bn2=True)
    target = standardize(images(24, size=32) ** 3)
    adapted = adapt_batchnorm(model, target, batch_size=64)
    seen = {}
    layers = batchnorm_layers(adapted)

    def keep_input(layer, inputs, output) -> None:  # (a hook returning a value replaces output)
        seen[layer] = inputs[0]

    hooks = [layer.register_forward_hook(keep_input) for layer in layers]
    with torch.no_grad():
        adapted(target)
    for hook in hooks:
        hook.remove()
    for layer in layers:
        inputs = seen[layer]
        torch.testing.assert_close(layer.running_mean, inputs.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            layer.running_var, inputs.var((0, 2, 3), unbiased=True), atol=1e-5, rtol=1e-3
        )


def test_adapt_bn_is_bounded_and_says_when_there_is_nothing_to_adapt():
    with pytest.raises(BloodcellsError, match="at least 2 images"):
        adapt_batchnorm(advanced(), torch.zeros(1, 1, 32, 32))
    with pytest.raises(BloodcellsError, match="batch size"):
        adapt_batchnorm(advanced(), torch.zeros(4, 1, 32, 32), batch_size=1)
    simple = build_model("simple", 1, 3, 32)
    with pytest.raises(BloodcellsError, match="no BatchNorm layers"):
        require_batchnorm(simple, "simple")
    assert adapt_batchnorm(simple, torch.zeros(4, 1, 32, 32)) is not simple
