"""Find the white cells in a whole field: stain separation (or contrast), nuclei, cell boxes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import measure

from bloodcells.cells.cell import Cell, Stain
from bloodcells.cells.stains import brightfield_labels, giemsa_labels
from bloodcells.errors import DataError

MAX_PIXELS = 50_000_000
STAINS = ("giemsa", "brightfield", "auto")
# 99th percentile of a pixel's chroma against the field's median colour: on pbc-wbc at least
# 80 (nuclei) and 9-28 at the 90th (red cells on the pale background); a gray tile is under 6.
STAIN_CHROMA = 20.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image as uint8 gray (H×W) or RGB (H×W×3): alpha dropped, 16-bit and floats scaled."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(f"image must be H×W, H×W×3 or H×W×4, not shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise DataError(f"image must be at least 2×2 pixels, not shape {image.shape}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise DataError(
            f"image has {image.shape[0] * image.shape[1]:,} pixels, over MAX_PIXELS "
            f"({MAX_PIXELS:,}): cut it into tiles first"
        )
    if image.ndim == 3:
        image = image[..., 0] if image.shape[2] == 1 else image[..., :3]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high)) or low < -0.01 or high > 1.01:
            raise DataError(f"a float image must hold values in [0, 1], not [{low:g}, {high:g}]")
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise DataError(f"image dtype must be uint8, uint16 or float in [0, 1], not {image.dtype}")


def load_field(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as `find_cells` wants it: uint8 gray or RGB."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"image {path} is not a regular file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(
                    f"image {path} has {im.width * im.height:,} pixels, over MAX_PIXELS "
                    f"({MAX_PIXELS:,}): cut it into tiles first"
                )
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16-bit (or wider) gray: 16-bit if any value needs it, else 8-bit in a wide type
                values = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
                return to_uint8(np.clip(values / top, 0.0, 1.0))
            if im.mode in ("1", "LA"):
                im = im.convert("L")
            elif im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            return to_uint8(np.asarray(im))
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {path} is too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def detect_stain(image: np.ndarray) -> Stain:
    """ "giemsa" for a stained colour smear, "brightfield" for a gray or nearly gray field.

    Decided by colour, not by the hematoxylin signal alone: a stained field of only red cells
    has no nucleus to show, yet must stay a smear (and give no cell), never a brightfield
    tile whose red cells would pass for cells.
    """
    return _stain_of(to_uint8(image))


def _stain_of(pixels: np.ndarray) -> Stain:
    if pixels.ndim == 2:
        return "brightfield"
    # Colour against the field's own median colour, so that a tinted gray tile stays gray.
    step = max(1, round((pixels.shape[0] * pixels.shape[1] / 20_000) ** 0.5))
    sample = pixels[::step, ::step]
    tint = sample.astype(np.float32) - np.median(sample.reshape(-1, 3), axis=0)
    chroma = np.linalg.norm(tint - tint.mean(axis=2, keepdims=True), axis=2)
    return "giemsa" if np.percentile(chroma, 99) > STAIN_CHROMA else "brightfield"


def find_cells(
    image: np.ndarray, stain: str = "auto", *, min_area: int | None = None
) -> list[Cell]:
    """Every white cell in a field, sorted by (y0, x0).

    `image`: H×W, H×W×3 or H×W×4 (alpha dropped), uint8, uint16 or float in [0, 1].
    `stain`: "giemsa" (stained colour smear: colour deconvolution), "brightfield" (a flat
    background: contrast) or "auto" (`detect_stain`). `min_area`: the smallest nucleus, in
    px², a cell may have; by default 1,800 (pbc-wbc's scale: platelet clumps stay under it),
    or 1.5% of an image smaller than ~350×350 px (a crop around one cell). A cell cut by the
    image edge needs half of it, and is reported with `touches_border`. In brightfield,
    `min_area` is the smallest cell (default 20 px²; debris under a fifth of the largest cell
    is dropped too).
    """
    return cell_labels(image, stain, min_area=min_area)[1]


def cell_labels(
    image: np.ndarray, stain: str = "auto", *, min_area: int | None = None
) -> tuple[np.ndarray, list[Cell]]:
    """`find_cells` with its label image: pixel value i + 1 is `cells[i]`'s mask, 0 no cell."""
    if stain not in STAINS:
        raise DataError(f"stain must be one of {', '.join(STAINS)}, not {stain!r}")
    if min_area is not None and not (isinstance(min_area, int | np.integer) and min_area >= 1):
        raise DataError(f"min_area must be a positive number of pixels, not {min_area!r}")
    pixels = to_uint8(image)
    used: Stain = _stain_of(pixels) if stain == "auto" else stain  # type: ignore[assignment]
    if used == "giemsa":
        if pixels.ndim == 2:
            raise DataError("stain 'giemsa' needs a colour (RGB) image, not a gray one")
        labels, nuclei = giemsa_labels(pixels, min_area)
    else:
        gray = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
        labels, nuclei = brightfield_labels(gray, min_area)
    return _cells_from_labels(labels, nuclei, used)


def _cells_from_labels(
    labels: np.ndarray, nuclei: np.ndarray, stain: Stain
) -> tuple[np.ndarray, list[Cell]]:
    h, w = labels.shape
    found = []
    for region in measure.regionprops(labels):
        y0, x0, y1, x1 = region.bbox
        cy, cx = region.centroid
        cell = Cell(
            x0=int(x0),
            y0=int(y0),
            x1=int(x1),
            y1=int(y1),
            cx=float(cx),
            cy=float(cy),
            nucleus_area=int(nuclei[region.slice][region.image].sum()),
            cell_area=int(region.area),
            touches_border=bool(y0 == 0 or x0 == 0 or y1 == h or x1 == w),
            stain=stain,
        )
        found.append((cell, region.label))
    found.sort(key=lambda pair: (pair[0].y0, pair[0].x0))
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    for i, (_, label) in enumerate(found):
        lookup[label] = i + 1
    return lookup[labels], [cell for cell, _ in found]
