"""The two acquisition modes: what the HR galvanometric raster and the LR resonant scan record.

The noise-free signal of each mode (the PSF blur, the pixel area of the HR raster, the dwell path
of each resonant pixel with the line phase and the drift) and the acquisitions that pass it
through the detector and return the ground truth of the geometry. The resonant geometry itself
is :mod:`fastscan.scan`'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from fastscan.scan import dwell_phases, row_phases_px
from fastscan.simulate.detector import detect
from fastscan.simulate.params import _FWHM_TO_SIGMA, _pixel_sizes, resolve_params

logger = logging.getLogger(__name__)

# Frames sampled per call of map_coordinates: bounds the memory of the coordinate arrays
# (about 8 MB per frame of 256 x 256) without changing the random stream.
_FRAME_CHUNK = 8


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
