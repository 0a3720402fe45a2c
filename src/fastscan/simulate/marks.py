"""Gaussian marks: the drawing primitives of the synthetic specimens, and their fast rendering.

Curve vertices and blobs (positions and widths in µm), smooth random curves, ellipses and the
windows they touch. :mod:`fastscan.simulate.specimens` composes them into scenes; this module
only knows how to draw them on any grid quickly (bilinear splats, one Gaussian filter per width
bin, wide marks on a coarser grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy import signal as sp_signal

# Marks (curve vertices, blobs) whose widths differ by less than this ratio share one Gaussian
# filter pass; it trades a <10 % width error for speed.
_SIGMA_BIN_RATIO = 1.2


@dataclass
class _Marks:
    """Gaussian marks: curve vertices and blobs, positions and widths in µm.

    ``mass`` is the integral of each mark (intensity · µm²): the rendered image is
    ``sum(mass · N(r; sigma))`` with ``N`` a normalised 2-D Gaussian.
    """

    y: NDArray[np.float64]
    x: NDArray[np.float64]
    sigma: NDArray[np.float64]
    mass: NDArray[np.float64]

    @classmethod
    def empty(cls) -> _Marks:
        z = np.zeros(0, dtype=np.float64)
        return cls(z, z, z, z)

    @classmethod
    def concat(cls, parts: list[_Marks]) -> _Marks:
        parts = [p for p in parts if p.y.size]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("y", "x", "sigma", "mass")))

    def subset(self, mask: NDArray[np.bool_]) -> _Marks:
        return _Marks(self.y[mask], self.x[mask], self.sigma[mask], self.mass[mask])

    @classmethod
    def lines(
        cls,
        y: NDArray[np.float64],
        x: NDArray[np.float64],
        sigma: NDArray[np.float64],
        brightness: NDArray[np.float64],
        step: float,
    ) -> _Marks:
        # A line of density rho per µm blurred by a 2-D Gaussian has the cross-section peak
        # rho / (sqrt(2 pi) sigma); vertices spaced `step` apart give rho = mass / step.
        return cls(y, x, sigma, brightness * math.sqrt(2.0 * math.pi) * sigma * step)

    @classmethod
    def blobs(
        cls,
        y: NDArray[np.float64],
        x: NDArray[np.float64],
        sigma: NDArray[np.float64],
        brightness: NDArray[np.float64],
    ) -> _Marks:
        return cls(y, x, sigma, brightness * 2.0 * math.pi * sigma**2)


def _upsample_linear(coarse: NDArray[np.float32], *, factor: int, offset: int, shape: tuple[int, int]) -> NDArray[np.float32]:
    """Linear interpolation from a grid ``factor`` times coarser whose pixel 0 starts ``offset``
    coarse pixels before fine pixel 0."""
    out = coarse
    for axis, n in enumerate(shape):
        t = (np.arange(n) + 0.5) / factor + offset - 0.5
        i0 = np.floor(t).astype(np.int64)
        w = (t - i0).astype(np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        w = w[:, None] if axis == 0 else w[None, :]
        out = a + (b - a) * w
    return out


def _splat_filtered(marks: _Marks, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
    """Marks on one grid: bilinear splat of their mass, then one Gaussian filter per width bin."""
    out = np.zeros(shape, dtype=np.float32)
    sig_px = marks.sigma / pixel_size
    pad = int(math.ceil(3.5 * sig_px.max())) + 2
    fy = (marks.y - origin[0]) / pixel_size - 0.5 + pad
    fx = (marks.x - origin[1]) / pixel_size - 0.5 + pad
    ph, pw = shape[0] + 2 * pad, shape[1] + 2 * pad
    keep = (fy > 0) & (fy < ph - 1) & (fx > 0) & (fx < pw - 1)
    if not keep.any():
        return out
    fy, fx, sig_px = fy[keep], fx[keep], sig_px[keep]
    density = marks.mass[keep] / pixel_size**2
    bins = np.round(np.log(sig_px) / math.log(_SIGMA_BIN_RATIO)).astype(np.int64)
    iy = np.floor(fy).astype(np.int64)
    ix = np.floor(fx).astype(np.int64)
    wy = fy - iy
    wx = fx - ix
    flat = iy * pw + ix
    for b in np.unique(bins):
        sel = bins == b
        f, y1, x1, d = flat[sel], wy[sel], wx[sel], density[sel]
        index = np.concatenate([f, f + 1, f + pw, f + pw + 1])
        weight = np.concatenate([d * (1 - y1) * (1 - x1), d * (1 - y1) * x1, d * y1 * (1 - x1), d * y1 * x1])
        acc = np.bincount(index, weights=weight, minlength=ph * pw).astype(np.float32).reshape(ph, pw)
        # The bilinear splat already spreads each mark with a variance of ~1/6 px² per axis.
        sigma_bin = _SIGMA_BIN_RATIO ** float(b)
        sigma_filter = math.sqrt(max(sigma_bin**2 - 1.0 / 6.0, 0.09))
        ndi.gaussian_filter(acc, sigma_filter, mode="constant", truncate=3.5, output=acc)
        out += acc[pad : pad + shape[0], pad : pad + shape[1]]
    return out


def _render_marks(marks: _Marks, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
    out = np.zeros(shape, dtype=np.float32)
    if marks.y.size == 0:
        return out
    oy, ox = origin
    reach = 4.0 * float(marks.sigma.max()) + 2.0 * pixel_size
    inside = (marks.y > oy - reach) & (marks.y < oy + shape[0] * pixel_size + reach) & (marks.x > ox - reach) & (marks.x < ox + shape[1] * pixel_size + reach)
    # Marks at least ~2.5 px wide are smooth on a grid `factor` times coarser: rendering them
    # there and interpolating costs a fraction of filtering the fine grid, for at most ~5 % of
    # extra width.
    ratio = np.maximum(marks.sigma / pixel_size / 1.25, 1.0)
    # Powers of two keep the number of grids (and interpolation passes) small.
    factor = np.minimum(2 ** np.floor(np.log2(ratio)), 4).astype(np.int64)
    for f in np.unique(factor[inside]):
        sub = marks.subset(inside & (factor == f))
        if f == 1:
            out += _splat_filtered(sub, origin=origin, shape=shape, pixel_size=pixel_size)
            continue
        coarse = _splat_filtered(
            sub,
            origin=(oy - f * pixel_size, ox - f * pixel_size),
            shape=(-(-shape[0] // f) + 3, -(-shape[1] // f) + 3),
            pixel_size=float(f) * pixel_size,
        )
        out += _upsample_linear(coarse, factor=int(f), offset=1, shape=shape)
    return out


def _grow_curves(
    rng: np.random.Generator,
    y0: NDArray[np.float64],
    x0: NDArray[np.float64],
    heading: NDArray[np.float64],
    length: NDArray[np.float64],
    *,
    step: float,
    curvature_sd: float,
    persistence_um: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Smooth random curves: headings driven by an AR(1) curvature (rad/µm).

    Returns ``(y, x, heading, valid)`` arrays of shape ``(N, M)``; ``valid`` marks vertices within
    each curve's length.
    """
    n = y0.size
    if n == 0:
        empty = np.zeros((0, 1), dtype=np.float64)
        return empty, empty, empty, np.zeros((0, 1), dtype=bool)
    m = int(math.ceil(float(length.max()) / step)) + 1
    rho = math.exp(-step / persistence_um)
    innovations = rng.normal(0.0, curvature_sd * math.sqrt(1.0 - rho**2), size=(n, m))
    # Start the curvature process in its stationary state.
    innovations[:, 0] = rng.normal(0.0, curvature_sd, size=n)
    curvature = sp_signal.lfilter([1.0], [1.0, -rho], innovations, axis=1)
    turn = np.concatenate([np.zeros((n, 1)), np.cumsum(curvature[:, :-1] * step, axis=1)], axis=1)
    theta = heading[:, None] + turn
    dy = np.concatenate([np.zeros((n, 1)), np.cumsum(step * np.sin(theta[:, :-1]), axis=1)], axis=1)
    dx = np.concatenate([np.zeros((n, 1)), np.cumsum(step * np.cos(theta[:, :-1]), axis=1)], axis=1)
    valid = np.arange(m)[None, :] * step <= length[:, None]
    return y0[:, None] + dy, x0[:, None] + dx, theta, valid


