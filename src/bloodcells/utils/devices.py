"""Which device to compute on: cpu, cuda or cuda:N, checked before anything is created."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from bloodcells.errors import BloodcellsError

DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


def check_device_name(name: str | torch.device | None) -> None:
    """A BloodcellsError unless `name` is None (automatic), cpu, cuda or cuda:N."""
    if isinstance(name, torch.device):
        name = str(name)
    if name and not (isinstance(name, str) and DEVICE_NAME.fullmatch(name)):
        raise BloodcellsError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")


def check_device(name: str | torch.device | None) -> None:
    """A BloodcellsError unless `name` is a device this machine has; cheap, starts no GPU work."""
    name = None if name is None else str(name)
    check_device_name(name)
    if not name or name == "cpu":
        return
    if not torch.cuda.is_available():
        raise BloodcellsError(f"device {name!r} asked for, but no CUDA GPU is available")
    index, count = torch.device(name).index, torch.cuda.device_count()
    if index is not None and index >= count:
        raise BloodcellsError(
            f"device {name!r} asked for, but this machine has {count} CUDA GPU(s): "
            f"cuda:0 to cuda:{count - 1}"
        )


def select_device(name: str | None = None) -> torch.device:
    """`name` if given (see check_device), else CUDA when present, else CPU."""
    check_device(name)
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def decode_workers() -> int:
    """Threads that decode images (PIL releases the GIL): one per core, at most 8."""
    return min(8, os.cpu_count() or 1)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `threads` (None: unchanged) for the block."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
