"""How well and how fast `find_cells` finds the white cells in whole smear fields.

Three figures on ../shared/data/pbc-wbc/all (4,000 CellaVision fields 360×363, one labelled
white cell near the centre of each):

- localisation: per class, the share of fields where the found cell nearest the field's
  centre contains the centre (target ≥ 0.98 per class);
- mosaics: pbc-wbc cells pasted (their mask, feathered) onto canvases tiled from cell-free
  corners of other fields (red cells, platelets, background) and blank patches, every field
  white-balanced to one background colour first (one slide, one light): isolated
  cells, touching pairs, cells cut by the canvas edge. The truth is each pasted cell's box as
  found in its own field (clipped at the canvas edge); recall and precision at IoU ≥ 0.5
  (targets 0.97 and 0.95), and whether border-cut cells are flagged `touches_border`;
- speed: fields/s over the 4,000 fields, decode (`load_field`) included, in one thread and
  in a pool of one thread per core.

    python benchmarks/bench_cells.py [--data DIR] [--mosaics 20] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torchvision.ops import box_iou

from bloodcells.cells import Cell, estimate_scale, find_cells, load_field
from bloodcells.cells.find import cell_labels

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc-wbc" / "all"
CANVAS = 1024
TILE = 128
IOU = 0.5
# pbc-wbc's median background colour: every canvas is one slide under one light
BACKGROUND = np.array([253.0, 228.0, 201.0])


def fields(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.jpg"))


def central(cells: list[Cell], shape: tuple[int, ...]) -> Cell | None:
    """The found cell nearest the field's centre."""
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(cells, key=lambda c: (c.cx - cx) ** 2 + (c.cy - cy) ** 2, default=None)


def contains(cell: Cell | None, x: float, y: float) -> bool:
    return cell is not None and cell.x0 <= x < cell.x1 and cell.y0 <= y < cell.y1


def one_field(path: Path) -> tuple[str, bool, list[Cell]]:
    image = load_field(path)
    cells = find_cells(image)
    hit = contains(central(cells, image.shape), image.shape[1] / 2, image.shape[0] / 2)
    return path.parent.name, hit, cells


def localisation(files: list[Path], workers: int) -> tuple[dict, float, list[Cell]]:
    """Per-class hit counts, seconds, and every field's central cell."""
    start = time.perf_counter()
    if workers == 1:
        results = [one_field(f) for f in files]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one_field, files, chunksize=16))
    seconds = time.perf_counter() - start
    hits: Counter = Counter()
    totals: Counter = Counter()
    misses = []
    centres = []
    for path, (cls, hit, cells) in zip(files, results, strict=True):
        totals[cls] += 1
        hits[cls] += hit
        if not hit:
            misses.append(path.name)
        c = central(cells, (360, 363))
        if c is not None:
            centres.append(c)
    table = {cls: (hits[cls], totals[cls]) for cls in sorted(totals)}
    return {"per_class": table, "misses": misses}, seconds, centres


@dataclass
class Piece:
    """A cell cut from its field: pixels, feathered alpha, its box and mask in piece pixels."""

    rgb: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inside the piece


def cut_piece(image: np.ndarray, labels: np.ndarray, index: int, cell: Cell) -> Piece | None:
    pad = 6
    y0, y1 = cell.y0 - pad, cell.y1 + pad
    x0, x1 = cell.x0 - pad, cell.x1 + pad
    if y0 < 0 or x0 < 0 or y1 > image.shape[0] or x1 > image.shape[1]:
        return None
    mask = labels[y0:y1, x0:x1] == index
    # a ring of the cell's own surroundings, feathered, so the paste has no hard seam
    alpha = ndi.gaussian_filter(ndi.binary_dilation(mask, iterations=3).astype(np.float32), 1.2)
    box = (pad, pad, pad + cell.width, pad + cell.height)
    return Piece(image[y0:y1, x0:x1].astype(np.float32), alpha[..., None], mask, box)


