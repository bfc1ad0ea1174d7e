"""Grad-CAM with pytorch-grad-cam: which layers to look at and the maps (the figure: viz.cams).

The CAM arithmetic is the library's; this module chooses layers by their map size, makes the
library safe to call on a user's model (eval mode, gradients and in-place ReLUs only for the
duration, every hook released, training mode and .grad restored).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from bloodcells.data import Dataset
from bloodcells.errors import BloodcellsError
from bloodcells.evaluation.core import evaluate
from bloodcells.utils.validation import check_count


class Method(NamedTuple):
    """A pytorch-grad-cam method: its class, its name in titles, whether to hide its output."""

    cam: type
    title: str
    quiet: bool = False  # ScoreCAM and AblationCAM draw tqdm bars on stderr per image


METHODS: dict[str, Method] = {
    "gradcam": Method(GradCAM, "Grad-CAM"),
    "gradcam++": Method(GradCAMPlusPlus, "Grad-CAM++"),
    "xgradcam": Method(XGradCAM, "XGrad-CAM"),
    "hirescam": Method(HiResCAM, "HiRes-CAM"),
    "layercam": Method(LayerCAM, "Layer-CAM"),
    "eigencam": Method(EigenCAM, "Eigen-CAM"),
    "scorecam": Method(ScoreCAM, "Score-CAM", quiet=True),
    "ablationcam": Method(AblationCAM, "Ablation-CAM", quiet=True),
}
TARGETS = ("predicted", "true")
MIN_MAP = 2  # a 1×1 map has no spatial information: its CAM is constant (zero after scaling)
MAX_DEFAULT_LAYERS = 4


class Layer(NamedTuple):
    """A layer with a spatial output: its `named_modules` name, the module, its map size H×W."""

    name: str
    module: nn.Module
    size: tuple[int, int]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.size[0]}×{self.size[1]})"

    @property
    def kind(self) -> str:
        return type(self.module).__name__


def get_method(name: str) -> Method:
    """The CAM method called `name`, or an error listing the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise BloodcellsError(
            f"unknown CAM method {name!r}; known methods: {', '.join(METHODS)}"
        ) from None


