"""One SYNTHETIC cell patch drawn: procedural brightfield-like white blood cells, not real cells.

Stand-in patches for the lab's five classes from hand-set distributions (cell size, nucleus
shape, cytoplasm granules) plus brightfield imaging effects (membrane halo or dark ring,
defocus blur, illumination gradient, shot noise, jitter, rotation). Nothing here is measured
from real cells; use it to exercise the pipeline, never to draw conclusions.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from bloodcells.errors import DataError

CLASSES: tuple[str, ...] = ("B", "T", "eosinophil", "monocyte", "neutrophil")

# All geometry is in reference pixels: pixels of a 32x32 patch. Other sizes scale it.
REFERENCE_SIZE = 32
# Render this many times finer than the output, then box-downsample for smooth edges.
SUPERSAMPLE = 4
FULL_TURN = (0.0, 2.0 * math.pi)
Range = tuple[float, float]
"""A (low, high) uniform range, or a (mean, sd) normal for fields named *_mean_sd."""


@dataclass(frozen=True)
class CellClass:
    """How one class differs: size, nucleus shape and cytoplasm granules."""

    radius_mean_sd: Range  # cell radius, reference px
    nucleus: Literal["round", "kidney", "lobed"]
    nucleus_ratio_mean_sd: Range  # nucleus (or lobe) radius / cell radius
    lobes: tuple[int, int] = (1, 1)  # inclusive range of lobe counts for "lobed"
    lobe_arc: Range = (0.0, 0.0)  # radius of the arc the lobes sit on / cell radius
    nucleus_offset: float = 0.15  # max nucleus centre offset / cell radius
    granule_sigma: float = 0.5  # granule blob size, reference px
    granule_amp: float = 0.0  # brightness added by granules (fraction of background)


CELL_CLASSES: dict[str, CellClass] = {
    "B": CellClass(radius_mean_sd=(8.6, 0.7), nucleus="round", nucleus_ratio_mean_sd=(0.66, 0.05)),
    "T": CellClass(radius_mean_sd=(6.8, 0.6), nucleus="round", nucleus_ratio_mean_sd=(0.80, 0.04)),
    "eosinophil": CellClass(
        radius_mean_sd=(10.0, 0.8),
        nucleus="lobed",
        nucleus_ratio_mean_sd=(0.40, 0.04),
        lobes=(2, 2),
        lobe_arc=(0.38, 0.48),
        granule_sigma=0.7,
        granule_amp=0.36,
    ),
    "monocyte": CellClass(
        radius_mean_sd=(12.3, 0.9),
        nucleus="kidney",
        nucleus_ratio_mean_sd=(0.62, 0.05),
        nucleus_offset=0.25,
        granule_sigma=0.6,
        granule_amp=0.03,
    ),
    "neutrophil": CellClass(
        radius_mean_sd=(9.2, 0.9),
        nucleus="lobed",
        nucleus_ratio_mean_sd=(0.25, 0.03),
        lobes=(3, 5),
        lobe_arc=(0.44, 0.56),
        granule_sigma=0.45,
        granule_amp=0.08,
    ),
}


@dataclass(frozen=True)
class Imaging:
    """Brightfield effects shared by every class; fractions are of the background level."""

    background: Range = (0.55, 0.72)  # background gray level in [0, 1]
    aspect: Range = (1.0, 1.2)  # cell outline elongation
    wobble: float = 0.04  # amplitude of low-order bumps on the outline
    jitter: float = 1.5  # max centre offset, reference px
    cytoplasm_absorb: Range = (0.06, 0.14)
    nucleus_absorb: Range = (0.22, 0.40)
    chromatin_amp: float = 0.25  # relative texture of nucleus darkness
    chromatin_sigma: float = 0.9
    granule_threshold: float = 0.3  # in sd of the noise field; higher means sparser granules
    edge_softness: float = 0.15  # reference px
    ring_amp: Range = (0.08, 0.25)  # membrane halo (bright) or ring (dark), sign random
    ring_width: Range = (0.45, 0.9)
    blur_sigma: Range = (0.2, 0.7)  # defocus, reference px
    gradient: Range = (0.0, 0.15)  # illumination change across the patch
    photons: Range = (800.0, 3000.0)  # expected counts at gray level 1.0 per output pixel


@dataclass(frozen=True)
class Shapes:
    """Geometry shared by all nuclei of a kind; lengths relative to the nucleus (lobe) radius."""

    min_cell_radius: float = 3.0  # reference px, floor for the normal draw
    min_nucleus_ratio: float = 0.15
    round_oval: float = 1.05  # axis ratio of round nuclei is this squared
    kidney_axes: Range = (1.15, 0.85)  # oval semi-axes before the notch
    notch_radius: Range = (0.45, 0.65)
    notch_depth: Range = (0.95, 1.15)  # notch centre distance from the oval centre
    lobe_spacing: Range = (0.9, 1.15)  # 1.0: neighbouring lobes just touch
    lobe_angle_sd: float = 0.12  # radians, irregularity of lobe placement
    lobe_spread: Range = (0.85, 1.15)  # per-lobe size and arc-distance factor
    bridge_half_width: float = 0.12  # chromatin bridge between lobes


IMAGING = Imaging()
SHAPES = Shapes()


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    """One draw from a (low, high) uniform range."""
    return float(rng.uniform(*bounds))


def _normal(rng: np.random.Generator, mean_sd: Range, floor: float) -> float:
    """One draw from a (mean, sd) normal, kept above floor."""
    return max(floor, float(rng.normal(*mean_sd)))


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an n x n patch, in reference px, relative to its centre."""
    axis = (np.arange(n, dtype=np.float32) + 0.5) * (REFERENCE_SIZE / n) - REFERENCE_SIZE / 2
    x, y = np.meshgrid(axis, axis)
    return x, y


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in a frame rotated by angle (radians)."""
    c, s = math.cos(angle), math.sin(angle)
    return c * x + s * y, -s * x + c * y


def _soft_mask(distance: np.ndarray, softness: float) -> np.ndarray:
    """1 inside (negative signed distance), 0 outside, with a linear edge softness wide."""
    return np.clip(0.5 - distance / softness, 0.0, 1.0)


def _length(du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Euclidean length of (du, dv); sqrt of squares is several times faster than np.hypot."""
    return np.sqrt(du * du + dv * dv)


