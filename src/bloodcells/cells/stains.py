"""The two detectors behind `find_cells`: stained smears (colour deconvolution) and brightfield."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import color, filters, measure, morphology, segmentation

H_FLOOR = 0.035
CELL_SHARE = 0.15
CELL_LOW = 0.08
EOSIN_LOW = 2.0
EOSIN_HIGH = 3.0
NECK = 0.5
MIN_NUCLEUS = 1800
SMOOTH = 2.0
LOBE_GAP = 1
GROW = 1.3
MIN_CONTRAST = 10.0
MIN_RING = 400
MIN_BRIGHTFIELD = 20
BRIGHTFIELD_SHARE = 0.2
BACKGROUND_SHARE = 0.25


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """The hematoxylin optical density of an RGB uint8 image (colour deconvolution)."""
    return color.rgb2hed(rgb)[..., 0].astype(np.float32)


def giemsa_labels(
    rgb: np.ndarray, min_area: int | None, hed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Label image of white cells (0 = none) and the nucleus mask, for a stained RGB field."""
    hed = color.rgb2hed(rgb).astype(np.float32) if hed is None else hed
    min_nucleus = MIN_NUCLEUS if min_area is None else int(min_area)
    nuclei = find_nuclei(hed[..., 0], min_nucleus)
    if not nuclei.any():
        return np.zeros(nuclei.shape, np.int32), nuclei
    markers = np.where(nuclei, measure.label(close_square(nuclei, 2 * LOBE_GAP + 1)), 0)
    near, nearest = ndi.distance_transform_edt(~nuclei, return_indices=True)
    owner = markers[nearest[0], nearest[1]]  # the nucleus each pixel is nearest to
    cell = cell_mask(rgb, hed, nuclei, near, owner)
    distance = ndi.distance_transform_edt(cell)
    labels = segmentation.watershed(-distance, markers, mask=cell)
    labels = merge_lobes(labels, distance)
    sizes = ndi.sum_labels(nuclei, labels, index=np.arange(labels.max() + 1))
    labels[near > GROW * np.sqrt(sizes)[labels]] = 0
    keep = sizes >= min_nucleus
    keep[0] = False
    return np.where(keep[labels], labels, 0), nuclei


def find_nuclei(h: np.ndarray, min_nucleus: int) -> np.ndarray:
    """Nucleus (and lobe) mask: Otsu on the hematoxylin channel, never below H_FLOOR."""
    nuclei = h > max(float(filters.threshold_otsu(h)), H_FLOOR)
    nuclei = morphology.remove_small_objects(nuclei, max_size=max(min_nucleus // 4, 1))
    return fill_holes(nuclei)


def cell_mask(
    rgb: np.ndarray, hed: np.ndarray, nuclei: np.ndarray, near: np.ndarray, owner: np.ndarray
) -> np.ndarray:
    """Nuclei and the cytoplasm around them: bluer or more eosin-stained than the red cells.

    Each nucleus is measured against its own surroundings (stain and light vary across a
    slide): the red cells and background in a ring just beyond the reach of its cytoplasm.
    """
    pixels = rgb.astype(np.float32)
    gray = ndi.gaussian_filter(pixels.mean(axis=2), SMOOTH)
    br = ndi.gaussian_filter(pixels[..., 2] - pixels[..., 0], SMOOTH)
    eosin = ndi.gaussian_filter(hed[..., 1], SMOOTH)
    reach = GROW * np.sqrt(np.bincount(owner[nuclei]).max())
    ring = (near > reach) & (near <= 2 * reach)
    levels = surroundings(owner[ring], gray[ring], br[ring], eosin[ring], int(owner.max()))
    fallback = surroundings(np.zeros(int((near > 2).sum()), np.int64), gray[near > 2],
                            br[near > 2], eosin[near > 2], 0)[0]  # fmt: skip
    levels[np.isnan(levels[:, 0])] = fallback
    ref, bg_cut, red = (levels[owner, k] for k in range(3))
    inside = ndi.median(br, markers_of(owner, nuclei), index=np.arange(owner.max() + 1))
    span = np.maximum(np.asarray(inside, np.float32)[owner] - ref, 1.0)
    score = np.where(nuclei, 1.0, (br - ref) / span)
    cell = filters.apply_hysteresis_threshold(score, CELL_LOW, CELL_SHARE)
    has_red = red > 0
    cell |= filters.apply_hysteresis_threshold(
        np.where(nuclei, EOSIN_HIGH + 1, np.where(has_red, eosin / np.where(has_red, red, 1), 0)),
        EOSIN_LOW,
        EOSIN_HIGH,
    )
    cell &= gray < bg_cut
    cell = ndi.maximum_filter(ndi.minimum_filter(cell, size=5), size=5) | nuclei
    return fill_holes(cell)


def markers_of(owner: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    return np.where(nuclei, owner, -1)


def surroundings(
    ids: np.ndarray, gray: np.ndarray, br: np.ndarray, eosin: np.ndarray, n: int
) -> np.ndarray:
    """Per nucleus id 0..n: the red cells' blue-red level, the background cut, their eosin.

    Red cells are the darker side of an Otsu split of the ring; where the ring has no two
    levels (no red cells, or only red cells) the blue-red level is the ring's median, the
    background cut lets everything darker than the ring through and eosin is not used (0).
    NaN for an id without enough ring pixels.
    """
    levels = np.full((n + 1, 3), np.nan, np.float32)
    order = np.argsort(ids, kind="stable")
    starts = np.searchsorted(ids[order], np.arange(n + 2))
    for i in range(n + 1):
        part = order[starts[i] : starts[i + 1]]
        if part.size < MIN_RING:
            continue
        g = gray[part]
        dark = g < filters.threshold_otsu(g)
        if min(dark.sum(), (~dark).sum()) >= MIN_RING // 4 and (
            np.median(g[~dark]) - np.median(g[dark]) >= MIN_CONTRAST
        ):
            background = float(np.median(g[~dark]))
            cut = background - BACKGROUND_SHARE * (background - float(np.median(g[dark])))
            levels[i] = (np.median(br[part][dark]), cut, np.median(eosin[part][dark]))
        else:
            levels[i] = (np.median(br[part]), np.median(g) + MIN_CONTRAST, 0.0)
    return levels


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
