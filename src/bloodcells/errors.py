"""Errors a user can act on: the CLI prints them as one line and exits with code 2."""


class BloodcellsError(Exception):
    """Base class for problems caused by input, not by a bug."""


class DataError(BloodcellsError):
    """A dataset folder that cannot be read as the lab's layout."""


class RunError(BloodcellsError):
    """A run folder that is missing, incomplete or inconsistent."""


class ModelError(BloodcellsError):
    """An unknown model name or an option it does not take."""


class TrainingDiverged(BloodcellsError):
    """The loss became NaN or infinite; the last good weights were kept."""


class DataWarning(UserWarning):
    """Something in a dataset was skipped or looks wrong, but loading went on."""


class TrainingWarning(UserWarning):
    """Training went on, but something looks wrong (a loss that exploded)."""


def os_reason(exc: OSError) -> str:
    """What the system said, in a few lower-case words: "no space left on device"."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]