def _circle_distance(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    """Signed distance to a circle."""
    return _length(u - cu, v - cv) - r


def _segment_distance(
    u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float], half_width: float
) -> np.ndarray:
    """Signed distance to a capsule of the given half width around segment a-b."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / max(du * du + dv * dv, 1e-9), 0.0, 1.0)
    return _length(u - a[0] - t * du, v - a[1] - t * dv) - half_width


def _outline_distance(
    u: np.ndarray, v: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Approximate signed distance to a slightly elliptic, slightly bumpy cell outline."""
    stretch = math.sqrt(_uniform(rng, IMAGING.aspect))
    q = _length(u / stretch, v * stretch)
    # cos/sin of 2θ and 3θ from the unit direction, cheaper than arctan2 + cos
    c, s = u / (q + 1e-6), v / (q + 1e-6)
    cos2, sin2 = c * c - s * s, 2 * c * s
    cos3, sin3 = c * cos2 - s * sin2, s * cos2 + c * sin2
    a2, b2, a3, b3 = (float(w) for w in rng.uniform(-IMAGING.wobble, IMAGING.wobble, 4))
    bumps = 1.0 + a2 * cos2 + b2 * sin2 + a3 * cos3 + b3 * sin3
    return (q / bumps - radius) * min(stretch, 1 / stretch)


def _round_nucleus(u: np.ndarray, v: np.ndarray, rn: float) -> np.ndarray:
    """Signed distance to a round nucleus, slightly oval."""
    return _length(u / SHAPES.round_oval, v * SHAPES.round_oval) - rn


def _kidney_nucleus(
    u: np.ndarray, v: np.ndarray, rn: float, rng: np.random.Generator
) -> np.ndarray:
    """Signed distance to a bean-shaped nucleus: an oval with a round notch bitten out."""
    a, b = SHAPES.kidney_axes
    oval = _length(u / a, v / b) - rn
    notch_r = rn * _uniform(rng, SHAPES.notch_radius)
    notch = _circle_distance(u, v, 0.0, -rn * _uniform(rng, SHAPES.notch_depth), notch_r)
    return np.maximum(oval, -notch)


