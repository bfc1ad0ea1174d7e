"""The stack: K models of one architecture as one computation, their parameters stacked.

The stack is built by hand from the model's layers (no torch.func): conv layers become one
grouped convolution (`groups=K`) over the members' channels side by side, so BatchNorm2d over
K·C channels keeps each member's statistics; linear layers become one batched matmul. Dropout
masks are drawn per member from its own generator, as F.dropout draws them alone. Which models
can be stacked (`chain_of`, `stackable`) is decided here too; training a stack is
bloodcells.training.stacked.fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from bloodcells.errors import BloodcellsError
from bloodcells.models.cnn import SimpleCNN
from bloodcells.models.registry import build_model
from bloodcells.training.config import TrainConfig

# Layers the stack knows how to run K-wide; anything else trains with fit, one by one.
_LAYERS = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.Dropout,
    nn.Flatten,
    nn.Linear,
)


def chain_of(model: nn.Module) -> list[nn.Module] | None:
    """The model as a plain chain of layers the stack can run, or None when it is not one."""
    if type(model) is nn.Sequential:
        layers = list(model)
    elif type(model) is SimpleCNN:
        layers = [model.conv, model.pool, model.flatten, model.fc]
    else:
        return None
    return layers if all(_supported(layer) for layer in layers) else None


def _supported(layer: nn.Module) -> bool:
    if type(layer) not in _LAYERS:
        return False
    if isinstance(layer, nn.Conv2d):
        return layer.groups == 1 and layer.padding_mode == "zeros"
    if isinstance(layer, nn.BatchNorm2d):
        return layer.affine and layer.track_running_stats and layer.momentum is not None
    if isinstance(layer, nn.MaxPool2d):
        return not layer.return_indices
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    return True


def stackable(config: TrainConfig, num_classes: int = 5) -> bool:
    """Whether models of `config` can train in a stack (else a sweep trains them with fit).

    bf16 autocast (amp) is left to fit: its rounding would not be the member's own; so is
    augmentation, which fit draws from each run's own generator.
    """
    if config.amp or config.augment != "lab":
        return False
    with torch.device("meta"):
        model = build_model(
            config.model, config.channels, num_classes, config.image_size, **config.options
        )
    return chain_of(model) is not None


class Slot:
    """Where a stacked tensor comes from (layer index, attribute) and how it is laid out.

    A stacked tensor is (K, ...) with member k's block contiguous at [k]. Conv weights are
    kept channels-last, (K, O, kh, kw, C), as the grouped convolution reads them; linear
    weights transposed, (K, in, out), so that their gradient comes out of bmm in place.
    """

    def __init__(self, layer: int, name: str, kind: str) -> None:
        self.layer, self.name, self.kind = layer, name, kind

    def to_storage(self, t: torch.Tensor) -> torch.Tensor:
        """A member's tensor in the stack's layout."""
        if self.kind == "conv":
            return t.permute(0, 2, 3, 1)
        return t.t() if self.kind == "linear" else t

    def to_member(self, t: torch.Tensor) -> torch.Tensor:
        """The stack's block of one member in the member's own layout (a view)."""
        if self.kind == "conv":
            return t.permute(0, 3, 1, 2)
        return t.t() if self.kind == "linear" else t


class Stack:
    """K models of one architecture as one computation, their parameters stacked (K, ...).

    Activations are channels-last (B, K·C, H, W) through the conv part, member k's channels
    at k·C, and (K, B, F) from Flatten on. Parameters are leaf tensors with member k's block
    at [k] (see Slot); members' own modules are read when the stack is built and written
    by `copy_to`.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        device: torch.device,
        mask_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        chains = [chain_of(m) for m in models]
        if not chains or any(c is None for c in chains):
            raise BloodcellsError("these models cannot be stacked (not a chain of known layers)")
        if len({tuple(_signature(layer) for layer in c) for c in chains}) != 1:
            raise BloodcellsError("only models of one architecture can be stacked")
        self.k = len(models)
        self.device = device
        # F.dropout fills its mask in the memory order of its input: the layout fit runs in
        self.mask_format = mask_format
        self.chains = chains
        self.template = chains[0]
        self.param_slots: list[Slot] = []
        self.params: list[torch.Tensor] = []  # leaves, in the order of param_slots
        self.buffer_slots: list[Slot] = []
        self.buffers: list[torch.Tensor] = []
        self._tensors: dict[tuple[int, str], torch.Tensor] = {}
        with torch.no_grad():
            for i, layer in enumerate(self.template):
                for name, param in layer.named_parameters(recurse=False):
                    kind = "plain"
                    if param.dim() == 4 and isinstance(layer, nn.Conv2d):
                        kind = "conv"
                    elif param.dim() == 2 and isinstance(layer, nn.Linear):
                        kind = "linear"
                    slot = Slot(i, name, kind)
                    stacked = torch.stack(
                        [slot.to_storage(getattr(c[i], name).detach()) for c in chains]
                    )
                    stacked = stacked.to(device).contiguous().requires_grad_()
                    self.param_slots.append(slot)
                    self.params.append(stacked)
                    self._tensors[(i, name)] = stacked
                for name, _ in layer.named_buffers(recurse=False):
                    stacked = torch.stack([getattr(c[i], name).detach() for c in chains])
                    self.buffer_slots.append(Slot(i, name, "plain"))
                    self.buffers.append(stacked.to(device))
                    self._tensors[(i, name)] = self.buffers[-1]
        for k, model in enumerate(models):
            if {id(p) for p in model.parameters()} != {id(p) for p in self.member_params(k)}:
                raise BloodcellsError("a member has parameters outside its chain of layers")

    def member_params(self, k: int) -> list[nn.Parameter]:
        """Member k's own parameter objects, in the order of `self.params`."""
        return [getattr(self.chains[k][s.layer], s.name) for s in self.param_slots]

    @torch.no_grad()
    def copy_to(self, k: int) -> None:
        """Write the stack's current weights and buffers of member k into its own model."""
        for slot, stacked in zip(self.param_slots, self.params, strict=True):
            getattr(self.chains[k][slot.layer], slot.name).copy_(slot.to_member(stacked[k]))
        for slot, stacked in zip(self.buffer_slots, self.buffers, strict=True):
            getattr(self.chains[k][slot.layer], slot.name).copy_(stacked[k])

    def forward(
        self, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Logits (K, B, classes) of x (B, K·C, H, W); training mode when `generators` given.

        In training mode BatchNorm uses and updates batch statistics and Dropout multiplies
        by masks drawn from `generators[k]` for member k, as F.dropout draws them on a CPU.
        """
        training = generators is not None
        k, t = self.k, self._tensors
        x = x.contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(self.template):
            if isinstance(layer, nn.Conv2d):
                weight, bias = t[(i, "weight")], t.get((i, "bias"))
                out, kh, kw, cin = weight.shape[1:]
                x = F.conv2d(
                    x,
                    weight.view(k * out, kh, kw, cin).permute(0, 3, 1, 2),
                    None if bias is None else bias.view(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    groups=k,
                )
            elif isinstance(layer, nn.BatchNorm2d):
                if training:
                    t[(i, "num_batches_tracked")].add_(1)
                x = F.batch_norm(
                    x,
                    t[(i, "running_mean")].view(-1),
                    t[(i, "running_var")].view(-1),
                    t[(i, "weight")].view(-1),
                    t[(i, "bias")].view(-1),
                    training,
                    layer.momentum,
                    layer.eps,
                )
            elif isinstance(layer, nn.ReLU):
                x = F.relu(x)
            elif isinstance(layer, nn.MaxPool2d):
                x = F.max_pool2d(
                    x, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                    layer.ceil_mode,
                )  # fmt: skip
            elif isinstance(layer, nn.Dropout):
                if training and layer.p > 0 and x.numel():
                    x = x * self._masks(x, layer.p, generators)
            elif isinstance(layer, nn.Flatten):
                b, _, h, w = x.shape
                x = x.reshape(b, k, -1, h, w).transpose(0, 1).reshape(k, b, -1)
            elif isinstance(layer, nn.Linear):
                weight, bias = t[(i, "weight")], t.get((i, "bias"))
                if bias is None:
                    x = torch.bmm(x, weight)
                else:
                    x = torch.baddbmm(bias.unsqueeze(1), x, weight)
        if x.dim() != 3:
            raise BloodcellsError("a stacked model must end in a linear layer")
        return x

    def _masks(self, x: torch.Tensor, p: float, generators: Sequence[torch.Generator]):
        """Member k's dropout mask from generators[k], as F.dropout makes it alone."""
        if x.dim() == 3:  # (K, B, F): member k's input is (B, F)
            noise = [
                torch.empty(x.shape[1:], device=x.device).bernoulli_(1 - p, generator=g)
                for g in generators
            ]
            return torch.stack(noise).div_(1 - p)
        b, kc, h, w = x.shape  # member k's input is (B, C, H, W), its channels at k·C
        shape = (b, kc // self.k, h, w)
        fmt = self.mask_format
        noise = [
            torch.empty(shape, device=x.device, memory_format=fmt)
            .bernoulli_(1 - p, generator=g)
            .permute(0, 2, 3, 1)
            for g in generators
        ]
        masks = torch.stack(noise, dim=3).div_(1 - p)  # (B, H, W, K, C): channels-last
        return masks.view(b, h, w, kc).permute(0, 3, 1, 2)

    def inputs(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Images x[index[k]] for every member, as one channels-last (B, K·C, H, W) batch."""
        batch = x[index.t().reshape(-1)]  # (B·K, C, H, W), member fastest
        batch = batch.reshape(index.shape[1], -1, *x.shape[2:])
        return batch.contiguous(memory_format=torch.channels_last)


def _signature(layer: nn.Module) -> tuple:
    """What must agree between members' layers: type, shapes and settings."""
    shapes = tuple((n, tuple(p.shape)) for n, p in layer.named_parameters(recurse=False))
    settings = {
        k: v
        for k, v in vars(layer).items()
        if not k.startswith("_") and k != "training" and isinstance(v, int | float | str | tuple)
    }
    return (type(layer).__name__, shapes, tuple(sorted(settings.items())))