def spatial_layers(
    model: nn.Module, in_channels: int, image_size: int, convs_only: bool = False
) -> list[Layer]:
    """Every submodule whose output is an N×C×H×W map (or only the Conv2d ones), in order,
    with H×W measured on one dummy image."""
    sizes: dict[str, tuple[int, int]] = {}

    def recorder(name: str):
        def hook(module, inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                sizes.setdefault(name, (int(output.shape[-2]), int(output.shape[-1])))

        return hook

    modules = [(name, m) for name, m in model.named_modules() if name]
    handles = [m.register_forward_hook(recorder(name)) for name, m in modules]
    try:
        with _modes_kept(model), torch.no_grad():
            model.eval()
            model(torch.zeros(1, in_channels, image_size, image_size, device=_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    layers = [Layer(name, m, sizes[name]) for name, m in modules if name in sizes]
    return _convs(layers) if convs_only else layers


def select_layers(
    model: nn.Module,
    names: Sequence[str] | str | None,
    in_channels: int,
    image_size: int,
) -> list[Layer]:
    """The layers called `names` (`named_modules` names, a list or comma-separated), or by
    default the last conv of each map size of 2×2 or more (its in-place ReLU if any), the
    deepest MAX_DEFAULT_LAYERS."""
    layers = spatial_layers(model, in_channels, image_size)
    if isinstance(names, str):
        names = names.split(",")
    if not names:
        return _default_of(layers)
    known = {layer.name: layer for layer in layers}
    unknown = [str(name) for name in names if str(name) not in known]
    if unknown:
        raise BloodcellsError(
            f"unknown layer {', '.join(map(repr, unknown))}; layers with a spatial map: "
            f"{', '.join(known)}"
        )
    chosen = [known[str(name)] for name in names]
    _warn_small(chosen, layers)
    return chosen


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | Sequence[Layer] | None = None,
    targets: Sequence[int] | torch.Tensor | None = None,
    method: str = "gradcam",
) -> dict[str, np.ndarray]:
    """CAMs (N×H×W in [0, 1]) per layer name for standardized images N×C×H×W.

    `targets` are the class indices to explain, one per image; None explains the prediction.
    The model comes back as it went in: mode, hooks, in-place flags and .grad untouched.
    """
    how = get_method(method)
    if images.dim() != 4:
        raise BloodcellsError(f"images must be N×C×H×W, not of shape {tuple(images.shape)}")
    if layers and all(isinstance(layer, Layer) for layer in layers):
        chosen = list(layers)
    else:
        chosen = select_layers(model, layers, images.shape[1], images.shape[-1])
    device = _device(model)
    result: dict[str, np.ndarray] = {}
    with _prepared(model):
        x = images.detach().to(device).clone().requires_grad_(True)
        classes = _check_targets(model, x, targets)
        for layer in chosen:
            result[layer.name] = _one_layer(model, how, layer, x, classes)
    return result


@dataclass
class CamGrid:
    """Images picked from a dataset, with labels, predictions and the CAMs of each layer."""

    images: torch.Tensor  # N×C×H×W, standardized
    labels: list[int]
    predictions: list[int]
    classes: list[str]
    indices: list[int]
    layers: list[Layer]
    cams: dict[str, np.ndarray]
    method: str
    target: str


def gradcam_grid(
    model: nn.Module,
    dataset: Dataset,
    n: int = 6,
    layers: Sequence[str] | None = None,
    target: str = "predicted",
    method: str = "gradcam",
    seed: int = 0,
    device: str = "cpu",
) -> CamGrid:
    """CAMs of `n` images drawn from `dataset` (seeded), for the predicted or the true class."""
    if target not in TARGETS:
        raise BloodcellsError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    get_method(method)
    indices = dataset.random_indices(check_count(n), seed)
    picked = dataset.subset(indices)
    predictions = evaluate(model, picked, device).predictions.tolist()
    labels = picked.labels.tolist()
    images = picked.standardized()
    chosen = select_layers(model, layers, images.shape[1], images.shape[-1])
    explain = predictions if target == "predicted" else labels
    cams = compute_cams(model, images, chosen, explain, method)
    return CamGrid(
        images, labels, predictions, dataset.classes, indices, chosen, cams, method, target
    )


def _convs(layers: list[Layer]) -> list[Layer]:
    return [layer for layer in layers if isinstance(layer.module, nn.Conv2d)]


def _default_of(layers: list[Layer]) -> list[Layer]:
    """The last of each run of same-sized conv maps (a VGG block), maps of MIN_MAP or more."""
    large = [layer for layer in _convs(layers) if min(layer.size) >= MIN_MAP]
    ends = [
        a for a, b in zip(large, [*large[1:], None], strict=True) if b is None or a.size != b.size
    ]
    return [_rectified(layers, layer) for layer in ends[-MAX_DEFAULT_LAYERS:]]


def _rectified(layers: list[Layer], conv: Layer) -> Layer:
    """The in-place activation right after `conv` if there is one (VGG), else `conv` itself.

    An in-place ReLU overwrites the conv's output, so the model only ever keeps the rectified
    map. On the real PBC patches about 45% of VGG16's pre-ReLU 8×8 and 4×4 Grad-CAM maps were
    all zero, against about 1% of the rectified ones.
    """
    after = layers[layers.index(conv) + 1 :][:1]
    if after and getattr(after[0].module, "inplace", False) is True and after[0].size == conv.size:
        return after[0]
    return conv


def _warn_small(chosen: list[Layer], layers: list[Layer]) -> None:
    """Warn about chosen layers whose map is too small for a CAM to show anything."""
    small = [layer.label for layer in chosen if min(layer.size) < MIN_MAP]
    if small:
        ok = [layer.label for layer in _convs(layers) if min(layer.size) >= MIN_MAP]
        warnings.warn(
            f"layer {', '.join(small)}: a map smaller than {MIN_MAP}×{MIN_MAP} gives a constant "
            f"CAM (all zero after scaling) that shows nothing; conv layers with useful maps: "
            f"{', '.join(ok)}",
            UserWarning,
            stacklevel=4,
        )


def _check_targets(
    model: nn.Module, x: torch.Tensor, targets: Sequence[int] | torch.Tensor | None
) -> list[int]:
    """`targets` as a list of ints, checked against the model's outputs; None: predictions."""
    with torch.no_grad():
        logits = model(x)
    if targets is None:
        return logits.argmax(1).tolist()
    targets = [int(t) for t in torch.as_tensor(targets).flatten().tolist()]
    if len(targets) != len(x):
        raise BloodcellsError(f"{len(targets)} targets for {len(x)} images; give one per image")
    bad = [t for t in targets if not 0 <= t < logits.shape[1]]
    if bad:
        raise BloodcellsError(
            f"target class {bad[0]} does not exist; the model has {logits.shape[1]} classes "
            f"(0 to {logits.shape[1] - 1})"
        )
    return targets


def _one_layer(
    model: nn.Module, how: Method, layer: Layer, x: torch.Tensor, targets: list[int]
) -> np.ndarray:
    """The library's CAM for one layer; its context manager removes the hooks it added."""
    maps = None
    outputs = [ClassifierOutputTarget(t) for t in targets]
    stderr = contextlib.redirect_stderr(io.StringIO()) if how.quiet else contextlib.nullcontext()
    with stderr, how.cam(model=model, target_layers=[layer.module]) as cam:
        maps = cam(input_tensor=x, targets=outputs)
    if maps is None:  # the library's __exit__ swallows IndexError after printing it
        raise RuntimeError(f"pytorch-grad-cam failed on layer {layer.name}")
    return np.asarray(maps, dtype=np.float32)


@contextlib.contextmanager
def _prepared(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on (even under no_grad), no in-place ops; all restored after."""
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with _modes_kept(model), torch.inference_mode(False), torch.enable_grad():
            model.eval()
            for module in inplace:
                # an in-place ReLU would overwrite the hooked conv output on the CPU
                module.inplace = False
            yield
    finally:
        for module in inplace:
            module.inplace = True
        for p, grad in grads:
            p.grad = grad


@contextlib.contextmanager
def _modes_kept(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's training flag afterwards (mixed modes included)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
