"""The two detectors behind `find_cells`: stained smears (colour deconvolution) and brightfield."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import color, filters, measure, morphology, segmentation

# Measured on pbc-wbc (4,000 CellaVision fields, 360×363; benchmarks/bench_cells.py):
# hematoxylin OD: the Otsu threshold of fields with a nucleus is >= 0.026, a nucleus' 90th
# percentile >= 0.060, red cells 0.010 ± 0.005: the floor keeps red cells out of a field
# without a white cell, where Otsu would split red cells from the background.
H_FLOOR = 0.035
# The smallest labelled cell's nucleus is 2,116 px² (1% are under 4,000); platelet clumps
# reach 1,517 px². Objects under a quarter of this never seed a cell (platelets, debris).
MIN_NUCLEUS = 1800
# A field under ~350×350 px is taken for a crop framed around its cell, whatever its scale:
# there a nucleus only needs 1.5% of the image (pbc-wbc fields shrunk to 120 px: the labelled
# nuclei keep >= 1.6%, platelet clumps <= 1.2%).
SMALL_FIELD_SHARE = 0.015
# Cytoplasm: blue minus red (smoothed) above the red cells' level by this share of the
# nucleus' height over it (hysteresis: seeds at CELL_SHARE, grown down to CELL_LOW). The
# red cells' 99th percentile is ~0.11 of that height, a neutrophil's cytoplasm median ~0.22.
CELL_SHARE = 0.15
CELL_LOW = 0.08
# Eosinophil granules are not bluer than red cells but hold 3-4× their eosin.
EOSIN_HIGH = 3.0
EOSIN_LOW = 2.0
# Nothing brighter than the background minus this share of its gap to the red cells.
BACKGROUND_SHARE = 0.25
SMOOTH = 2.0
# Nucleus parts closer than this (px) seed one region; further lobes are joined by the neck
# test: on pbc-wbc, touching cells' boundaries sit at <= 0.42 of the smaller cell's peak
# distance, a lobed cell's internal boundaries mostly at 0.55-1.
MARKER_GAP = 2
NECK = 0.5
# No cytoplasm further than GROW × sqrt(nucleus area) from its nucleus: pbc-wbc's labelled
# cells reach at most 1.29 (neutrophils), 1.09 (eosinophils), 0.93 (monocytes).
GROW = 1.3
MIN_CONTRAST = 10.0  # gray levels: less is a flat field
MIN_BRIGHTFIELD = 20
BRIGHTFIELD_SHARE = 0.2


def giemsa_labels(rgb: np.ndarray, min_area: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Label image of white cells (0 = none) and the nucleus mask, for a stained RGB field."""
    hed = color.rgb2hed(rgb).astype(np.float32)
    if min_area is None:
        min_nucleus = max(
            1, min(MIN_NUCLEUS, round(SMALL_FIELD_SHARE * rgb.shape[0] * rgb.shape[1]))
        )
    else:
        min_nucleus = int(min_area)
    nuclei = find_nuclei(hed[..., 0], min_nucleus)
    if not nuclei.any():
        return np.zeros(nuclei.shape, np.int32), nuclei
    markers = np.where(nuclei, measure.label(close_square(nuclei, MARKER_GAP + 1)), 0)
    near = ndi.distance_transform_edt(~nuclei)
    # the red cells and background are measured where no cytoplasm reaches, if there is room
    rest = near > GROW * np.sqrt(np.bincount(markers.ravel())[1:].max())
    if rest.sum() < 0.05 * rest.size:
        rest = near > 2
    cell = cell_mask(rgb, hed, nuclei, rest) if rest.sum() >= 0.01 * rest.size else nuclei
    distance = ndi.distance_transform_edt(cell)
    labels = segmentation.watershed(-distance, markers, mask=cell)
    labels = merge_lobes(labels, distance)
    sizes = ndi.sum_labels(nuclei, labels, index=np.arange(labels.max() + 1))
    labels[near > GROW * np.sqrt(sizes)[labels]] = 0
    # a cell cut by the edge keeps less of its nucleus: half the area is enough there
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = sizes >= min_nucleus
    keep[edge] = sizes[edge] >= min_nucleus / 2
    keep[0] = False
    return np.where(keep[labels], labels, 0), nuclei


