"""The fixed family of image shifts the robustness benchmark measures a run under.

Like ImageNet-C, for cells: each shift below at 3 severities, computed from the dev images and
fixed by a seed, so every run is measured on the same images. The shifts are made on the
images as RGB, on the CPU, and stored as 8 bits, as another lab's files would be; a grayscale
model then sees them converted to gray exactly as the data loader converts (PIL's "L"). So a
gray model meets the stain and hue shifts too, as it would meet them in another lab, and gray
and RGB models of one dataset are measured on the same shifted images. Hue and stain are left
out (and said so) only when the source images themselves are gray.

============ ====================== =========================================================
shift        severities 1, 2, 3     what changes
============ ====================== =========================================================
scale_down   zoom ×0.85, ×0.75, ×0.65 cells smaller in the frame (border pixels fill the edge)
scale_up     zoom ×1.15, ×1.33, ×1.5  cells larger in the frame (zoom about the centre)
blur         σ 0.5, 1, 1.5 px       defocus (Gaussian)
noise        σ 0.03, 0.06, 0.1      Gaussian noise per pixel and channel ([0, 1] range)
brightness   ×1.15, ×1.3, ×1.5      overexposure: brighter, clipped at white
contrast     ×0.7, ×0.5, ×0.3       washed out: distance from the image mean scaled
gamma        γ 0.67, 0.5, 0.33      x ** γ: midtones brighter (a camera's gamma)
jpeg         quality 50, 30, 10     JPEG compression (PIL)
hue          ±0.05, ±0.1, ±0.15 turn the hue rotated, the sign random per image
stain        ±0.15, ±0.3, ±0.5      each HED stain amount × (1 ± level), signs random per
                                    image and stain (Ruifrok-Johnston deconvolution)
============ ====================== =========================================================

Brightness and contrast would change nothing at all after the lab's per-image standardization
(see bloodcells.ops.augment); what they measure is clipping and 8-bit rounding. Expect them near
the clean accuracy: they are in the family because the other labs' images do differ so, and a
model that fails them has a bug, not a weakness.

Hue turns about the luma axis, which is exactly what the gray conversion keeps, so for a gray
model it is no shift at all (8-bit rounding aside); stain is one.

The mean over all shifts and severities is the headline number ("mean under shift").
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bloodcells.data import to_unit
from bloodcells.errors import BloodcellsError
from bloodcells.ops.image_ops import (
    adjust_gamma,
    gaussian_blur,
    rotate_hue,
    scale_contrast,
    stain_jitter,
    zoom_shift,
)

# The family's name and version: results of different versions are not comparable (bump it
# whenever a shift, a level, or the code that makes the images changes).
FAMILY = "bloodcells-shifts-1"
SEED = 0  # the seed of the random parts (noise, hue and stain directions): fixed, documented
SEVERITIES = (1, 2, 3)
CHUNK = 2048  # images shifted at a time: only memory depends on it


@dataclass(frozen=True)
class Shift:
    """One shift of the family: its levels at severities 1-3 and how it is made."""

    name: str
    levels: tuple[float, float, float]
    label: str  # the level as the table shows it: label.format(level)
    description: str
    needs_colour: bool = False

    def level_label(self, severity: int) -> str:
        return self.label.format(self.levels[severity - 1])


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("scale_down", (0.85, 0.75, 0.65), "zoom ×{:g}", "cells smaller in the frame"),
        Shift("scale_up", (1.15, 1.33, 1.5), "zoom ×{:g}", "cells larger in the frame"),
        Shift("blur", (0.5, 1.0, 1.5), "σ {:g} px", "defocus (Gaussian blur)"),
        Shift("noise", (0.03, 0.06, 0.1), "σ {:g}", "Gaussian noise per pixel and channel"),
        Shift("brightness", (1.15, 1.3, 1.5), "×{:g}", "overexposure, clipped at white"),
        Shift("contrast", (0.7, 0.5, 0.3), "×{:g}", "washed out: contrast scaled"),
        Shift("gamma", (0.67, 0.5, 0.33), "γ {:g}", "x ** γ: midtones brighter"),
        Shift("jpeg", (50, 30, 10), "quality {:g}", "JPEG compression"),
        Shift("hue", (0.05, 0.1, 0.15), "±{:g} turn", "hue rotated", needs_colour=True),
        Shift("stain", (0.15, 0.3, 0.5), "±{:g}", "HED stain amounts scaled", needs_colour=True),
    )
}


# -- making the shifted images ----------------------------------------------------------------


def shift_seed(name: str, severity: int, seed: int = SEED) -> int:
    """The generator seed of one shift at one severity: independent of which others run.

    32 bits (a CPU generator uses no more), from `seed`, the shift's name and the severity.
    """
    return zlib.crc32(f"{seed}:{name}:{severity}".encode())


def shift_images(images: torch.Tensor, name: str, severity: int, seed: int = SEED) -> torch.Tensor:
    """`images` (N×C×H×W, uint8 or floats in [0, 1]) under shift `name` at `severity` 1-3.

    Computed on the CPU and returned in the images' own dtype (8-bit images are rounded back
    to 8 bits), so the result depends only on the images, the shift and `seed`.
    """
    shift = SHIFTS.get(name)
    if shift is None:
        raise BloodcellsError(f"unknown shift {name!r}; the shifts: {', '.join(SHIFTS)}")
    if severity not in SEVERITIES:
        raise BloodcellsError(f"severity must be 1, 2 or 3, not {severity!r}")
    if shift.needs_colour and images.shape[1] != 3:
        raise BloodcellsError(f"the {name} shift needs RGB images, not {images.shape[1]} channel")
    level = shift.levels[severity - 1]
    generator = torch.Generator().manual_seed(shift_seed(name, severity, seed))
    parts = [
        _shift_chunk(images[i : i + CHUNK].cpu(), name, level, generator)
        for i in range(0, len(images), CHUNK)
    ]
    return torch.cat(parts) if parts else images.cpu().clone()


def _shift_chunk(
    images: torch.Tensor, name: str, level: float, generator: torch.Generator
) -> torch.Tensor:
    if name == "jpeg":
        return _from_uint8(jpeg(_to_uint8(images), int(level)), images.dtype)
    x, n = to_unit(images), len(images)
    full = torch.full((n,), float(level))
    if name in ("scale_down", "scale_up"):
        x = zoom_shift(x, full)
    elif name == "blur":
        x = gaussian_blur(x, full)
    elif name == "noise":
        x = x + level * torch.randn(x.shape, generator=generator)
    elif name == "brightness":
        x = x * level
    elif name == "contrast":
        x = scale_contrast(x, full)
    elif name == "gamma":
        x = adjust_gamma(x, full)
    elif name == "hue":
        x = rotate_hue(x, level * _signs(generator, n))
    elif name == "stain":
        x = stain_jitter(x, 1 + level * _signs(generator, n, 3), torch.zeros(n, 3))
    return _from_unit(x.clamp(0, 1), images.dtype)


def _signs(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(2, shape, generator=generator).float() * 2 - 1


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images
    return to_unit(images).mul(255).round().clamp(0, 255).to(torch.uint8)


def _from_uint8(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return images if dtype == torch.uint8 else to_unit(images).to(dtype)


def _from_unit(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return x.mul(255).round().clamp(0, 255).to(torch.uint8)
    return x.to(dtype)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 images (N×1 or N×3 ×H×W) JPEG-encoded at `quality` and decoded again (PIL)."""
    array = images.permute(0, 2, 3, 1).numpy()
    out = np.empty_like(array)
    for i, image in enumerate(array):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert(pil.mode)).reshape(image.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB images as the data loader would give them in `channels` (1: PIL's "L", exactly)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] != 3 or channels != 1:
        raise BloodcellsError(f"cannot turn {images.shape[1]}-channel images into {channels}")
    if (
        images.dtype == torch.uint8
    ):  # PIL's integer formula: L = (19595 R + 38470 G + 7471 B) / 2^16
        weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
        gray = ((images.int() * weights).sum(1, keepdim=True) + 0x8000) >> 16
        return gray.to(torch.uint8)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).to(images.dtype)


def is_gray(images: torch.Tensor) -> bool:
    """Whether RGB `images` have no colour (R = G = B everywhere)."""
    return images.shape[1] == 1 or bool(
        (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()
    )
