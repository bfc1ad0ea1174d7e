"""Variants: the sweep's syntax for a change to the lab's advanced CNN, and its name back.

A variant is written as on the command line: a name of exercise 3 (`base`, `bn2`, `dropout`,
`extra_fc`), any train option as KEY=VALUE (`lr=1e-3`, `model=simple`, `batch_size=16`,
`head_dropout=0.5`), or several joined with `+` (`bn2+dropout`). `lab` stands for the whole of
exercise 3. `variant_name` names a config the way `parse_variant` reads it back.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from bloodcells.errors import BloodcellsError, ModelError
from bloodcells.models.registry import get_spec
from bloodcells.training.config import TrainConfig, check_buildable
from bloodcells.utils.validation import MAX_SEED

LAB_VARIANTS = ("base", "bn2", "dropout", "extra_fc", "lr=1e-3", "lr=5e-5")
NAMED = {
    "base": {},
    "bn2": {"bn2": True},  # (a) BatchNorm after the second conv block
    "dropout": {"head_dropout": 0.3},  # (b) Dropout(0.3) between the linear layers
    "extra_fc": {"extra_fc": 32},  # (c) a third linear layer of 32 units
}
# KEY=VALUE a variant may set: TrainConfig fields, then model options
FIELDS: dict[str, type] = {
    "model": str,
    "lr": float,
    "batch_size": int,
    "image_size": int,
    "channels": int,
    "recipe": str,
    "schedule": str,
    "label_smoothing": float,
    "amp": bool,
}
OPTIONS: dict[str, type] = {"bn2": bool, "head_dropout": float, "extra_fc": int, "pretrained": bool}
ALIASES = {"size": "image_size", "batch": "batch_size"}
SWEEP_WIDE = ("seed", "epochs", "device")  # set for the whole sweep, never per variant

MAX_VARIANTS = 24
MAX_SEEDS = 50


@dataclass(frozen=True)
class Variant:
    """A named change to the default training config (the lab's advanced CNN)."""

    name: str
    settings: tuple[tuple[str, object], ...] = ()  # (key, value), keys from FIELDS or OPTIONS

    def config(self, seed: int = 0, epochs: int = 5, device: str | None = None) -> TrainConfig:
        """The TrainConfig of this variant; a one-line error naming the variant if invalid."""
        values = dict(self.settings)
        model = values.get("model", "advanced")
        try:
            spec = get_spec(model)
            fields = {k: v for k, v in values.items() if k in FIELDS}
            config = TrainConfig(
                **fields
                | {
                    "model": model,
                    "epochs": epochs,
                    "seed": seed,
                    "device": device,
                    "channels": values.get("channels", spec.channels),
                    "options": {k: v for k, v in values.items() if k in OPTIONS and v},
                }
            )
            check_buildable(config)
        except BloodcellsError as exc:
            raise type(exc)(f"variant {self.name!r}: {exc}") from None
        return config

    def to_dict(self) -> dict:
        return {"name": self.name, "settings": dict(self.settings)}


def parse_variant(text: str) -> Variant:
    """One variant: names and KEY=VALUE joined with '+'; a ModelError says what is wrong."""
    name = text.strip()
    if not name:
        raise ModelError("an empty variant; use e.g. base, bn2, dropout, extra_fc, lr=1e-3")
    settings: dict[str, object] = {}
    for part in (p.strip() for p in name.split("+")):
        if part in NAMED:
            changes = NAMED[part]
        elif "=" in part:
            key, _, raw = part.partition("=")
            key = _key(key.strip(), name)
            changes = {key: _value(key, raw.strip(), name)}
        else:
            raise ModelError(
                f"unknown variant {part!r}; use {', '.join(NAMED)}, lab, or KEY=VALUE "
                f"with KEY one of {', '.join([*FIELDS, *OPTIONS])} (join with +)"
            )
        for key, value in changes.items():
            if key in settings and settings[key] != value:
                raise ModelError(f"variant {name!r} sets {key} twice")
            settings[key] = value
    return Variant(name, tuple(sorted(settings.items())))


def _key(key: str, variant: str) -> str:
    key = key.replace("-", "_").lower()
    key = ALIASES.get(key, key)
    if key in SWEEP_WIDE:
        whole = "seeds" if key == "seed" else key
        raise ModelError(f"variant {variant!r}: {key} is set for the whole sweep ({whole})")
    if key not in FIELDS and key not in OPTIONS:
        raise ModelError(
            f"variant {variant!r}: unknown option {key!r}; "
            f"options: {', '.join([*FIELDS, *OPTIONS])}"
        )
    return key


def _value(key: str, raw: str, variant: str) -> object:
    kind = FIELDS.get(key) or OPTIONS[key]
    try:
        if kind is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes", "on")
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if not raw:
            raise ValueError(raw)
        return raw
    except ValueError:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "")
        raise ModelError(
            f"variant {variant!r}: {key}={raw!r} is not {wanted or 'a value'}"
        ) from None