def find_nuclei(h: np.ndarray, min_nucleus: int) -> np.ndarray:
    """Nucleus (and lobe) mask: Otsu on the hematoxylin channel, never below H_FLOOR."""
    nuclei = h > max(float(filters.threshold_otsu(h)), H_FLOOR)
    nuclei = morphology.remove_small_objects(nuclei, max_size=max(min_nucleus // 4, 1))
    return fill_holes(nuclei)


def cell_mask(rgb: np.ndarray, hed: np.ndarray, nuclei: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Nuclei and the cytoplasm around them: bluer or more eosin-stained than the red cells.

    `rest` is the field away from the nuclei: the darker side of its Otsu split is the red
    cells, the brighter the background. In a field without both (no red cells, or nothing
    but red cells) the cytoplasm is measured against the field's median and eosin is not used.
    """
    pixels = rgb.astype(np.float32)
    gray = ndi.gaussian_filter(pixels.mean(axis=2), SMOOTH)
    br = ndi.gaussian_filter(pixels[..., 2] - pixels[..., 0], SMOOTH)
    few = 0.01 * nuclei.size
    dark = rest & (gray < filters.threshold_otsu(gray[rest]))
    bright = rest & ~dark
    red_cells = (
        dark.sum() >= few
        and bright.sum() >= few
        and np.median(gray[bright]) - np.median(gray[dark]) >= MIN_CONTRAST
    )
    reference = float(np.median(br[dark] if red_cells else br[rest]))
    inside = float(np.median(br[nuclei]))
    span = max(inside - reference, 1.0)
    cell = filters.apply_hysteresis_threshold(
        np.where(nuclei, inside, br), reference + CELL_LOW * span, reference + CELL_SHARE * span
    )
    if red_cells:
        eosin = ndi.gaussian_filter(hed[..., 1], SMOOTH)
        red = float(np.median(eosin[dark]))
        cell |= filters.apply_hysteresis_threshold(
            np.where(nuclei, 1.0, eosin), red * EOSIN_LOW, red * EOSIN_HIGH
        )
        background = float(np.median(gray[bright]))
        cell &= gray < background - BACKGROUND_SHARE * (background - float(np.median(gray[dark])))
    cell = ndi.maximum_filter(ndi.minimum_filter(cell, size=5), size=5) | nuclei
    return fill_holes(cell)


def merge_lobes(labels: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Join the watershed regions of one cell's lobes.

    Two neighbours are one cell when the boundary between them is no neck (the distance
    transform on it stays near the smaller region's peak).
    """
    n = int(labels.max())
    if n < 2:
        return labels
    keys, saddles = [], []
    for a, b, da, db in (
        (labels[:, :-1], labels[:, 1:], distance[:, :-1], distance[:, 1:]),
        (labels[:-1, :], labels[1:, :], distance[:-1, :], distance[1:, :]),
    ):
        edge = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[edge], b[edge]).astype(np.int64)
        keys.append(lo * (n + 1) + np.maximum(a[edge], b[edge]))
        saddles.append(np.minimum(da[edge], db[edge]))
    key = np.concatenate(keys)
    if key.size == 0:
        return labels
    pairs, where = np.unique(key, return_inverse=True)
    saddle = np.zeros(pairs.size, np.float32)
    np.maximum.at(saddle, where, np.concatenate(saddles))
    index = np.arange(n + 1)
    peak = ndi.maximum(distance, labels, index=index)
    parent = index.copy()

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[rb] = ra

    ends = [divmod(int(k), n + 1) for k in pairs]
    for (a, b), s in zip(ends, saddle, strict=True):
        if s >= NECK * min(peak[a], peak[b]):
            join(a, b)
    return np.array([root(i) for i in index])[labels]


def brightfield_labels(gray: np.ndarray, min_area: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Label image of cells against a flat background (found from contrast) and their cores."""
    smooth = ndi.gaussian_filter(gray.astype(np.float32), 1.0)
    border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    contrast = np.abs(smooth - np.median(border))
    empty = np.zeros(gray.shape, np.int32)
    if contrast.max() < MIN_CONTRAST:
        return empty, empty.astype(bool)
    mask = contrast > filters.threshold_otsu(contrast)
    mask = fill_holes(close_square(mask, 5))
    labels = measure.label(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    # debris and halo fragments are small next to the cell(s) of a tile
    keep = (sizes >= (MIN_BRIGHTFIELD if min_area is None else min_area)) & (
        sizes >= BRIGHTFIELD_SHARE * sizes.max()
    )
    labels = np.where(keep[labels], labels, 0)
    inside = smooth[labels > 0]
    if inside.size == 0 or np.ptp(inside) < MIN_CONTRAST:
        return labels, labels > 0
    return labels, (labels > 0) & (smooth < filters.threshold_otsu(inside))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every hole filled (faster than ndimage's for large masks)."""
    holes = measure.label(~mask, connectivity=1)
    edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    return mask | ~np.isin(holes, edge)


def close_square(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary closing with a size×size square (separable, so fast)."""
    return ndi.minimum_filter(ndi.maximum_filter(mask, size=size), size=size)