def _lobed_nucleus(
    u: np.ndarray, v: np.ndarray, rl: float, n_lobes: int, arc: float, rng: np.random.Generator
) -> np.ndarray:
    """Signed distance to round lobes along an arc, joined by thin chromatin bridges."""
    touching = 2.0 * math.asin(min(1.0, rl / arc))  # angle between touching lobe centres
    step = _uniform(rng, SHAPES.lobe_spacing) * touching
    angles = (np.arange(n_lobes) - (n_lobes - 1) / 2) * step
    angles += rng.normal(0.0, SHAPES.lobe_angle_sd, n_lobes)
    radii = arc * rng.uniform(*SHAPES.lobe_spread, n_lobes)
    centres = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    centres[:, 0] -= centres[:, 0].mean()
    points = [(float(cu), float(cv)) for cu, cv in centres]
    lobe_r = (rl * rng.uniform(*SHAPES.lobe_spread, n_lobes)).tolist()
    d = np.full(u.shape, np.inf, dtype=np.float32)
    for (cu, cv), r in zip(points, lobe_r, strict=True):
        d = np.minimum(d, _circle_distance(u, v, cu, cv, r))
    for a, b in itertools.pairwise(points):
        d = np.minimum(d, _segment_distance(u, v, a, b, SHAPES.bridge_half_width * rl))
    return d


def _nucleus_distance(
    u: np.ndarray, v: np.ndarray, radius: float, kind: CellClass, rng: np.random.Generator
) -> np.ndarray:
    """Signed distance to this class's nucleus, placed off-centre and turned at random."""
    ratio = _normal(rng, kind.nucleus_ratio_mean_sd, floor=SHAPES.min_nucleus_ratio)
    rn = ratio * radius
    offset = kind.nucleus_offset * radius * _uniform(rng, (0.0, 1.0))
    direction = _uniform(rng, FULL_TURN)
    shifted_u, shifted_v = u - offset * math.cos(direction), v - offset * math.sin(direction)
    nu, nv = _rotate(shifted_u, shifted_v, _uniform(rng, FULL_TURN))
    if kind.nucleus == "round":
        return _round_nucleus(nu, nv, rn)
    if kind.nucleus == "kidney":
        return _kidney_nucleus(nu, nv, rn, rng)
    n_lobes = int(rng.integers(kind.lobes[0], kind.lobes[1] + 1))
    return _lobed_nucleus(nu, nv, rn, n_lobes, _uniform(rng, kind.lobe_arc) * radius, rng)


@functools.cache
def _squared_frequencies(shape: tuple[int, int]) -> np.ndarray:
    """fx² + fy² on the rfft2 grid of an image of this shape (read-only, shared)."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    f2 = fx**2 + fy**2
    f2.flags.writeable = False
    return f2


def _gaussian_transfer(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Fourier transfer function of a Gaussian blur, for rfft2 spectra."""
    return np.exp(np.float32(-2.0 * (math.pi * sigma_px) ** 2) * _squared_frequencies(shape))


