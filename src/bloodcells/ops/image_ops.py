"""Batched image operations with per-image parameters, on any device: the augmentations' parts.

Each takes a batch N×C×H×W of floats in [0, 1] and one parameter per image (a tensor of N), and
is arithmetic on the whole batch: `grid_sample` for the dihedral transforms, zoom and shift, a
band-matrix product for blur, a 3×3 matrix per image for colour and stain. `augment.Augmenter`
draws the parameters; `shifts` applies them at fixed levels.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from bloodcells.errors import BloodcellsError

# The Ruifrok-Johnston (2001) stain vectors: optical density of hematoxylin, eosin and DAB in
# R, G, B (rows); HED_FROM_RGB turns optical density into stain amounts.
RGB_FROM_HED = torch.tensor(
    [[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]], dtype=torch.float64
)
RGB_FROM_HED = RGB_FROM_HED / RGB_FROM_HED.norm(dim=1, keepdim=True)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
BAND_FLOATS = 2**24  # at most this many floats of blur matrices at a time (64 MB)
MIN_OD_INPUT = 1 / 255  # darker pixels count as this dark: optical density at most ln(255)
# Luma weights (ITU-R 601, PIL's "L") and the YIQ basis the hue rotation turns in.
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
YIQ_FROM_RGB = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
RGB_FROM_YIQ = torch.linalg.inv(YIQ_FROM_RGB)


def per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


# -- the ops, on batches with per-image parameters --------------------------------------------


def dihedral(x: torch.Tensor, element: int | torch.Tensor) -> torch.Tensor:
    """Each image turned by its element of the dihedral group D4 (0 to 7; 0 is the identity).

    Bit 1 mirrors left-right, bit 2 mirrors top-bottom, bit 4 transposes (applied in that
    order): the 8 combinations are the 4 rotations by 90° and the 4 mirror images. `element` is
    one int for the whole batch or one per image (then it is one exact gather of pixels).
    Images must be square.
    """
    if x.shape[-1] != x.shape[-2]:
        raise BloodcellsError(f"flips and rotations need square images, not {tuple(x.shape)}")
    if isinstance(element, int):
        if not 0 <= element < 8:
            raise BloodcellsError(f"a dihedral element is 0 to 7, not {element}")
        x = x.flip(-1) if element & 1 else x
        x = x.flip(-2) if element & 2 else x
        return x.transpose(-1, -2) if element & 4 else x
    n, c, h, w = x.shape
    source = _dihedral_pixels(h, x.device)[element.to(x.device)]  # N×(H·W): where each comes from
    return x.reshape(n, c, h * w).gather(2, source[:, None].expand(n, c, h * w)).view(n, c, h, w)


def _dihedral_pixels(size: int, device: torch.device) -> torch.Tensor:
    """8×(size²): for each element, the source pixel of every output pixel."""
    key = (size, str(device))
    if key not in _DIHEDRAL_PIXELS:
        index = torch.arange(size * size, device=device).view(1, 1, size, size)
        _DIHEDRAL_PIXELS[key] = torch.cat([dihedral(index, e).reshape(1, -1) for e in range(8)])
    return _DIHEDRAL_PIXELS[key]


_DIHEDRAL_PIXELS: dict[tuple[int, str], torch.Tensor] = {}
# The same 8 elements as maps of sampling coordinates (x, y) in [-1, 1], for zoom_shift:
# output point p shows the input at M·p, M = mirror-x^bit1 · mirror-y^bit2 · swap^bit4.
_MIRROR_X, _MIRROR_Y, _SWAP = (
    torch.tensor(m, dtype=torch.float32)
    for m in ([[-1, 0], [0, 1]], [[1, 0], [0, -1]], [[0, 1], [1, 0]])
)
DIHEDRAL_MATRICES = torch.stack(
    [
        torch.linalg.multi_dot(
            [
                _MIRROR_X if e & 1 else torch.eye(2),
                _MIRROR_Y if e & 2 else torch.eye(2),
                _SWAP if e & 4 else torch.eye(2),
            ]
        )
        for e in range(8)
    ]
)


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 dihedral views of a batch, the identity first (what TTA averages over)."""
    return [dihedral(x, element) for element in range(8)]


def zoom_shift(
    x: torch.Tensor,
    zoom: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    element: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each image zoomed about its centre by `zoom` (N; > 1 enlarges) and moved by `offset`
    (N×2, fractions of the side, x then y), bilinear, the border pixels filling the rest;
    with `element` (N), first turned by that dihedral element (see dihedral), in the same pass.
    """
    n, _, h, w = x.shape
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1  # pixel centres
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).expand(n, h, w, 2)
    if element is not None:
        matrices = DIHEDRAL_MATRICES.to(x.device, x.dtype)[element.to(x.device)]
        grid = torch.einsum("nhwj,nij->nhwi", grid, matrices)
    if zoom is not None:
        grid = grid / zoom.to(x.dtype).view(-1, 1, 1, 1)
    if offset is not None:
        grid = grid - 2 * offset.to(x.dtype).view(-1, 1, 1, 2)  # the side spans 2 in [-1, 1]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussians, one row per σ (N), 2·radius+1 taps; σ near 0 is the identity."""
    taps = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    s = sigma.clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (taps / s) ** 2)
    return kernel / kernel.sum(1, keepdim=True)