def parse_variants(text: str) -> list[Variant]:
    """Comma-separated variants; `lab` is exercise 3's six. Duplicates are refused."""
    parts = [p.strip() for p in str(text).split(",")]
    names: list[str] = []
    for part in parts:
        if not part:
            continue
        names.extend(LAB_VARIANTS if part == "lab" else [part])
    if not names:
        raise ModelError("no variants given; use e.g. lab, or base,bn2")
    variants = [parse_variant(n) for n in names]
    seen: dict[str, str] = {}
    for v in variants:  # each checked now (a one-line error naming it), and told apart
        key = json.dumps(v.config().to_dict(), sort_keys=True)
        if key in seen:
            raise ModelError(f"variants {seen[key]!r} and {v.name!r} are the same config; keep one")
        seen[key] = v.name
    if len(variants) > MAX_VARIANTS:
        raise ModelError(f"at most {MAX_VARIANTS} variants in one sweep, not {len(variants)}")
    return variants


def parse_seeds(text: str | int) -> list[int]:
    """`5` (seeds 0 to 4), `0,3,7` or `10-14`; between 1 and MAX_SEEDS distinct seeds."""
    text = str(text).strip()
    try:
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if not 1 <= count <= MAX_SEEDS:
                raise BloodcellsError(f"seeds must be from 1 to {MAX_SEEDS}, not {count}")
            return list(range(count))
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
            low, high = int(m[1]), int(m[2])
            if high < low:
                raise ValueError(text)
            seeds = list(range(low, high + 1)) if high - low < MAX_SEEDS else [0] * (MAX_SEEDS + 1)
        else:
            seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise BloodcellsError(
            f"seeds takes a count (5), a list (0,3,7) or a range (10-14), not {text!r}"
        ) from None
    if len(seeds) > MAX_SEEDS:
        raise BloodcellsError(f"at most {MAX_SEEDS} seeds in one sweep, not {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise BloodcellsError(f"seeds lists a seed twice: {text}")
    if bad := [s for s in seeds if not 0 <= s <= MAX_SEED]:
        raise BloodcellsError(f"seeds must be from 0 to {MAX_SEED}, not {bad[0]}")
    return seeds


def lr_text(lr: float) -> str:
    """A learning rate as the lab writes it: 1e-3, 5e-5, 2.5e-4, 0.01."""
    if lr >= 0.01 or lr <= 0:
        return f"{lr:g}"
    exponent = math.floor(math.log10(lr))
    mantissa = float(f"{lr / 10**exponent:.6g}")
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def variant_name(config: TrainConfig) -> str:
    """The variant a config is, named as `parse_variant` reads it back ('base' for none).

    Settings are named where they differ from the default config of the same model and
    recipe; the number of epochs never is (a sweep sets it for every variant).
    """
    parts = []
    defaults = TrainConfig(model=config.model, recipe=config.recipe)
    if config.model != "advanced":
        parts.append(f"model={config.model}")
    if config.recipe != "lab":
        parts.append(f"recipe={config.recipe}")
    options = {k: v for k, v in config.options.items() if v}
    if options.get("bn2"):
        parts.append("bn2")
    if "head_dropout" in options:
        hd = options["head_dropout"]
        parts.append("dropout" if hd == 0.3 else f"head_dropout={hd:g}")
    if "extra_fc" in options:
        fc = options["extra_fc"]
        parts.append("extra_fc" if fc == 32 else f"extra_fc={fc}")
    if options.get("pretrained"):
        parts.append("pretrained")
    if config.lr is not None and config.lr != defaults.lr:
        parts.append(f"lr={lr_text(config.lr)}")
    if config.batch_size != defaults.batch_size:
        parts.append(f"batch_size={config.batch_size}")
    if config.schedule != defaults.schedule:
        parts.append(f"schedule={config.schedule}")
    if config.label_smoothing != defaults.label_smoothing:
        parts.append(f"label_smoothing={config.label_smoothing:g}")
    if config.amp:
        parts.append("amp=true")
    if config.image_size != defaults.image_size:
        parts.append(f"image_size={config.image_size}")
    if config.channels != get_spec(config.model).channels:
        parts.append(f"channels={config.channels}")
    return "+".join(parts) or "base"