def _ellipse_radius(y: NDArray[Any], x: NDArray[Any], cy: Any, cx: Any, a: Any, b: Any, angle: Any) -> NDArray[Any]:
    """Elliptical radius (1 on the outline); ``a`` along ``angle``, ``b`` across."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _sample_in_ellipses(
    rng: np.random.Generator,
    counts: NDArray[np.int64],
    cy: NDArray[np.float64],
    cx: NDArray[np.float64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    angle: NDArray[np.float64],
) -> tuple[NDArray[np.float64], ...]:
    """Uniform points in each ellipse: ``(owner, y, x, r)``, ``r`` the radius in [0, 1)."""
    owner = np.repeat(np.arange(counts.size), counts)
    r = np.sqrt(rng.random(owner.size))
    phi = rng.uniform(0.0, 2.0 * math.pi, owner.size)
    u = r * np.cos(phi) * a[owner]
    v = r * np.sin(phi) * b[owner]
    c, s = np.cos(angle[owner]), np.sin(angle[owner])
    return owner, cy[owner] + u * c - v * s, cx[owner] + u * s + v * c, r


def _window_coords(origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    ys = origin[0] + (np.arange(shape[0]) + 0.5) * pixel_size
    xs = origin[1] + (np.arange(shape[1]) + 0.5) * pixel_size
    return ys, xs


def _bbox(
    cy: float,
    cx: float,
    radius: float,
    origin: tuple[float, float],
    shape: tuple[int, int],
    pixel_size: float,
) -> tuple[slice, slice] | None:
    y0 = max(int(math.floor((cy - radius - origin[0]) / pixel_size)), 0)
    y1 = min(int(math.ceil((cy + radius - origin[0]) / pixel_size)) + 1, shape[0])
    x0 = max(int(math.floor((cx - radius - origin[1]) / pixel_size)), 0)
    x1 = min(int(math.ceil((cx + radius - origin[1]) / pixel_size)) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)