def blur_radius(sigma: float) -> int:
    """Taps each side of the centre a Gaussian of σ up to `sigma` needs: 3σ, at least 1."""
    return max(1, math.ceil(3 * sigma))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own σ (N, in pixels), edges padded by repeating
    the border. Separable: two batched matrix products with a banded matrix per image, which
    beats a grouped convolution on small images. `radius` (taps each side) defaults to
    blur_radius(max σ); passing it spares a GPU a sync."""
    h, w = x.shape[-2:]
    radius = blur_radius(float(sigma.max())) if radius is None else radius
    kernel = gaussian_kernels(sigma.to(x.dtype), radius)  # N×K
    chunk = max(1, BAND_FLOATS // max(h, w) ** 2)  # images whose band matrices fit at once
    parts = []
    for start in range(0, len(x), chunk):  # one chunk for small images (32×32: 16,384)
        k = kernel[start : start + chunk]
        rows = _band(k, h, radius)  # N×H×H
        cols = rows if w == h else _band(k, w, radius)
        parts.append(rows[:, None] @ x[start : start + chunk] @ cols[:, None].transpose(-1, -2))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _band(kernel: torch.Tensor, size: int, radius: int) -> torch.Tensor:
    """N×size×size: row i sums kernel tap t onto pixel clamp(i + t - radius) (border repeated)."""
    n, taps = kernel.shape
    offsets = torch.arange(-radius, radius + 1, device=kernel.device)
    index = (torch.arange(size, device=kernel.device)[:, None] + offsets).clamp(0, size - 1)
    band = torch.zeros(n, size, size, device=kernel.device, dtype=kernel.dtype)
    return band.scatter_add_(2, index.expand(n, size, taps), kernel[:, None].expand(n, size, taps))


def adjust_gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """x ** gamma per image (gamma N)."""
    return x.clamp_min(0).pow(per_image(gamma.to(x.dtype)))


def scale_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each image's distance from its own mean (over C×H×W) times `factor` (N)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * per_image(factor.to(x.dtype))


def _colour_matrix(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Each RGB pixel of image i times the 3×3 `matrix[i]`."""
    if x.shape[1] != 3:
        raise BloodcellsError(f"colour changes need RGB images, not {x.shape[1]} channel(s)")
    return torch.einsum("nij,njhw->nihw", matrix.to(x.dtype), x)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image's hue rotated by `turns` (N; 1 is a full turn) about the luma axis in YIQ:
    brightness (Y) and grays stay as they are."""
    angle = 2 * math.pi * turns.to(torch.float64)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(turns), 3, 3, dtype=torch.float64, device=turns.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    rgb_from_yiq, yiq_from_rgb = (m.to(turns.device) for m in (RGB_FROM_YIQ, YIQ_FROM_RGB))
    return _colour_matrix(x, rgb_from_yiq @ rotation @ yiq_from_rgb)


def scale_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance from its own gray (luma) times `factor` (N)."""
    f = factor.to(torch.float64).view(-1, 1, 1)
    luma = LUMA.to(factor.device).view(1, 1, 3).expand(1, 3, 3)
    eye = torch.eye(3, dtype=torch.float64, device=factor.device)
    return _colour_matrix(x, f * eye + (1 - f) * luma)


def stain_jitter(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Each image's hematoxylin, eosin and DAB amounts (Ruifrok-Johnston colour deconvolution
    of the optical density) times `scale` plus `offset` (both N×3), then back to RGB."""
    if x.shape[1] != 3:
        raise BloodcellsError(f"stain changes need RGB images, not {x.shape[1]} channel(s)")
    hed_from_rgb, rgb_from_hed = (m.to(x.device) for m in (HED_FROM_RGB, RGB_FROM_HED))
    # Optical density is linear in the stain amounts: amounts·diag(scale)+offset is one matrix
    # and one offset per image in OD space (OD as a row vector, OD' = OD·M + b).
    matrix = hed_from_rgb @ torch.diag_embed(scale.to(torch.float64)) @ rgb_from_hed
    shift = offset.to(torch.float64) @ rgb_from_hed  # N×3
    density = -x.clamp_min(MIN_OD_INPUT).log()
    density = torch.einsum("nji,njhw->nihw", matrix.to(x.dtype), density)
    density = density + shift.to(x.dtype).view(-1, 3, 1, 1)
    return torch.exp(-density)
