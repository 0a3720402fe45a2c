"""Acquisition simulator: the physics of the two acquisition modes of a point-scanning microscope.

A synthetic specimen (a fluorophore density in ``[0, 1]`` defined in micrometres) is imaged in
two ways:

* **HR** (the training target): a slow unidirectional galvanometric raster, long pixel dwell, a
  few frames averaged.
* **LR** (the video-rate mode): a bidirectional resonant scan with a sinusoidal fast axis, a
  sub-microsecond dwell (a handful of photons per pixel), a line phase between forward and
  backward lines, and a slow drift of the specimen between frames.

Both share one detector model (Poisson photoelectrons, dark counts, PMT gain, read noise, offset,
12-bit quantisation) and write the files a microscope would: OME-TIFFs with pixel sizes and a
JSON file with the geometry that produced them (the ground truth for registration tests).

Coordinates
-----------
Positions are in micrometres inside the field of view (FOV), ``(0, 0)`` at the top-left corner of
the field. Pixel ``k`` of a linear grid with pitch ``p`` covers ``[k p, (k + 1) p)`` and has its
centre at ``(k + 0.5) p``, so HR pixels ``2j`` and ``2j + 1`` tile LR pixel ``j`` when the HR
pitch is half the LR pitch. A specimen array passed to the acquisition functions is rendered at
``specimen_pixel_size_um`` and is centred on the field; a specimen larger than the field gives the
margin that drift and offsets need.

The resonant axis
-----------------
LR frames are sampled with the scan model of :mod:`fastscan.scan` (the mirror's sinusoidal
velocity, the field fraction, display and nominal columns, the line phase and its sign): display
column ``j`` of an ``n``-pixel line shows nominal column
:func:`fastscan.scan.nominal_columns` ``[j]``, and the odd (backward) rows are sampled at the
phases of display column ``j - line_phase_px``, so their content appears displaced by
``+line_phase_px`` columns. :func:`fastscan.scan.unwarp_resonant` resamples rows back onto the
linear grid.

Each pixel integrates the specimen along the path the beam travels during its dwell, between the
phases ``φ_j ± Δφ / 2`` (:func:`fastscan.scan.dwell_phases`). The integral is exact for the
piecewise-constant specimen raster (it is taken from a cumulative sum along x), equivalent to
sub-sampling the path infinitely finely; the beam speed changes by less than 3 % within one dwell
for ``n = 256`` and ``f = 0.8``, so weighting by distance instead of by time makes no visible
difference.

Drift and offsets
-----------------
``truth["drift_px"][t] = [dy, dx]`` is the displacement of the specimen in frame ``t`` relative to
frame 0, in nominal LR pixels (``FOV / lr.pixels`` µm), measured on the linear (undistorted) grid:
frame ``t`` shows the specimen content moved by ``+dy`` rows and ``+dx`` columns.
``lr.offset_um`` is a further displacement of the specimen in every LR frame relative to the HR
image (a stage repositioning between the two acquisitions); ``truth["hr_to_lr_shift_px"]`` is the
same in LR pixels. Frame ``t`` therefore shows the specimen displaced by
``hr_to_lr_shift_px + drift_px[t]`` LR pixels relative to where the HR image shows it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy import signal as sp_signal
from scipy.spatial import cKDTree

from fastscan.atomic import atomic_path
from fastscan.scan import dwell_phases, row_phases_px

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULTS",
    "SPECIMENS",
    "acquire_hr",
    "acquire_lr_series",
    "detect",
    "hr_signal",
    "lr_signal",
    "render_specimen",
    "resolve_params",
    "write_fov",
    "write_slide",
]

PathLike = str | os.PathLike[str]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "field_of_view_um": 102.4,
    # grid the ground-truth specimen is rendered on (102.4 / 0.05 = 2048 px)
    "specimen_pixel_size_um": 0.05,
    # optical resolution, FWHM of a Gaussian PSF
    "psf_fwhm_um": 0.3,
    # unidirectional galvanometric raster, 0.2 µm per pixel with the defaults
    "hr": {"pixels": 512, "dwell_us": 10.0, "frames_averaged": 4},
    # bidirectional resonant scan, 0.4 µm per nominal pixel with the defaults
    "lr": {
        "pixels": 256,
        "frames": 100,
        "dwell_us": 0.5,
        "field_fraction": 0.8,
        "line_phase_px": 0.6,
        "drift_um_per_frame": 0.02,
        "offset_um": [0.0, 0.0],
    },
    # photons_per_us: expected photoelectrons per µs of dwell at the brightest specimen value (1)
    "detector": {
        "photons_per_us": 30.0,
        "pmt_gain": 8.0,
        "dark_counts_per_us": 0.2,
        "read_noise_du": 3.0,
        "offset_du": 100.0,
        "bits": 12,
    },
}

SPECIMENS: tuple[str, ...] = ("mitochondria", "tissue")
"""Specimen kinds known to :func:`render_specimen`."""

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
# Margin rendered around a simulated FOV: drift is a random walk of a few tenths of a µm over
# 100 frames, and the PSF and the dwell path reach about 1 µm beyond the field.
_MARGIN_UM = 3.0
# Halo rendered around each block of a slide, for the PSF, the line phase and the mark kernels.
_SLIDE_PAD_UM = 2.0
_SLIDE_BLOCK_ROWS = 256
# Frames sampled per call of map_coordinates: bounds the memory of the coordinate arrays
# (about 8 MB per frame of 256 x 256) without changing the random stream.
_FRAME_CHUNK = 8
# Marks (curve vertices, blobs) whose widths differ by less than this ratio share one Gaussian
# filter pass; it trades a <10 % width error for speed.
_SIGMA_BIN_RATIO = 1.2


# --------------------------------------------------------------------------------------------
# parameters


def _merge(base: dict[str, Any], overrides: Mapping[str, Any], prefix: str) -> None:
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(f"{prefix}{k}" for k in base)
            raise ValueError(f"unknown simulation parameter {name!r}; known here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"simulation parameter {name!r} must be a mapping, got {type(value).__name__}")
            _merge(base[key], value, f"{name}.")
        else:
            base[key] = copy.deepcopy(value)


def _number(
    params: dict[str, Any],
    path: str,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    strict_low: bool = False,
) -> None:
    keys = path.split(".")
    node = params
    for key in keys[:-1]:
        node = node[key]
    value = node[keys[-1]]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"simulation parameter {path!r} must be a number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"simulation parameter {path!r} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"simulation parameter {path!r} must be finite, got {value!r}")
    if low is not None and (value <= low if strict_low else value < low):
        sign = ">" if strict_low else ">="
        raise ValueError(f"simulation parameter {path!r} must be {sign} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"simulation parameter {path!r} must be <= {high}, got {value!r}")
    node[keys[-1]] = value


def resolve_params(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Deep-merge parameter overrides into :data:`DEFAULTS` and validate the result.

    Parameters
    ----------
    overrides : mapping, optional
        Nested mapping with a subset of the keys of :data:`DEFAULTS`. A fully resolved parameter
        dict is accepted too (resolving is idempotent).

    Returns
    -------
    params : dict
        A new nested dict with every key of :data:`DEFAULTS`, numbers cast to ``int``/``float``.

    Raises
    ------
    ValueError
        For an unknown key (the dotted key is named, e.g. ``'lr.foo'``), a mapping where a value
        is expected or the reverse, or a value out of range.
    """
    params = copy.deepcopy(DEFAULTS)
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ValueError(f"simulation parameters must be a mapping, got {type(overrides).__name__}")
        _merge(params, overrides, "")
    _number(params, "seed", low=0, integer=True)
    _number(params, "field_of_view_um", low=0, strict_low=True)
    _number(params, "specimen_pixel_size_um", low=0, strict_low=True)
    _number(params, "psf_fwhm_um", low=0)
    _number(params, "hr.pixels", low=2, integer=True)
    _number(params, "hr.dwell_us", low=0, strict_low=True)
    _number(params, "hr.frames_averaged", low=1, integer=True)
    _number(params, "lr.pixels", low=2, integer=True)
    _number(params, "lr.frames", low=1, integer=True)
    _number(params, "lr.dwell_us", low=0, strict_low=True)
    _number(params, "lr.field_fraction", low=0, high=0.98, strict_low=True)
    _number(params, "lr.line_phase_px")
    _number(params, "lr.drift_um_per_frame", low=0)
    _number(params, "detector.photons_per_us", low=0)
    _number(params, "detector.pmt_gain", low=0, strict_low=True)
    _number(params, "detector.dark_counts_per_us", low=0)
    _number(params, "detector.read_noise_du", low=0)
    _number(params, "detector.offset_du", low=0)
    _number(params, "detector.bits", low=1, high=16, integer=True)
    offset = params["lr"]["offset_um"]
    if isinstance(offset, (str, bytes, Mapping)) or not hasattr(offset, "__len__") or len(offset) != 2:
        raise ValueError(f"simulation parameter 'lr.offset_um' must be [dy, dx] in µm, got {offset!r}")
    try:
        params["lr"]["offset_um"] = [float(v) for v in offset]
    except (TypeError, ValueError):
        raise ValueError(f"simulation parameter 'lr.offset_um' must be two numbers, got {offset!r}") from None
    if not all(math.isfinite(v) for v in params["lr"]["offset_um"]):
        raise ValueError(f"simulation parameter 'lr.offset_um' must be finite, got {offset!r}")
    # The dwell path of the outermost pixels must stay before the mirror's turning point.
    dwell_phases(params["lr"]["pixels"], params["lr"]["field_fraction"], params["lr"]["line_phase_px"])
    return params


