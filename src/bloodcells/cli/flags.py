"""Library errors name Python parameters (`per_class must be ...`); a command shows its flags.

with as_flags("per_class", "overwrite", data_root="--data"):
    robustness(run, data, per_class=per_class)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from bloodcells.errors import BloodcellsError

SIZE_FLAG = {"Transform size": "--size"}  # data.folders' memory advice, in the CLI's words


@contextmanager
def as_flags(
    *params: str, renamed: Mapping[str, str] | None = None, **flags: str
) -> Iterator[None]:
    """A BloodcellsError raised inside is raised again naming flags instead of parameters.

    `params` are shown as `--their-name`; `flags` map a parameter to another flag
    (data_root="--data"); `renamed` replaces other library words verbatim. The same exception
    is re-raised, so its cause and traceback stay for --debug.
    """
    try:
        yield
    except BloodcellsError as exc:
        named = {name: "--" + name.replace("_", "-") for name in params} | flags
        exc.args = (flag_message(str(exc), named, renamed or {}),)
        raise


def flag_message(text: str, flags: Mapping[str, str], renamed: Mapping[str, str]) -> str:
    """`text` with each parameter written as its flag: overwrite=True -> --overwrite,
    check=False -> --no-check, device='cpu' -> --device cpu, 'tile' -> --tile, a sentence
    opening with `seeds ` or `augment:`, or `(seeds)` -> --seeds; a name with an underscore
    (test_fraction) is never a plain word, so it is replaced wherever it stands."""
    for old, new in renamed.items():
        text = text.replace(old, new)
    for name, flag in flags.items():
        at = rf"(?<![\w'-]){re.escape(name)}"
        text = re.sub(rf"{at}=True\b", flag, text)
        text = re.sub(rf"{at}=False\b", "--no-" + flag.removeprefix("--"), text)
        text = re.sub(rf"{at}=(['\"])([^\s'\"]+)\1", rf"{flag} \2", text)
        text = re.sub(rf"{at}=", f"{flag} ", text)
        text = text.replace(f"'{name}'", flag).replace(f"({name})", f"({flag})")
        text = re.sub(rf"^{re.escape(name)}(?=[ :])", flag, text)
        if "_" in name:
            text = re.sub(rf"{at}(?![\w-])", flag, text)
    return text