def _gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur by FFT (wraps around the borders, which are plain background here)."""
    spectrum = np.fft.rfft2(image) * _gaussian_transfer(image.shape, sigma_px)
    return np.fft.irfft2(spectrum, s=image.shape).astype(np.float32)


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Blurred white noise scaled to unit standard deviation."""
    # White noise is white in Fourier space too, so draw the spectrum directly (one FFT
    # saved); uniform parts are enough, the sum over many frequencies is near Gaussian.
    re, im = rng.random((2, shape[0], shape[1] // 2 + 1), dtype=np.float32) - np.float32(0.5)
    white = re + 1j * im
    field = np.fft.irfft2(white * _gaussian_transfer(shape, sigma_px), s=shape)
    return (field / (field.std() + 1e-6)).astype(np.float32)


def _coarse_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise drawn at output resolution and repeated up to shape."""
    # Good enough for blobs wider than an output pixel, with an FFT SUPERSAMPLE² times smaller.
    coarse = (shape[0] // SUPERSAMPLE, shape[1] // SUPERSAMPLE)
    field = _smooth_noise(coarse, sigma_px / SUPERSAMPLE, rng)
    return np.repeat(np.repeat(field, SUPERSAMPLE, axis=0), SUPERSAMPLE, axis=1)


def _granules(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Sparse bright blobs of about sigma_px: the peaks of a smooth noise field."""
    field = _smooth_noise(shape, sigma_px, rng)
    return np.clip(field - IMAGING.granule_threshold, 0.0, None)


def _transmission(
    u: np.ndarray, v: np.ndarray, kind: CellClass, rng: np.random.Generator
) -> np.ndarray:
    """Supersampled cell image relative to the background (background = 1)."""
    px = u.shape[0] / REFERENCE_SIZE  # supersampled px per reference px
    radius = _normal(rng, kind.radius_mean_sd, floor=SHAPES.min_cell_radius)
    cell_d = _outline_distance(u, v, radius, rng)
    cell = _soft_mask(cell_d, IMAGING.edge_softness)
    nucleus = cell * _soft_mask(_nucleus_distance(u, v, radius, kind, rng), IMAGING.edge_softness)
    chromatin = 1.0 + IMAGING.chromatin_amp * _coarse_noise(
        u.shape, IMAGING.chromatin_sigma * px, rng
    )
    granules = (
        _granules(u.shape, kind.granule_sigma * px, rng) * (cell - nucleus)
        if kind.granule_amp
        else 0.0
    )

    ring_sign = 1.0 if rng.random() < 0.5 else -1.0
    ring_width = _uniform(rng, IMAGING.ring_width)
    ring = np.exp(-0.5 * (cell_d / ring_width) ** 2)

    absorb = (
        _uniform(rng, IMAGING.cytoplasm_absorb) * cell
        + _uniform(rng, IMAGING.nucleus_absorb) * chromatin * nucleus
        - kind.granule_amp * granules
        - ring_sign * _uniform(rng, IMAGING.ring_amp) * ring
    )
    return 1.0 - absorb


def _illumination(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear illumination ramp across the patch, in a random direction."""
    angle = _uniform(rng, FULL_TURN)
    ramp = (math.cos(angle) * x + math.sin(angle) * y) / REFERENCE_SIZE
    return 1.0 + _uniform(rng, IMAGING.gradient) * ramp


def _downsample(image: np.ndarray, size: int) -> np.ndarray:
    """Box-filter the supersampled float image down to size x size."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))


def _shot_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise at a random exposure."""
    photons = _uniform(rng, IMAGING.photons)
    return rng.poisson(np.clip(image, 0.0, None) * photons) / photons


def _render_one(
    fine: tuple[np.ndarray, np.ndarray],
    coarse: tuple[np.ndarray, np.ndarray],
    kind: CellClass,
    rng: np.random.Generator,
) -> np.ndarray:
    """One uint8 patch of a cell of the given class; fine and coarse are _grid coordinates."""
    size = coarse[0].shape[0]
    dx, dy = (_uniform(rng, (-IMAGING.jitter, IMAGING.jitter)) for _ in range(2))
    u, v = _rotate(fine[0] - dx, fine[1] - dy, _uniform(rng, FULL_TURN))
    image = _uniform(rng, IMAGING.background) * _transmission(u, v, kind, rng)
    image = _downsample(image.astype(np.float32), size)
    # Defocus after downsampling: edges are already anti-aliased, and the FFT is 16x smaller.
    image = _gaussian_blur(image, _uniform(rng, IMAGING.blur_sigma) * size / REFERENCE_SIZE)
    image = _shot_noise(image * _illumination(*coarse, rng), rng)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def render_cells(cls: str, n: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Render n synthetic patches of class cls as a (n, size, size) uint8 array."""
    if cls not in CELL_CLASSES:
        raise DataError(f"unknown class {cls!r}; expected one of {', '.join(CLASSES)}")
    fine, coarse = _grid(size * SUPERSAMPLE), _grid(size)
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        out[i] = _render_one(fine, coarse, CELL_CLASSES[cls], rng)
    return out
