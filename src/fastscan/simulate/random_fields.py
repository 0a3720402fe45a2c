"""Resolution-independent random fields: hashed lattice value noise.

The specimens' textures (brightness along a tubule, cytoplasm, chromatin, cell density) are
smooth random fields defined in µm. A hash of the lattice coordinates instead of a stored random
array lets any window of an unbounded field be evaluated at any pixel size, so a slide rendered
block by block is seamless. Kept apart from the specimens: it is generic machinery, with no
microscopy in it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

_MIX_Y = np.uint64(0xD1B54A32D192ED03)
_MIX_X = np.uint64(0xAEF17502108EF2D9)
_SPLITMIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_2 = np.uint64(0x94D049BB133111EB)
# Cubic B-spline interpolation of i.i.d. unit-variance lattice values: the squared weights of
# one axis sum to 151/315 on average, so the 2-D field has a standard deviation of 151/315.
_NOISE_GAIN = 315.0 / 151.0


def _subkey(key: int, field: int) -> int:
    return (key ^ (0x9E3779B97F4A7C15 * (field + 1))) & 0xFFFFFFFFFFFFFFFF


def _lattice_values(key: int, iy: NDArray[np.int64], ix: NDArray[np.int64]) -> NDArray[np.float32]:
    """Unit-variance uniform values at integer lattice points, a pure function of the key."""
    # A hash instead of a stored random array: any window of an unbounded field can be evaluated
    # at any pixel size, so blockwise rendering of slides is seamless.
    h = (np.asarray(iy, np.int64).view(np.uint64) * _MIX_Y) ^ (np.asarray(ix, np.int64).view(np.uint64) * _MIX_X)
    h = h ^ np.uint64(key)
    h = h ^ (h >> np.uint64(30))
    h = h * _SPLITMIX_1
    h = h ^ (h >> np.uint64(27))
    h = h * _SPLITMIX_2
    h = h ^ (h >> np.uint64(31))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return ((u * 2.0 - 1.0) * math.sqrt(3.0)).astype(np.float32)


def _bspline_weights(f: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    f2 = f * f
    f3 = f2 * f
    return (
        (1.0 - f) ** 3 / 6.0,
        (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0,
        (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0,
        f3 / 6.0,
    )


def _interp_matrix(t: NDArray[np.float64], *, cubic: bool) -> tuple[NDArray[np.float32], int]:
    """Dense interpolation weights from lattice nodes to fractional positions ``t``.

    Returns ``(W, start)``: ``W[i, k]`` weights node ``start + k`` for output ``i``.
    """
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    if cubic:
        offsets: tuple[int, ...] = (-1, 0, 1, 2)
        weights = _bspline_weights(f)
    else:
        offsets = (0, 1)
        weights = (1.0 - f, f)
    start = int(i0.min()) + offsets[0]
    stop = int(i0.max()) + offsets[-1] + 1
    matrix = np.zeros((t.size, stop - start), dtype=np.float32)
    rows = np.arange(t.size)
    for offset, weight in zip(offsets, weights):
        matrix[rows, i0 + offset - start] = weight
    return matrix, start


def _noise_grid(key: int, spacing: float, ys: NDArray[np.float64], xs: NDArray[np.float64]) -> NDArray[np.float32]:
    """Smooth unit-variance noise with correlation length ``spacing`` µm on a separable grid."""
    # Separable B-spline interpolation is two small matrix products, far cheaper than a
    # Gaussian filter of white noise drawn on the fine grid.
    wy, sy = _interp_matrix(ys / spacing, cubic=True)
    wx, sx = _interp_matrix(xs / spacing, cubic=True)
    iy = np.arange(sy, sy + wy.shape[1], dtype=np.int64)[:, None]
    ix = np.arange(sx, sx + wx.shape[1], dtype=np.int64)[None, :]
    values = _lattice_values(key, iy, ix)
    return ((wy @ values) @ wx.T) * np.float32(_NOISE_GAIN)


def _noise_points(key: int, spacing: float, y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The field of :func:`_noise_grid` evaluated at scattered points."""
    ty = np.asarray(y, np.float64) / spacing
    tx = np.asarray(x, np.float64) / spacing
    iy = np.floor(ty).astype(np.int64)
    ix = np.floor(tx).astype(np.int64)
    wy = _bspline_weights(ty - iy)
    wx = _bspline_weights(tx - ix)
    out = np.zeros(ty.shape, dtype=np.float64)
    for a in range(4):
        for b in range(4):
            out += wy[a] * wx[b] * _lattice_values(key, iy + a - 1, ix + b - 1)
    return out * _NOISE_GAIN


def _sigmoid(x: NDArray[Any]) -> NDArray[Any]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft_clip(x: NDArray[np.float32]) -> NDArray[np.float32]:
    # Overlapping structures saturate smoothly instead of clipping flat.
    x = np.maximum(x, 0.0)
    return (x / np.sqrt(np.sqrt(1.0 + x**4))).astype(np.float32)
