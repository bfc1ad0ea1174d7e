"""Every bound a user can type, checked in one place: one-line errors naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import TYPE_CHECKING

from bloodcells.errors import BloodcellsError, ModelError

if TYPE_CHECKING:
    import torch

MAX_IMAGES = 64  # per figure: more is unreadable, and costs minutes and gigabytes
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_SEED = 2**32 - 1
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 512  # pixels, square
MAX_EXTRA_FC = 4096  # units of the advanced CNN's optional third linear layer


def is_real(value: object) -> bool:
    """Whether `value` is a number (a bool is not)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_count(n: int, what: str = "images", limit: int = MAX_IMAGES) -> int:
    """`n` if it is a count a figure can show, else a one-line error."""
    if not 1 <= n <= limit:
        raise BloodcellsError(f"{what} must be between 1 and {limit} for one figure, not {n}")
    return n


def check_whole(
    name: str, value: object, low: int, high: int, error: type[BloodcellsError] = BloodcellsError
) -> int:
    """`value` if it is a whole number from `low` to `high`, else an `error` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be a whole number, not {value!r}")
    if value < low:
        raise error(f"{name} must be at least {low}, not {value}")
    if value > high:
        raise error(f"{name} must be at most {high}, not {value}")
    return value


def check_epochs(epochs: object) -> int:
    """`epochs` if it is a number of epochs one run may train (1 to MAX_EPOCHS)."""
    return check_whole("epochs", epochs, 1, MAX_EPOCHS)


def check_image_size(
    size: object, error: type[BloodcellsError] = BloodcellsError, name: str = "image_size"
) -> int:
    """`size` if images may be resized to size × size (MIN_IMAGE_SIZE to MAX_IMAGE_SIZE)."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise error(f"{name} must be a whole number of pixels, not {size!r}")
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise error(f"{name} must be {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, not {size}")
    return size


def check_positive(name: str, value: object) -> float:
    """`value` if it is a finite number above 0."""
    if not (is_real(value) and 0 < value < math.inf):
        raise BloodcellsError(f"{name} must be a positive number, not {value!r}")
    return value


def check_fraction(
    name: str, value: object, error: type[BloodcellsError] = BloodcellsError
) -> float:
    """`value` if it is a number from 0 up to, not including, 1 (a dropout, a smoothing)."""
    if not (is_real(value) and 0 <= value < 1):
        raise error(f"{name} must be from 0 up to (not including) 1, not {value!r}")
    return value


def check_flag(name: str, value: object, error: type[BloodcellsError] = BloodcellsError) -> bool:
    """`value` if it is True or False."""
    if not isinstance(value, bool):
        raise error(f"{name} must be true or false, not {value!r}")
    return value


def check_model_options(model: str, options: object, known: Iterable[str]) -> dict:
    """`options` if `model`, which takes the options `known`, can be built with them.

    An option the model does not take is refused unless it is off (False, 0, None).
    """
    if not isinstance(options, dict):
        raise ModelError(f"model options must be a dict, not {options!r}")
    known = tuple(known)
    unknown = sorted(str(k) for k, v in options.items() if k not in known and v)
    if unknown:
        raise ModelError(
            f"model {model!r} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(known) or 'none'}"
        )
    check_fraction("head_dropout", options.get("head_dropout", 0.0), ModelError)
    extra_fc = options.get("extra_fc", 0)
    if isinstance(extra_fc, bool) or not isinstance(extra_fc, int):
        raise ModelError(f"extra_fc must be a whole number of units, not {extra_fc!r}")
    if not 0 <= extra_fc <= MAX_EXTRA_FC:
        raise ModelError(f"extra_fc must be from 0 to {MAX_EXTRA_FC} units, not {extra_fc}")
    for flag in ("bn2", "pretrained"):
        check_flag(flag, options.get(flag, False), ModelError)
    return options


def check_channels(channels: object, error: type[BloodcellsError] = BloodcellsError) -> int:
    """`channels` if it is a colour mode: 1 (grayscale) or 3 (RGB)."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise error(f"channels must be 1 (grayscale) or 3 (RGB), not {channels!r}")
    return channels


def check_amp(amp: bool, device: torch.device) -> None:
    """A BloodcellsError if bf16 autocast (`amp`) is asked for on a device that is not CUDA."""
    if amp and device.type != "cuda":
        raise BloodcellsError(f"amp (bf16 autocast) needs a CUDA GPU, not {device}; drop it")
