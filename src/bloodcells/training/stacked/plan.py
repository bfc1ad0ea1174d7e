"""Planning stacks: which configs train together (`stack_key`) and how many members fit in
memory (`max_members`), split into stacks of about equal size (`split_evenly`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from bloodcells.models.registry import build_model
from bloodcells.training.config import TrainConfig

MAX_STACK = 32  # beyond this a CPU gains nothing more (see benchmarks/bench_sweep.py)
MEMORY_SHARE = 0.25  # a stack may use this share of the free memory (RAM or GPU)
ACTIVATION_FACTOR = 4  # saved outputs, their gradients, dropout masks, workspace per layer


def stack_key(config: TrainConfig) -> tuple:
    """Configs with equal keys stack together: one architecture, batch size, device, target,
    schedule and loss. The learning rate is not in it: members with different (peak) rates
    share a stack.
    """
    options = tuple(sorted((k, v) for k, v in config.options.items() if v))
    return (
        config.model,
        options,
        config.batch_size,
        config.image_size,
        config.channels,
        config.device,
        config.epochs,
        config.schedule,
        config.label_smoothing,
        config.amp,
    )


def member_bytes(config: TrainConfig, num_classes: int) -> int:
    """About how much memory one member of a stack needs while training.

    Parameters with their gradient and two Adam moments, plus ACTIVATION_FACTOR times every
    layer's output for one batch; measured on the meta device, so nothing is allocated.
    """
    with torch.device("meta"):
        model = build_model(
            config.model, config.channels, num_classes, config.image_size, **config.options
        )
        outputs = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
            for m in model.modules()
            if not list(m.children())
        ]
        model.eval()
        with torch.no_grad():
            model(torch.zeros(config.batch_size, config.channels, *(config.image_size,) * 2))
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return 4 * (4 * params + ACTIVATION_FACTOR * sum(outputs))


def free_bytes(device: torch.device) -> int:
    """Free memory on `device`: the GPU's, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown (not POSIX): assume 4 GiB


def max_members(
    config: TrainConfig, num_classes: int, device: torch.device, limit: int = MAX_STACK
) -> int:
    """How many members of `config` one stack may hold: MEMORY_SHARE of free memory, ≤ limit."""
    fits = int(MEMORY_SHARE * free_bytes(device)) // max(member_bytes(config, num_classes), 1)
    return max(1, min(limit, fits))


def split_evenly(items: Sequence, most: int) -> list[list]:
    """`items` in consecutive chunks of at most `most`, as equal in size as can be."""
    chunks = max(1, math.ceil(len(items) / most))
    size, extra = divmod(len(items), chunks)
    out, start = [], 0
    for i in range(chunks):
        end = start + size + (i < extra)
        out.append(list(items[start:end]))
        start = end
    return out
