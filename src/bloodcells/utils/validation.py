"""Every bound a user can type, checked in one place: one-line errors naming the parameter."""

from __future__ import annotations

from bloodcells.errors import BloodcellsError

MAX_IMAGES = 64  # per figure: more is unreadable, and costs minutes and gigabytes


def check_count(n: int, what: str = "images", limit: int = MAX_IMAGES) -> int:
    """`n` if it is a count a figure can show, else a one-line error."""
    if not 1 <= n <= limit:
        raise BloodcellsError(f"{what} must be between 1 and {limit} for one figure, not {n}")
    return n