def cell_free_tile(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """A TILE×TILE window of the field that no found cell comes within 12 px of, or None."""
    near = ndi.binary_dilation(labels > 0, iterations=12)
    for _ in range(6):
        y = int(rng.integers(0, image.shape[0] - TILE + 1))
        x = int(rng.integers(0, image.shape[1] - TILE + 1))
        if not near[y : y + TILE, x : x + TILE].any():
            return image[y : y + TILE, x : x + TILE]
    return None


def white_balanced(image: np.ndarray) -> np.ndarray:
    """The field with its background (the brighter half of its pixels) at BACKGROUND."""
    gray = image.mean(axis=2)
    background = np.median(image[gray >= np.median(gray)], axis=0)
    return np.clip(image * (BACKGROUND / np.maximum(background, 1.0)), 0, 255).astype(np.uint8)


def gather(files: list[Path], n_pieces: int, n_tiles: int, rng: np.random.Generator):
    """Cells cut from fields and cell-free tiles, all white-balanced to one background."""
    pieces: list[Piece] = []
    tiles: list[np.ndarray] = []
    for i in rng.permutation(len(files)):
        if len(pieces) >= n_pieces and len(tiles) >= n_tiles:
            break
        image = load_field(files[i])
        labels, cells = cell_labels(image)
        image = white_balanced(image)
        c = central(cells, image.shape)
        if len(pieces) < n_pieces and contains(c, image.shape[1] / 2, image.shape[0] / 2):
            piece = cut_piece(image, labels, cells.index(c) + 1, c)
            if piece is not None and not c.touches_border:
                pieces.append(piece)
        if len(tiles) < n_tiles:
            tile = cell_free_tile(image, labels, rng)
            if tile is not None:
                tiles.append(tile)
    return pieces, tiles


def paste(canvas: np.ndarray, piece: Piece, x: int, y: int) -> tuple[int, int, int, int]:
    """Paste the piece with its top-left at (x, y), clipped; return its truth box, clipped."""
    h, w = piece.mask.shape
    cy0, cx0 = max(0, y), max(0, x)
    cy1, cx1 = min(canvas.shape[0], y + h), min(canvas.shape[1], x + w)
    sub = np.s_[cy0 - y : cy1 - y, cx0 - x : cx1 - x]
    a = piece.alpha[sub]
    canvas[cy0:cy1, cx0:cx1] = canvas[cy0:cy1, cx0:cx1] * (1 - a) + piece.rgb[sub] * a
    bx0, by0, bx1, by1 = piece.box
    return (
        max(0, x + bx0),
        max(0, y + by0),
        min(canvas.shape[1], x + bx1),
        min(canvas.shape[0], y + by1),
    )


def touching_offset(a: Piece, b: Piece, angle: float) -> tuple[int, int]:
    """Where b's top-left goes, relative to a's, so that the two masks just touch."""
    ha, wa = a.mask.shape
    hb, wb = b.mask.shape
    reach = max(ha, wa) + max(hb, wb)
    size = 3 * reach
    big = np.zeros((size, size), bool)
    oy, ox = size // 2 - ha // 2, size // 2 - wa // 2
    big[oy : oy + ha, ox : ox + wa] = a.mask

    def place(r: int) -> tuple[int, int]:
        return (
            round(size / 2 + r * np.sin(angle) - hb / 2),
            round(size / 2 + r * np.cos(angle) - wb / 2),
        )

    for r in range(reach, 0, -1):
        dy, dx = place(r)
        if big[dy : dy + hb, dx : dx + wb][b.mask].any():
            dy, dx = place(r + 2)  # a step back: touching, not overlapping
            return dy - oy, dx - ox
    return 0, 0


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (torchvision's box_iou)."""
    return float(
        box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    )


def mosaic(pieces: list[Piece], tiles: list[np.ndarray], rng: np.random.Generator):
    """One canvas and its truth: [(box, kind)], kind in isolated / touching / border."""
    canvas = np.empty((CANVAS, CANVAS, 3), np.float32)
    blank = np.median(np.concatenate([t[0] for t in tiles]), axis=0)
    for ty in range(0, CANVAS, TILE):
        for tx in range(0, CANVAS, TILE):
            if rng.random() < 0.25:  # blank slide
                canvas[ty : ty + TILE, tx : tx + TILE] = blank + rng.normal(0, 1.5, (TILE, TILE, 3))
            else:
                canvas[ty : ty + TILE, tx : tx + TILE] = tiles[rng.integers(len(tiles))]
    truth: list[tuple[tuple[int, int, int, int], str]] = []
    taken: list[tuple[int, int, int, int]] = []

    def free(box, margin=24):
        return all(
            box[0] - margin >= t[2] or t[0] - margin >= box[2] or
            box[1] - margin >= t[3] or t[1] - margin >= box[3]
            for t in taken
        )  # fmt: skip

    def pick() -> Piece:
        return pieces[int(rng.integers(len(pieces)))]

    # two touching pairs, three cells cut by the edge, then as many isolated cells as fit
    plan = ["touching"] * 2 + ["border"] * 3 + ["isolated"] * 10
    for kind in plan:
        for _ in range(50):
            a = pick()
            h, w = a.mask.shape
            if kind == "border":
                bw, bh = a.box[2] - a.box[0], a.box[3] - a.box[1]
                cut = rng.uniform(0.25, 0.5)  # share of the cell left outside
                along = int(rng.integers(0, CANVAS - max(h, w)))
                x, y = [
                    (-round(a.box[0] + cut * bw), along),
                    (CANVAS + round(cut * bw) - a.box[2], along),
                    (along, -round(a.box[1] + cut * bh)),
                    (along, CANVAS + round(cut * bh) - a.box[3]),
                ][int(rng.integers(4))]
                box = (x + a.box[0], y + a.box[1], x + a.box[2], y + a.box[3])
                if free(box):
                    truth.append((paste(canvas, a, x, y), kind))
                    taken.append(box)
                    break
                continue
            x = int(rng.integers(0, CANVAS - w))
            y = int(rng.integers(0, CANVAS - h))
            box = (x + a.box[0], y + a.box[1], x + a.box[2], y + a.box[3])
            if kind == "isolated":
                if free(box):
                    truth.append((paste(canvas, a, x, y), kind))
                    taken.append(box)
                    break
                continue
            b = pick()
            dy, dx = touching_offset(a, b, rng.uniform(0, 2 * np.pi))
            hb, wb = b.mask.shape
            xb, yb = x + dx, y + dy
            if min(xb, yb) < 0 or xb + wb > CANVAS or yb + hb > CANVAS:
                continue
            box_b = (xb + b.box[0], yb + b.box[1], xb + b.box[2], yb + b.box[3])
            if free(box) and free(box_b):
                truth.append((paste(canvas, a, x, y), kind))
                truth.append((paste(canvas, b, xb, yb), kind))
                taken.extend([box, box_b])
                break
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), truth


def match(truth, found: list[Cell]) -> tuple[list[bool], int, list[tuple[Cell, str]]]:
    """Greedy one-to-one matching at IoU ≥ 0.5: truth hits, matched detections, pairs."""
    boxes = [(c.x0, c.y0, c.x1, c.y1) for c in found]
    pairs = sorted(
        ((iou(t, b), i, j) for i, (t, _) in enumerate(truth) for j, b in enumerate(boxes)),
        reverse=True,
    )
    hit_t: set[int] = set()
    hit_f: set[int] = set()
    matched = []
    for score, i, j in pairs:
        if score < IOU:
            break
        if i in hit_t or j in hit_f:
            continue
        hit_t.add(i)
        hit_f.add(j)
        matched.append((found[j], truth[i][1]))
    return [i in hit_t for i in range(len(truth))], len(hit_f), matched


def mosaics(files: list[Path], n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pieces, tiles = gather(files, 120, 80, rng)
    kinds: Counter = Counter()
    kind_hits: Counter = Counter()
    n_found = n_matched = 0
    border_flagged = border_matched = 0
    for _ in range(n):
        canvas, truth = mosaic(pieces, tiles, rng)
        found = find_cells(canvas)
        hits, matched, pairs = match(truth, found)
        n_found += len(found)
        n_matched += matched
        for (_, kind), hit in zip(truth, hits, strict=True):
            kinds[kind] += 1
            kind_hits[kind] += hit
        for cell, kind in pairs:
            if kind == "border":
                border_matched += 1
                border_flagged += cell.touches_border
    total = sum(kinds.values())
    return {
        "mosaics": n,
        "truth": total,
        "found": n_found,
        "recall": sum(kind_hits.values()) / total,
        "precision": n_matched / max(n_found, 1),
        "per_kind": {k: (kind_hits[k], kinds[k]) for k in sorted(kinds)},
        "border_flagged": (border_flagged, border_matched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--mosaics", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=1, help="Use every n-th field (quick runs).")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder (see ../shared/data/README.md)")
    files = fields(args.data)[:: args.every]
    workers = os.cpu_count() or 1
    for f in files[:100]:
        load_field(f)  # warm the file cache
    loc, seconds_1, centres = localisation(files, 1)
    _, seconds_n, _ = localisation(files, workers)
    mos = mosaics(files, args.mosaics, args.seed)
    load = os.getloadavg()[0]
    result = {
        "fields": len(files),
        "data": str(args.data),
        "localisation": loc["per_class"],
        "misses": loc["misses"],
        "fields_per_s_1_thread": len(files) / seconds_1,
        f"fields_per_s_{workers}_threads": len(files) / seconds_n,
        "median_cell_diameter_px": estimate_scale(centres),
        "mosaic": mos,
        "load_average": load,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(files)} fields in {args.data}, {workers} CPUs, load average {load:.1f}")
    print(f"{'row':52s} {'value':>10s}  detail")
    print("-" * 90)
    for cls, (hit, total) in loc["per_class"].items():
        print(f"{'localisation ' + cls:52s} {hit / total:10.4f}  {hit}/{total} (target 0.98)")
    print(f"{'mosaic recall (IoU >= 0.5)':52s} {mos['recall']:10.4f}  target 0.97")
    print(f"{'mosaic precision (IoU >= 0.5)':52s} {mos['precision']:10.4f}  target 0.95")
    for kind, (hit, total) in mos["per_kind"].items():
        print(f"{'  recall, ' + kind + ' cells':52s} {hit / total:10.4f}  {hit}/{total}")
    flagged, matched = mos["border_flagged"]
    print(f"{'  border cells flagged touches_border':52s} {flagged / max(matched, 1):10.4f}  "
          f"{flagged}/{matched}")  # fmt: skip
    print(f"{'  mosaics, cells found':52s} {mos['found']:10d}  "
          f"{mos['mosaics']} canvases {CANVAS}x{CANVAS}, {mos['truth']} pasted")  # fmt: skip
    print(f"{'fields/s, decode included, 1 thread':52s} {len(files) / seconds_1:10.1f}  target 20")
    print(f"{f'fields/s, decode included, {workers} threads':52s} {len(files) / seconds_n:10.1f}")
    print(f"{'median central cell diameter (estimate_scale), px':52s} "
          f"{result['median_cell_diameter_px']:10.1f}")  # fmt: skip
    if loc["misses"]:
        print("localisation misses:", " ".join(loc["misses"][:20]))


if __name__ == "__main__":
    main()