def _pixel_sizes(params: Mapping[str, Any]) -> tuple[float, float]:
    fov = params["field_of_view_um"]
    return fov / params["lr"]["pixels"], fov / params["hr"]["pixels"]


# --------------------------------------------------------------------------------------------
# resolution-independent random fields (hashed lattice value noise)

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


# --------------------------------------------------------------------------------------------
# specimen geometry


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


class _Scene:
    """A specimen defined in µm over ``extent``; renders any window at any pixel size."""

    extent: tuple[float, float]

    def render(self, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
        raise NotImplementedError


class _MitochondriaScene(_Scene):
    """Cells with a network of mitochondrial tubules and puncta around a dark nucleus."""

    def __init__(self, extent: tuple[float, float], rng: np.random.Generator) -> None:
        self.extent = extent
        height, width = extent
        self.key = int(rng.integers(0, 2**63))
        spacing = 40.0
        ny = int(math.ceil(height / spacing)) + 1
        nx = int(math.ceil(width / spacing)) + 1
        gy = (np.arange(ny) + 0.5) * spacing - 0.5 * (ny * spacing - height)
        gx = (np.arange(nx) + 0.5) * spacing - 0.5 * (nx * spacing - width)
        cy, cx = (g.ravel() for g in np.meshgrid(gy, gx, indexing="ij"))
        cy = cy + rng.uniform(-0.25, 0.25, cy.size) * spacing
        cx = cx + rng.uniform(-0.25, 0.25, cx.size) * spacing
        keep = rng.random(cy.size) < 0.9
        cy, cx = cy[keep], cx[keep]
        k = cy.size
        big = rng.uniform(15.0, 21.0, k)
        small = big * rng.uniform(0.65, 0.9, k)
        angle = rng.uniform(0.0, math.pi, k)
        # The nucleus sits off-centre, as in spread adherent cells.
        off_r = rng.uniform(0.0, 0.3, k) * small
        off_phi = rng.uniform(0.0, 2.0 * math.pi, k)
        na = rng.uniform(4.5, 7.0, k)
        nb = na * rng.uniform(0.7, 0.95, k)
        self.cells = {
            "cy": cy,
            "cx": cx,
            "a": big,
            "b": small,
            "angle": angle,
            "ny": cy + off_r * np.sin(off_phi),
            "nx": cx + off_r * np.cos(off_phi),
            "na": na,
            "nb": nb,
            "nangle": angle + rng.normal(0.0, 0.3, k),
            "haze": rng.uniform(0.025, 0.05, k),
        }
        cells = self.cells

        def allowed(owner: NDArray[np.int64], y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.bool_]:
            o = owner if y.ndim == 1 else owner[:, None]
            in_cell = (
                _ellipse_radius(
                    y,
                    x,
                    cells["cy"][o],
                    cells["cx"][o],
                    cells["a"][o],
                    cells["b"][o],
                    cells["angle"][o],
                )
                < 0.97
            )
            out_nucleus = (
                _ellipse_radius(
                    y,
                    x,
                    cells["ny"][o],
                    cells["nx"][o],
                    cells["na"][o],
                    cells["nb"][o],
                    cells["nangle"][o],
                )
                > 1.08
            )
            return in_cell & out_nucleus

        area = math.pi * big * small
        density = rng.uniform(0.12, 0.25, k)
        owner, sy, sx, r = _sample_in_ellipses(rng, rng.poisson(density * area * 1.6), cy, cx, big, small, angle)
        # Perinuclear crowding: fewer seeds towards the cell edge.
        keep = allowed(owner, sy, sx) & (rng.random(owner.size) < 1.0 - 0.55 * r)
        owner, sy, sx = owner[keep], sy[keep], sx[keep]
        radial = np.arctan2(sy - cells["ny"][owner], sx - cells["nx"][owner])
        heading = radial + rng.normal(0.0, 0.8, owner.size)
        length = np.minimum(1.0 + rng.exponential(3.5, owner.size), 14.0)
        step = 0.1
        y, x, theta, valid = _grow_curves(rng, sy, sx, heading, length, step=step, curvature_sd=0.35, persistence_um=2.0)
        valid &= np.cumprod(allowed(owner, y, x), axis=1).astype(bool)
        width = rng.uniform(0.3, 0.5, owner.size)
        bright = rng.uniform(0.55, 1.0, owner.size)

        # Branches: start at a vertex of a parent, leave at an angle, share its width.
        parents = np.flatnonzero((rng.random(owner.size) < 0.4) & (valid.sum(axis=1) > 3))
        n_valid = valid[parents].sum(axis=1)
        at = (rng.random(parents.size) * (n_valid - 1)).astype(np.int64)
        by, bx = y[parents, at], x[parents, at]
        turn = rng.uniform(0.5, 1.2, parents.size) * rng.choice([-1.0, 1.0], parents.size)
        blen = np.minimum(0.6 + rng.exponential(1.5, parents.size), 5.0)
        y2, x2, _, valid2 = _grow_curves(
            rng,
            by,
            bx,
            theta[parents, at] + turn,
            blen,
            step=step,
            curvature_sd=0.35,
            persistence_um=2.0,
        )
        valid2 &= np.cumprod(allowed(owner[parents], y2, x2), axis=1).astype(bool)

        marks = []
        for yy, xx, vv, w, b in (
            (y, x, valid, width, bright),
            (y2, x2, valid2, width[parents], bright[parents] * rng.uniform(0.8, 1.0, parents.size)),
        ):
            rows, cols = np.nonzero(vv)
            py, px = yy[rows, cols], xx[rows, cols]
            # Brightness varies along a tubule (matrix density, membrane potential).
            modulation = np.clip(0.75 + 0.25 * _noise_points(_subkey(self.key, 1), 1.5, py, px), 0.3, 1.3)
            marks.append(_Marks.lines(py, px, w[rows] * _FWHM_TO_SIGMA, b[rows] * modulation, step))

        p_owner, py, px, _ = _sample_in_ellipses(rng, rng.poisson(0.02 * area), cy, cx, big, small, angle)
        keep = allowed(p_owner, py, px)
        py, px = py[keep], px[keep]
        diameter = rng.uniform(0.3, 0.6, py.size)
        marks.append(_Marks.blobs(py, px, diameter * _FWHM_TO_SIGMA, rng.uniform(0.5, 1.0, py.size)))
        self.marks = _Marks.concat(marks)
        logger.debug(
            "mitochondria scene: %d cells, %d tubules, %d branches, %d puncta",
            k,
            owner.size,
            parents.size,
            py.size,
        )

    def render(self, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
        ys, xs = _window_coords(origin, shape, pixel_size)
        image = np.zeros(shape, dtype=np.float32)
        c = self.cells
        for i in range(c["cy"].size):
            box = _bbox(c["cy"][i], c["cx"][i], c["a"][i] + 2.0, origin, shape, pixel_size)
            if box is None:
                continue
            yy = ys[box[0]][:, None]
            xx = xs[box[1]][None, :]
            r = _ellipse_radius(yy, xx, c["cy"][i], c["cx"][i], c["a"][i], c["b"][i], c["angle"][i])
            rn = _ellipse_radius(yy, xx, c["ny"][i], c["nx"][i], c["na"][i], c["nb"][i], c["nangle"][i])
            cytoplasm = _sigmoid((1.0 - r) * c["b"][i] / 0.6) * (1.0 - 0.8 * _sigmoid((1.0 - rn) * c["nb"][i] / 0.3))
            image[box] = np.maximum(image[box], c["haze"][i] * cytoplasm)
        image *= np.clip(1.0 + 0.35 * _noise_grid(_subkey(self.key, 2), 2.5, ys, xs), 0.2, None)
        image += _render_marks(self.marks, origin=origin, shape=shape, pixel_size=pixel_size)
        return np.clip(_soft_clip(image), 0.0, 1.0)


class _TissueScene(_Scene):
    """Packed epithelial cells (membranes, textured nuclei) and fibrous stroma."""

    _CELL_SPACING = 10.5

    def __init__(self, extent: tuple[float, float], rng: np.random.Generator) -> None:
        self.extent = extent
        height, width = extent
        self.key = int(rng.integers(0, 2**63))
        key = self.key
        margin = 8.0
        area = (height + 2 * margin) * (width + 2 * margin)

        def cellularity(y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
            return _sigmoid(_noise_points(_subkey(key, 10), 25.0, y, x) / 0.35)

        def orientation(y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
            return 1.2 * _noise_points(_subkey(key, 11), 60.0, y, x)

        g = self._CELL_SPACING
        gy = np.arange(-margin, height + margin, g) + 0.5 * g
        gx = np.arange(-margin, width + margin, g) + 0.5 * g
        cy, cx = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
        cy = cy + rng.uniform(-0.35, 0.35, cy.size) * g
        cx = cx + rng.uniform(-0.35, 0.35, cx.size) * g
        keep = rng.random(cy.size) < cellularity(cy, cx)
        cy, cx = cy[keep], cx[keep]
        self.centres = np.column_stack([cy, cx])
        self.tree = cKDTree(self.centres) if cy.size >= 2 else None

        k = cy.size
        if self.tree is not None:
            neighbour = self.tree.query(self.centres, k=2)[0][:, 1]
        else:
            neighbour = np.full(k, 2.0 * g)
        # A nucleus stays inside its cell: at most ~40 % of the distance to the next centre.
        ea = np.minimum(rng.uniform(2.6, 5.2, k), 0.42 * neighbour)
        jitter = 0.1 * neighbour[:, None] * rng.normal(0.0, 1.0, (k, 2))
        epithelial = {
            "cy": cy + jitter[:, 0],
            "cx": cx + jitter[:, 1],
            "a": ea,
            "b": ea * rng.uniform(0.7, 1.0, k),
            "angle": rng.uniform(0.0, math.pi, k),
            "bright": rng.uniform(0.5, 0.85, k),
        }
        n = rng.poisson(area / 500.0)
        sy = rng.uniform(-margin, height + margin, n)
        sx = rng.uniform(-margin, width + margin, n)
        keep = rng.random(n) < 0.9 * (1.0 - cellularity(sy, sx))
        sy, sx = sy[keep], sx[keep]
        m = sy.size
        # Spindle-shaped stromal nuclei align with the fibres around them.
        stromal = {
            "cy": sy,
            "cx": sx,
            "a": rng.uniform(3.5, 7.0, m),
            "b": rng.uniform(0.9, 1.8, m),
            "angle": orientation(sy, sx) + rng.normal(0.0, 0.15, m),
            "bright": rng.uniform(0.45, 0.75, m),
        }
        self.nuclei = {f: np.concatenate([epithelial[f], stromal[f]]) for f in epithelial}

        # Chromocentres: small bright foci inside the epithelial nuclei.
        counts = rng.poisson(2.0, k)
        owner, py, px, _ = _sample_in_ellipses(
            rng,
            counts,
            epithelial["cy"],
            epithelial["cx"],
            0.6 * epithelial["a"],
            0.6 * epithelial["b"],
            epithelial["angle"],
        )
        chromo = _Marks.blobs(py, px, rng.uniform(0.15, 0.3, py.size), rng.uniform(0.15, 0.35, py.size))

        n = rng.poisson(area / 120.0)
        fy = rng.uniform(-margin, height + margin, n)
        fx = rng.uniform(-margin, width + margin, n)
        keep = rng.random(n) < 0.15 + 0.85 * (1.0 - cellularity(fy, fx))
        fy, fx = fy[keep], fx[keep]
        f = fy.size
        step = 0.1
        length = rng.uniform(12.0, 60.0, f)
        heading = orientation(fy, fx) + rng.normal(0.0, 0.1, f)
        # Start half a length back so that a fibre runs through its seed point.
        fy = fy - 0.5 * length * np.sin(heading)
        fx = fx - 0.5 * length * np.cos(heading)
        y, x, theta, valid = _grow_curves(rng, fy, fx, heading, length, step=step, curvature_sd=0.03, persistence_um=10.0)
        # Collagen crimp: a lateral wave along each fibre.
        s = np.arange(y.shape[1]) * step
        amplitude = rng.uniform(0.1, 0.6, f)[:, None]
        wavelength = rng.uniform(4.0, 10.0, f)[:, None]
        phase = rng.uniform(0.0, 2.0 * math.pi, f)[:, None]
        lateral = amplitude * np.sin(2.0 * math.pi * s[None, :] / wavelength + phase)
        y = y + lateral * np.cos(theta)
        x = x - lateral * np.sin(theta)
        rows, cols = np.nonzero(valid)
        py, px = y[rows, cols], x[rows, cols]
        fwhm = rng.uniform(0.35, 0.9, f)
        bright = rng.uniform(0.18, 0.45, f)
        # Fibres fade where cells pack the tissue.
        fade = 1.0 - 0.85 * cellularity(py, px)
        fibres = _Marks.lines(py, px, fwhm[rows] * _FWHM_TO_SIGMA, bright[rows] * fade, step)
        self.fibres = fibres
        self.chromocentres = chromo
        logger.debug("tissue scene: %d cells, %d stromal nuclei, %d fibres (%d vertices)", k, m, f, py.size)

    def _voronoi(self, tree: cKDTree, ys: NDArray[np.float64], xs: NDArray[np.float64]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Distance to the nearest membrane and to the nearest cell centre, on the window."""
        coarse = 0.5
        gy = np.arange(math.floor(ys[0] / coarse) - 1, math.ceil(ys[-1] / coarse) + 2) * coarse
        gx = np.arange(math.floor(xs[0] / coarse) - 1, math.ceil(xs[-1] / coarse) + 2) * coarse
        points = np.stack(np.meshgrid(gy, gx, indexing="ij"), axis=-1).reshape(-1, 2)
        dist, index = tree.query(points, k=2)
        c1 = self.centres[index[:, 0]]
        c2 = self.centres[index[:, 1]]
        # d2² - d1² is linear in position for a fixed pair of centres, so its scaled value (the
        # distance to their bisector) interpolates exactly between coarse nodes except where the
        # pair of nearest centres changes, which is away from the membranes.
        bisector = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.linalg.norm(c1 - c2, axis=1))
        wy, sy = _interp_matrix((ys - gy[0]) / coarse, cubic=False)
        wx, sx = _interp_matrix((xs - gx[0]) / coarse, cubic=False)
        shape = (gy.size, gx.size)

        def up(values: NDArray[np.float64]) -> NDArray[np.float32]:
            grid = values.reshape(shape).astype(np.float32)
            grid = np.ascontiguousarray(grid[sy : sy + wy.shape[1], sx : sx + wx.shape[1]])
            return (wy @ grid) @ wx.T

        return up(bisector), up(dist[:, 0])

    def render(self, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
        key = self.key
        ys, xs = _window_coords(origin, shape, pixel_size)
        if self.tree is not None:
            membrane_dist, centre_dist = self._voronoi(self.tree, ys, xs)
            cellness = _sigmoid((0.75 * self._CELL_SPACING - centre_dist) / 1.0)
            membranes = 0.45 * cellness * np.exp(-0.5 * (membrane_dist / 0.22) ** 2) * (0.75 + 0.25 * _noise_grid(_subkey(key, 20), 6.0, ys, xs))
        else:
            cellness = np.zeros(shape, dtype=np.float32)
            membranes = cellness
        cytoplasm = cellness * (0.2 + 0.05 * _noise_grid(_subkey(key, 21), 2.0, ys, xs) + 0.03 * _noise_grid(_subkey(key, 22), 0.7, ys, xs))
        stroma = (1.0 - cellness) * (0.07 + 0.035 * _noise_grid(_subkey(key, 23), 3.0, ys, xs) + 0.02 * _noise_grid(_subkey(key, 24), 0.8, ys, xs))
        image = (cytoplasm + stroma + membranes).astype(np.float32)
        image += _render_marks(self.fibres, origin=origin, shape=shape, pixel_size=pixel_size)

        nuc = self.nuclei
        chromatin: NDArray[np.float32] | None = None
        for i in range(nuc["cy"].size):
            box = _bbox(nuc["cy"][i], nuc["cx"][i], nuc["a"][i] + 1.0, origin, shape, pixel_size)
            if box is None:
                continue
            if chromatin is None:
                # Chromatin texture, evaluated once per window and only if a nucleus is in it.
                chromatin = 0.6 * _noise_grid(_subkey(key, 25), 0.6, ys, xs) + 0.4 * _noise_grid(_subkey(key, 26), 0.3, ys, xs)
            yy = ys[box[0]][:, None]
            xx = xs[box[1]][None, :]
            r = _ellipse_radius(yy, xx, nuc["cy"][i], nuc["cx"][i], nuc["a"][i], nuc["b"][i], nuc["angle"][i])
            inside_um = (1.0 - r) * nuc["b"][i]
            mask = _sigmoid(inside_um / 0.12)
            envelope = 1.0 + 0.25 * np.exp(-((inside_um / 0.3) ** 2))
            value = nuc["bright"][i] * np.clip(0.78 + 0.28 * chromatin[box], 0.25, 1.3) * envelope
            image[box] = image[box] * (1.0 - mask) + value * mask
        image += _render_marks(self.chromocentres, origin=origin, shape=shape, pixel_size=pixel_size)
        return np.clip(_soft_clip(image), 0.0, 1.0)


def _build_scene(kind: str, extent: tuple[float, float], rng: np.random.Generator) -> _Scene:
    if kind == "mitochondria":
        return _MitochondriaScene(extent, rng)
    if kind == "tissue":
        return _TissueScene(extent, rng)
    raise ValueError(f"unknown specimen kind {kind!r}; choose one of {', '.join(SPECIMENS)}")


def render_specimen(kind: str, *, shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> NDArray[np.float32]:
    """Render a synthetic fluorescent specimen.

    Parameters
    ----------
    kind : {"mitochondria", "tissue"}
        ``"mitochondria"`` (sample A): a few cells with networks of thin tubules (FWHM
        0.3-0.5 µm, some branched) and puncta (0.3-0.6 µm) around dark nuclei, on a dark
        background. ``"tissue"`` (sample B): clusters of packed cells with membranes and
        textured nuclei (5-15 µm) in a fibrous stroma; a more continuous intensity.
    shape : (int, int)
        Pixels ``(Y, X)``.
    pixel_size_um : float
        Pixel size of the rendering in µm.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    specimen : (Y, X) ndarray of float32
        Fluorophore density in ``[0, 1]``; pixel ``(i, j)`` has its centre at
        ``((i + 0.5) p, (j + 0.5) p)`` µm.

    Notes
    -----
    Geometry is drawn in µm first and then rasterised, so the same seed and the same physical
    extent give the same specimen at any pixel size (up to sampling); counts of objects scale
    with the area.
    """
    if pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    scene = _build_scene(kind, (shape[0] * pixel_size_um, shape[1] * pixel_size_um), rng)
    return scene.render(origin=(0.0, 0.0), shape=shape, pixel_size=pixel_size_um)


# --------------------------------------------------------------------------------------------
# optics and scanning (noise-free signal)


def _blur(specimen: NDArray[Any], *, psf_fwhm_um: float, pixel_size: float) -> NDArray[np.float32]:
    specimen = np.asarray(specimen, dtype=np.float32)
    sigma = psf_fwhm_um * _FWHM_TO_SIGMA / pixel_size
    if sigma <= 0:
        return specimen
    return ndi.gaussian_filter(specimen, sigma, mode="nearest", truncate=4.0)


def _cumsum_x(image: NDArray[np.float32]) -> NDArray[np.float64]:
    """Running integral along x, ``S[:, k]`` = sum of columns ``< k`` (edge coordinates)."""
    out = np.zeros((image.shape[0], image.shape[1] + 1), dtype=np.float64)
    np.cumsum(image, axis=1, dtype=np.float64, out=out[:, 1:])
    return out


def _specimen_origin(specimen: NDArray[Any], params: Mapping[str, Any]) -> tuple[float, float]:
    """Field coordinates (µm) of the top-left corner of a specimen centred on the field."""
    ps = params["specimen_pixel_size_um"]
    fov = params["field_of_view_um"]
    if np.ndim(specimen) != 2:
        raise ValueError(f"specimen must be a (Y, X) array, got shape {np.shape(specimen)}")
    h, w = specimen.shape
    if min(h, w) * ps < fov * (1.0 - 1e-9):
        logger.warning(
            "specimen (%d x %d px at %.3g µm) is smaller than the %.4g µm field; the field "
            "outside it reads as empty along x and as the nearest specimen row along y",
            h,
            w,
            ps,
            fov,
        )
    return -0.5 * (h * ps - fov), -0.5 * (w * ps - fov)


def _sample_lines(
    integral: NDArray[np.float64],
    *,
    rows_um: NDArray[np.float64],
    edges_um: NDArray[np.float64],
    origin: tuple[float, float],
    pixel_size: float,
) -> NDArray[np.float32]:
    """Mean of the blurred specimen along each dwell path.

    ``rows_um`` is ``(...)`` (one y per line), ``edges_um`` is ``(..., n + 1)`` (x at the start
    and end of each dwell, in field µm); returns ``(..., n)``.
    """
    yc = (rows_um - origin[0]) / pixel_size - 0.5
    xe = (edges_um - origin[1]) / pixel_size
    yc = np.broadcast_to(yc[..., None], xe.shape)
    # Linear interpolation of the running integral is the exact integral of the raster along x,
    # and linear in y between rows; 'nearest' clamps x to the ends (nothing beyond the specimen).
    values = ndi.map_coordinates(integral, np.stack([yc.ravel(), xe.ravel()]), order=1, mode="nearest", prefilter=False).reshape(xe.shape)
    return (np.diff(values, axis=-1) / np.diff(xe, axis=-1)).astype(np.float32)


def _lr_edges_um(params: Mapping[str, Any], phase_px: float) -> NDArray[np.float64]:
    """x (field µm) at the dwell boundaries of one resonant line, ``(n + 1,)``."""
    lr = params["lr"]
    n = lr["pixels"]
    lr_px = params["field_of_view_um"] / n
    phases = dwell_phases(n, lr["field_fraction"], phase_px)
    u = np.sin(phases) / math.sin(0.5 * lr["field_fraction"] * math.pi)
    return (0.5 * (n - 1) * (1.0 + u) + 0.5) * lr_px


def _lr_frame_edges(params: Mapping[str, Any], rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Dwell boundaries for the given (global) row indices, ``(len(rows), n + 1)``."""
    # Timing error of the backward lines: their samples are taken at the phases of columns
    # j - line_phase, which displaces their content by +line_phase columns.
    even_phase, odd_phase = row_phases_px(params["lr"]["line_phase_px"])
    even = _lr_edges_um(params, even_phase)
    odd = _lr_edges_um(params, odd_phase)
    return np.where((rows % 2 == 1)[:, None], odd[None, :], even[None, :])


def _lr_chunks(specimen: NDArray[Any], params: Mapping[str, Any], shifts_um: NDArray[np.float64]) -> Iterator[tuple[int, int, NDArray[np.float32]]]:
    ps = params["specimen_pixel_size_um"]
    origin = _specimen_origin(specimen, params)
    integral = _cumsum_x(_blur(specimen, psf_fwhm_um=params["psf_fwhm_um"], pixel_size=ps))
    n = params["lr"]["pixels"]
    lr_px = params["field_of_view_um"] / n
    rows = np.arange(n)
    rows_um = (rows + 0.5) * lr_px
    edges = _lr_frame_edges(params, rows)
    for t0 in range(0, shifts_um.shape[0], _FRAME_CHUNK):
        t1 = min(t0 + _FRAME_CHUNK, shifts_um.shape[0])
        # The specimen moved by +shift, so the beam reads it at position - shift.
        sy = shifts_um[t0:t1, 0][:, None]
        sx = shifts_um[t0:t1, 1][:, None, None]
        yield (
            t0,
            t1,
            _sample_lines(
                integral,
                rows_um=rows_um[None, :] - sy,
                edges_um=edges[None, :, :] - sx,
                origin=origin,
                pixel_size=ps,
            ),
        )


def lr_signal(
    specimen: NDArray[Any],
    *,
    params: Mapping[str, Any] | None = None,
    drift_px: NDArray[Any] | None = None,
) -> NDArray[np.float32]:
    """Noise-free video-rate series: the specimen signal each resonant pixel integrates.

    Parameters
    ----------
    specimen : (Y, X) ndarray
        Specimen at ``specimen_pixel_size_um``, centred on the field.
    params : mapping, optional
        Simulation parameters (resolved with :func:`resolve_params`).
    drift_px : (T, 2) array_like, optional
        Specimen displacement ``[dy, dx]`` per frame in nominal LR pixels (the
        ``truth["drift_px"]`` convention); ``lr.offset_um`` is added. Defaults to one frame
        without drift.

    Returns
    -------
    signal : (T, lr.pixels, lr.pixels) ndarray of float32
        Mean specimen value (``[0, 1]`` scale) along each dwell path, in display order.
    """
    p = resolve_params(params)
    lr_px, _ = _pixel_sizes(p)
    drift = np.zeros((1, 2)) if drift_px is None else np.asarray(drift_px, dtype=np.float64).reshape(-1, 2)
    shifts = np.asarray(p["lr"]["offset_um"])[None, :] + drift * lr_px
    n = p["lr"]["pixels"]
    out = np.empty((shifts.shape[0], n, n), dtype=np.float32)
    for t0, t1, chunk in _lr_chunks(specimen, p, shifts):
        out[t0:t1] = chunk
    return out


def hr_signal(specimen: NDArray[Any], *, params: Mapping[str, Any] | None = None) -> NDArray[np.float32]:
    """Noise-free HR image: the PSF-blurred specimen integrated over each pixel's area.

    Parameters
    ----------
    specimen : (Y, X) ndarray
        Specimen at ``specimen_pixel_size_um``, centred on the field.
    params : mapping, optional
        Simulation parameters (resolved with :func:`resolve_params`).

    Returns
    -------
    signal : (hr.pixels, hr.pixels) ndarray of float32
        Mean specimen value over each pixel of the linear grid of pitch ``FOV / hr.pixels``.
    """
    p = resolve_params(params)
    ps = p["specimen_pixel_size_um"]
    origin = _specimen_origin(specimen, p)
    blurred = _blur(specimen, psf_fwhm_um=p["psf_fwhm_um"], pixel_size=ps)
    integral = np.zeros((blurred.shape[0] + 1, blurred.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(blurred, axis=0, dtype=np.float64), axis=1, out=integral[1:, 1:])
    _, hr_px = _pixel_sizes(p)
    n = p["hr"]["pixels"]
    edges = np.arange(n + 1) * hr_px
    ey = (edges - origin[0]) / ps
    ex = (edges - origin[1]) / ps
    grid = np.meshgrid(ey, ex, indexing="ij")
    # Summed-area table: the area integral is a difference of four interpolated corners.
    corner = ndi.map_coordinates(integral, np.stack([g.ravel() for g in grid]), order=1, mode="nearest", prefilter=False).reshape(n + 1, n + 1)
    area = np.diff(np.diff(corner, axis=0), axis=1)
    return (area / (np.diff(ey)[:, None] * np.diff(ex)[None, :])).astype(np.float32)


# --------------------------------------------------------------------------------------------
# detector


def detect(
    signal: NDArray[Any],
    *,
    dwell_us: float,
    detector: Mapping[str, Any],
    rng: np.random.Generator | None = None,
    noise: bool = True,
) -> NDArray[np.uint16]:
    """Photon detection, PMT amplification and digitisation of a noise-free signal.

    Parameters
    ----------
    signal : ndarray
        Specimen signal on the ``[0, 1]`` scale (1 is the brightest fluorophore density).
    dwell_us : float
        Pixel dwell time in µs.
    detector : mapping
        The ``detector`` section of the parameters.
    rng : numpy.random.Generator, optional
        Required when ``noise`` is true.
    noise : bool, optional
        False gives the expected value, quantised: a noise-free image for geometry checks.

    Returns
    -------
    counts : ndarray of uint16
        Digital units, ``clip(round(gain · n + read + offset), 0, 2**bits - 1)`` with
        ``n ~ Poisson((photons_per_us · signal + dark_counts_per_us) · dwell_us)`` and
        ``read ~ N(0, read_noise_du)``.
    """
    expected = (np.maximum(np.asarray(signal, dtype=np.float64), 0.0) * detector["photons_per_us"] + detector["dark_counts_per_us"]) * dwell_us
    if noise:
        if rng is None:
            raise ValueError("detect(noise=True) needs an rng")
        du = detector["pmt_gain"] * rng.poisson(expected).astype(np.float64)
        if detector["read_noise_du"] > 0:
            du += rng.normal(0.0, detector["read_noise_du"], size=du.shape)
        du += detector["offset_du"]
    else:
        du = detector["pmt_gain"] * expected + detector["offset_du"]
    top = 2 ** int(detector["bits"]) - 1
    return np.clip(np.rint(du), 0, top).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# acquisition


def acquire_hr(
    specimen: NDArray[Any],
    *,
    params: Mapping[str, Any] | None = None,
    rng: np.random.Generator,
    noise: bool = True,
) -> NDArray[np.uint16]:
    """Acquire the HR target: unidirectional galvo raster, ``hr.frames_averaged`` frames averaged.

    Parameters
    ----------
    specimen : (Y, X) ndarray
        Specimen at ``specimen_pixel_size_um``, centred on the field (see the module notes).
    params : mapping, optional
        Simulation parameters (resolved with :func:`resolve_params`).
    rng : numpy.random.Generator
        Source of the detector noise.
    noise : bool, optional
        False returns the quantised expected value.

    Returns
    -------
    image : (hr.pixels, hr.pixels) ndarray of uint16
        The average of the digitised frames, rounded, as a microscope's averaging mode stores it.
    """
    p = resolve_params(params)
    signal = hr_signal(specimen, params=p)
    total = np.zeros(signal.shape, dtype=np.float64)
    frames = p["hr"]["frames_averaged"] if noise else 1
    for _ in range(frames):
        total += detect(signal, dwell_us=p["hr"]["dwell_us"], detector=p["detector"], rng=rng, noise=noise)
    return np.rint(total / frames).astype(np.uint16)


def _scan_timing(params: Mapping[str, Any]) -> dict[str, float]:
    lr = params["lr"]
    # Pixels are one dwell apart over field_fraction of a half-period of the mirror.
    line_period_us = (lr["pixels"] - 1) * lr["dwell_us"] / lr["field_fraction"]
    return {
        "line_period_us": line_period_us,
        "mirror_frequency_hz": 1e6 / (2.0 * line_period_us),
        "frame_interval_s": lr["pixels"] * line_period_us * 1e-6,
    }


def acquire_lr_series(
    specimen: NDArray[Any],
    *,
    params: Mapping[str, Any] | None = None,
    rng: np.random.Generator,
    noise: bool = True,
) -> tuple[NDArray[np.uint16], dict[str, Any]]:
    """Acquire a video-rate series with a bidirectional resonant scan.

    Parameters
    ----------
    specimen : (Y, X) ndarray
        Specimen at ``specimen_pixel_size_um``, centred on the field (see the module notes).
    params : mapping, optional
        Simulation parameters (resolved with :func:`resolve_params`).
    rng : numpy.random.Generator
        Source of the drift (drawn first) and the detector noise.
    noise : bool, optional
        False returns the quantised expected value; the drift is still drawn.

    Returns
    -------
    series : (lr.frames, lr.pixels, lr.pixels) ndarray of uint16
        Frames in display order (odd lines written back left to right).
    truth : dict
        JSON-serialisable ground truth: ``drift_px`` (``[dy, dx]`` per frame, nominal LR px,
        frame 0 is ``[0, 0]``), ``line_phase_px``, ``field_fraction``, ``lr_pixel_size_um``,
        ``hr_pixel_size_um``, ``hr_to_lr_shift_px``, ``scale``, ``scan`` (timing), ``seed``,
        ``params`` (resolved) and ``conventions`` (the sign conventions in words).
    """
    p = resolve_params(params)
    lr = p["lr"]
    lr_px, hr_px = _pixel_sizes(p)
    frames = lr["frames"]
    steps = rng.normal(0.0, lr["drift_um_per_frame"], size=(frames - 1, 2))
    drift_um = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    offset = np.asarray(lr["offset_um"], dtype=np.float64)
    n = lr["pixels"]
    series = np.empty((frames, n, n), dtype=np.uint16)
    for t0, t1, chunk in _lr_chunks(specimen, p, offset[None, :] + drift_um):
        series[t0:t1] = detect(chunk, dwell_us=lr["dwell_us"], detector=p["detector"], rng=rng, noise=noise)
    truth = {
        "drift_px": (drift_um / lr_px).tolist(),
        "line_phase_px": lr["line_phase_px"],
        "field_fraction": lr["field_fraction"],
        "lr_pixel_size_um": lr_px,
        "hr_pixel_size_um": hr_px,
        "hr_to_lr_shift_px": (offset / lr_px).tolist(),
        "scale": p["hr"]["pixels"] // n if p["hr"]["pixels"] % n == 0 else p["hr"]["pixels"] / n,
        "scan": {"mode": "resonant bidirectional", **_scan_timing(p)},
        "seed": p["seed"],
        "params": p,
        "conventions": {
            "coordinates": "pixel k of a linear grid of pitch p covers [k p, (k+1) p) µm of the field",
            "drift_px": "frame t shows the specimen displaced by +drift_px[t] = [dy, dx] nominal LR "
            "pixels relative to frame 0, on the linear (undistorted) grid",
            "hr_to_lr_shift_px": "every LR frame shows the specimen displaced by this [dy, dx] "
            "(nominal LR pixels) relative to the HR image, in addition to drift_px",
            "line_phase_px": "odd rows are sampled at the mirror phases of display columns "
            "j - line_phase_px: their content appears displaced by +line_phase_px columns",
            "resonant_x": "display column j shows nominal column (n-1)/2 (1 + sin(phi_j) / sin(f pi/2)), phi_j = -f pi/2 + j f pi/(n-1), f = field_fraction",
        },
    }
    return series, truth


# --------------------------------------------------------------------------------------------
# writing files like a microscope


@contextlib.contextmanager
def _atomic_paths(*paths: PathLike) -> Iterator[list[Path]]:
    """Temporary siblings of ``paths``, renamed into place only if the block succeeds."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def _file_uuid(role: str, specimen: str, params: Mapping[str, Any]) -> str:
    # tifffile draws a time-based UUID by default; deriving it from what was simulated keeps
    # files from the same seed and parameters byte-identical.
    text = json.dumps({"role": role, "specimen": specimen, "params": params}, sort_keys=True)
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'fastscan.simulate:' + text)}"


def _ome_metadata(
    *,
    axes: str,
    pixel_size_um: float,
    bits: int,
    name: str,
    uid: str,
    description: str,
    time_increment_s: float | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "UUID": uid,
        "axes": axes,
        "Name": name,
        "Description": description,
        "SignificantBits": int(bits),
        "PhysicalSizeX": float(pixel_size_um),
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": float(pixel_size_um),
        "PhysicalSizeYUnit": "µm",
    }
    if time_increment_s is not None:
        meta["TimeIncrement"] = float(time_increment_s)
        meta["TimeIncrementUnit"] = "s"
    return meta


def _imwrite_ome(path: Path, data: NDArray[Any], *, metadata: dict[str, Any], tile: tuple[int, int] | None = None) -> None:
    px = metadata["PhysicalSizeX"]
    tifffile.imwrite(
        path,
        data,
        ome=True,
        photometric="minisblack",
        metadata=metadata,
        tile=tile,
        # Also in the baseline TIFF tags, for readers that ignore OME-XML.
        resolution=(1e4 / px, 1e4 / px),
        resolutionunit="CENTIMETER",
    )


def write_fov(
    *,
    lr_path: PathLike,
    hr_path: PathLike,
    truth_path: PathLike,
    specimen: str,
    seed: int,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Simulate one field of view and write it as a microscope would.

    Parameters
    ----------
    lr_path : path
        Video-rate series, multi-page OME-TIFF (axes ``TYX``, uint16, nominal LR pixel size).
    hr_path : path
        HR target, single-plane OME-TIFF (axes ``YX``, uint16, HR pixel size).
    truth_path : path
        Ground truth as JSON (see :func:`acquire_lr_series`, plus ``specimen``).
    specimen : {"mitochondria", "tissue"}
        Kind of specimen (see :func:`render_specimen`).
    seed : int
        Seeds everything (specimen, noise, drift); overrides ``params["seed"]``.
    params : mapping, optional
        Overrides of :data:`DEFAULTS`.

    Returns
    -------
    truth : dict
        What was written to ``truth_path``.

    Notes
    -----
    The three files are written under temporary sibling names and renamed into place at the
    end; parent folders are created. The same seed and parameters give identical files.
    """
    start = time.perf_counter()
    p = resolve_params(params)
    p["seed"] = int(seed)
    if specimen not in SPECIMENS:
        raise ValueError(f"unknown specimen kind {specimen!r}; choose one of {', '.join(SPECIMENS)}")
    rng = np.random.default_rng(p["seed"])
    ps = p["specimen_pixel_size_um"]
    # Room for the offset and for the drift's random walk (4 standard deviations at the end).
    lr = p["lr"]
    walk = 4.0 * lr["drift_um_per_frame"] * math.sqrt(lr["frames"] - 1)
    margin = _MARGIN_UM + walk + max(abs(v) for v in lr["offset_um"])
    size = int(math.ceil((p["field_of_view_um"] + 2.0 * margin) / ps))
    sample = render_specimen(specimen, shape=(size, size), pixel_size_um=ps, rng=rng)
    t_render = time.perf_counter()
    hr = acquire_hr(sample, params=p, rng=rng)
    t_hr = time.perf_counter()
    lr, truth = acquire_lr_series(sample, params=p, rng=rng)
    t_lr = time.perf_counter()
    truth["specimen"] = specimen
    lr_px, hr_px = truth["lr_pixel_size_um"], truth["hr_pixel_size_um"]
    bits = p["detector"]["bits"]
    with _atomic_paths(lr_path, hr_path, truth_path) as (lr_tmp, hr_tmp, truth_tmp):
        _imwrite_ome(
            lr_tmp,
            lr,
            metadata=_ome_metadata(
                axes="TYX",
                pixel_size_um=lr_px,
                bits=bits,
                name=Path(lr_path).name,
                uid=_file_uuid("lr", specimen, p),
                description=(
                    f"fastscan simulated video-rate series: {specimen}, resonant "
                    f"bidirectional scan, field fraction {p['lr']['field_fraction']}, "
                    f"dwell {p['lr']['dwell_us']} us, seed {p['seed']}"
                ),
                time_increment_s=truth["scan"]["frame_interval_s"],
            ),
        )
        _imwrite_ome(
            hr_tmp,
            hr,
            metadata=_ome_metadata(
                axes="YX",
                pixel_size_um=hr_px,
                bits=bits,
                name=Path(hr_path).name,
                uid=_file_uuid("hr", specimen, p),
                description=(
                    f"fastscan simulated HR target: {specimen}, unidirectional scan, "
                    f"dwell {p['hr']['dwell_us']} us, {p['hr']['frames_averaged']} frames "
                    f"averaged, seed {p['seed']}"
                ),
            ),
        )
        truth_tmp.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info(
        "simulated %s FOV seed %d: render %.2f s, HR %.2f s, LR %d frames %.2f s, write %.2f s -> %s",
        specimen,
        p["seed"],
        t_render - start,
        t_hr - t_render,
        p["lr"]["frames"],
        t_lr - t_hr,
        time.perf_counter() - t_lr,
        lr_path,
    )
    return truth


def write_slide(
    path: PathLike,
    *,
    shape_px: tuple[int, int],
    seed: int,
    specimen: str = "tissue",
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Simulate a large single-plane image acquired in the fast mode and write a tiled OME-TIFF.

    The slide is scanned in strips, as a resonant strip scanner does: each strip is
    ``lr.pixels`` columns wide, every line of it a resonant line with the same geometry as the
    FOV series (sinusoidal x, bidirectional, ``lr.line_phase_px`` on odd rows), the stage
    stepping exactly one strip width between strips; y is linear at the nominal LR pitch. One
    LR dwell, LR noise, no drift.

    Parameters
    ----------
    path : path
        Output OME-TIFF (axes ``YX``, uint16, 256 x 256 tiles, pixel size ``FOV / lr.pixels``).
    shape_px : (int, int)
        Slide size ``(Y, X)`` in pixels; the last strip is cropped when ``X`` is not a multiple
        of ``lr.pixels``.
    seed : int
        Seeds everything; overrides ``params["seed"]``.
    specimen : {"tissue", "mitochondria"}, optional
        Kind of specimen.
    params : mapping, optional
        Overrides of :data:`DEFAULTS`.

    Returns
    -------
    info : dict
        JSON-serialisable description: ``shape_px``, ``pixel_size_um``, ``strip_width_px``,
        ``line_phase_px``, ``field_fraction``, ``specimen``, ``specimen_pixel_size_um``,
        ``seed``, ``params``.

    Notes
    -----
    The specimen is rendered block by block (``256`` rows by one strip, plus a halo) on a grid
    no finer than a quarter of the LR pixel, so memory stays at a few tens of MB besides the
    output image (2 bytes per pixel), and blocks join seamlessly.
    """
    start = time.perf_counter()
    p = resolve_params(params)
    p["seed"] = int(seed)
    height, width = (int(v) for v in shape_px)
    if height < 1 or width < 1:
        raise ValueError(f"shape_px must be positive, got {shape_px}")
    if specimen not in SPECIMENS:
        raise ValueError(f"unknown specimen kind {specimen!r}; choose one of {', '.join(SPECIMENS)}")
    rng = np.random.default_rng(p["seed"])
    lr = p["lr"]
    n = lr["pixels"]
    lr_px, _ = _pixel_sizes(p)
    ps = max(p["specimen_pixel_size_um"], lr_px / 4.0)
    margin = _MARGIN_UM
    scene = _build_scene(specimen, (height * lr_px + 2 * margin, width * lr_px + 2 * margin), rng)
    image = np.empty((height, width), dtype=np.uint16)
    edges = _lr_frame_edges(p, np.arange(_SLIDE_BLOCK_ROWS))
    pad = _SLIDE_PAD_UM
    strip_um = n * lr_px
    for x0 in range(0, width, n):
        x1 = min(x0 + n, width)
        # Scene coordinates of this strip's field origin.
        fx = margin + x0 * lr_px
        for y0 in range(0, height, _SLIDE_BLOCK_ROWS):
            y1 = min(y0 + _SLIDE_BLOCK_ROWS, height)
            fy = margin + y0 * lr_px
            origin = (fy - pad, fx - pad)
            shape = (
                int(math.ceil(((y1 - y0) * lr_px + 2 * pad) / ps)),
                int(math.ceil((strip_um + 2 * pad) / ps)),
            )
            block = scene.render(origin=origin, shape=shape, pixel_size=ps)
            integral = _cumsum_x(_blur(block, psf_fwhm_um=p["psf_fwhm_um"], pixel_size=ps))
            rows = np.arange(y1 - y0)
            # Rows keep their global parity: block starts are even, so local parity matches.
            signal = _sample_lines(
                integral,
                rows_um=(rows + 0.5) * lr_px,
                edges_um=edges[: y1 - y0],
                origin=(-pad, -pad),
                pixel_size=ps,
            )
            image[y0:y1, x0:x1] = detect(signal[:, : x1 - x0], dwell_us=lr["dwell_us"], detector=p["detector"], rng=rng)
    info = {
        "shape_px": [height, width],
        "pixel_size_um": lr_px,
        "strip_width_px": n,
        "line_phase_px": lr["line_phase_px"],
        "field_fraction": lr["field_fraction"],
        "specimen": specimen,
        "specimen_pixel_size_um": ps,
        "seed": p["seed"],
        "params": p,
    }
    with _atomic_paths(path) as (tmp,):
        _imwrite_ome(
            tmp,
            image,
            tile=(256, 256),
            metadata=_ome_metadata(
                axes="YX",
                pixel_size_um=lr_px,
                bits=p["detector"]["bits"],
                name=Path(path).name,
                uid=_file_uuid(f"slide {height}x{width}", specimen, p),
                description=(
                    f"fastscan simulated fast-mode slide: {specimen}, resonant bidirectional strips of {n} px, dwell {lr['dwell_us']} us, seed {p['seed']}"
                ),
            ),
        )
    logger.info(
        "simulated %s slide %d x %d px seed %d in %.2f s -> %s",
        specimen,
        height,
        width,
        p["seed"],
        time.perf_counter() - start,
        path,
    )
    return info
