"""Applying sub-pixel translations: Fourier and spline shifts, rigid or along resonant lines.

Owns how an image is moved (:func:`apply_shifts` and the row and frame shifts the line phase,
the forward model and the drift use); how much to move it is measured elsewhere
(:mod:`fastscan.register.correlate`, :mod:`fastscan.register.drift`). The resonant scan model
itself lives in :mod:`fastscan.scan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from fastscan.register.arrays import _as_frames, _check_choice, _float_dtype
from fastscan.scan import display_columns, nominal_columns

# Extra samples added on each side before a Fourier shift. The periodic boundary of the padded
# array still rings, but the ringing decays as 1/distance, so a few pixels keep it out of the crop.
_FOURIER_PAD = 8

ShiftMethod = Literal["fourier", "spline"]


def _shift_array(
    array: np.ndarray,
    shift: Sequence[float],
    *,
    method: ShiftMethod = "fourier",
    order: int = 3,
    mode: str = "reflect",
) -> np.ndarray:
    """Translate ``array`` by ``shift`` (one value per axis, in pixels).

    The Fourier method shifts a reflect-padded copy and crops it. It keeps the noise power of
    every frame unchanged whatever the fractional shift, which matters for training data: linear
    interpolation halves the noise variance at a half-pixel shift and would hand the network
    frames with shift-dependent noise. The spline method is local and does not ring at the borders.
    """
    dtype = _float_dtype(array.dtype)
    array = np.asarray(array, dtype=dtype)
    shift = np.asarray(shift, dtype=np.float64)
    if shift.shape != (array.ndim,):
        raise ValueError(f"shift needs one value per axis ({array.ndim}), got {shift.tolist()}")
    if not np.any(shift):
        return array.copy()
    if method == "spline":
        return ndimage.shift(array, shift, order=order, mode=mode, prefilter=order > 1).astype(dtype, copy=False)
    _check_choice("method", method, ("fourier", "spline"))

    axes = tuple(int(a) for a in np.flatnonzero(shift))
    pads = [(0, 0)] * array.ndim
    for ax in axes:
        n = array.shape[ax]
        p = min(int(math.ceil(abs(shift[ax]))) + _FOURIER_PAD, n - 1)
        # Pad on to a length with small prime factors: n + 2p is often twice a prime (274 for
        # 256 columns), for which the FFT is several times slower.
        extra = min(sp_fft.next_fast_len(n + 2 * p, real=True) - (n + 2 * p), n - 1 - p)
        pads[ax] = (p, p + extra)
    padded = np.pad(array, pads, mode="symmetric") if any(p for p, _ in pads) else array
    sizes = [padded.shape[ax] for ax in axes]
    # Real-input transforms: the last shifted axis keeps only non-negative frequencies.
    spectrum = sp_fft.rfftn(padded, axes=axes)
    for ax in axes:
        n = padded.shape[ax]
        freq = sp_fft.rfftfreq(n) if ax == axes[-1] else sp_fft.fftfreq(n)
        ramp = np.exp(-2j * np.pi * shift[ax] * freq).astype(spectrum.dtype)
        ramp_shape = [1] * array.ndim
        ramp_shape[ax] = -1
        spectrum *= ramp.reshape(ramp_shape)
    shifted = sp_fft.irfftn(spectrum, s=sizes, axes=axes)
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, array.shape, strict=True))
    return np.ascontiguousarray(shifted[crop], dtype=dtype)


def _shift_rows_x(rows: np.ndarray, shift_px: float, *, method: ShiftMethod, order: int) -> np.ndarray:
    """Shift every row of ``rows`` (``(..., n, X)``) by ``shift_px`` along x."""
    shift = [0.0] * rows.ndim
    shift[-1] = shift_px
    return _shift_array(rows, shift, method=method, order=order, mode="reflect")


# --------------------------------------------------------------------------------------------
# shifting resonant frames (scan model: fastscan.scan)


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Fold integer indices into ``[0, n)`` with the ``d c b a | a b c d`` (symmetric) rule."""
    m = np.mod(index, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _resample_columns(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Every row of ``image`` (``(..., X)``) read at the fractional columns ``positions``.

    Catmull-Rom cubic convolution (4 taps, interpolating, no prefilter) with a symmetric
    boundary; a column whose position is an integer is copied exactly.
    """
    n = image.shape[-1]
    i0 = np.floor(positions).astype(np.intp)
    f = positions - i0
    f2, f3 = f * f, f * f * f
    weights = (
        0.5 * (-f3 + 2.0 * f2 - f),
        0.5 * (3.0 * f3 - 5.0 * f2 + 2.0),
        0.5 * (-3.0 * f3 + 4.0 * f2 + f),
        0.5 * (f3 - f2),
    )
    out = np.zeros(image.shape, dtype=image.dtype)
    for k, w in zip((-1, 0, 1, 2), weights, strict=True):
        out += image[..., _reflect_index(i0 + k, n)] * w.astype(image.dtype)
    return out


def _shift_resonant(
    frame: np.ndarray,
    shift: Sequence[float],
    field_fraction: float,
    *,
    method: ShiftMethod,
    order: int,
    mode: str,
) -> np.ndarray:
    """Translate a resonant frame by ``[dy, dx]`` with ``dx`` in nominal pixels.

    The content of display column ``j`` moves to where nominal column ``x_j + dx`` is displayed,
    so the shift in display pixels varies along the line (larger towards the ends, where columns
    are narrow). The Fourier method shifts the whole frame by ``dy`` and by the display shift of
    the centre of the line, keeping the noise power there, and resamples the columns for the
    rest, which is zero at the centre and grows towards the ends (cubic convolution: the noise
    variance of a column read halfway between two samples drops by about a third). The spline
    method samples the exact coordinates directly. The line phase changes the shift of the odd
    rows by less than 0.05 px at the outermost columns for a drift of one pixel, and is ignored.
    """
    frame = np.asarray(frame, dtype=_float_dtype(frame.dtype))
    dy, dx = (float(v) for v in shift)
    n = frame.shape[-1]
    if not dx:
        return _shift_array(frame, [dy, 0.0], method=method, order=order, mode=mode)
    source = display_columns(nominal_columns(n, field_fraction) - dx, n, field_fraction)
    if method == "spline":
        rows = np.arange(frame.shape[0], dtype=np.float64) - dy
        coords = np.stack(np.meshgrid(rows, source, indexing="ij"))
        return ndimage.map_coordinates(frame, coords, order=order, mode=mode, prefilter=order > 1).astype(frame.dtype, copy=False)
    _check_choice("method", method, ("fourier", "spline"))
    centre = 0.5 * (n - 1)
    centre_shift = centre - float(display_columns(np.array(centre - dx), n, field_fraction))
    base = _shift_array(frame, [dy, centre_shift], method="fourier")
    # base[j] = frame[j - centre_shift], so frame[source_j] = base[source_j + centre_shift].
    return _resample_columns(base, source + centre_shift)


def apply_shifts(
    frames: np.ndarray,
    shifts: np.ndarray,
    *,
    method: ShiftMethod = "fourier",
    order: int = 3,
    mode: str = "reflect",
    field_fraction: float = 0.0,
) -> np.ndarray:
    """Translate each frame by its own shift.

    Parameters
    ----------
    frames : (T, Y, X) ndarray
        Frames to translate (any real dtype).
    shifts : (T, 2) array_like
        ``[dy, dx]`` per frame, in pixels, as returned by :func:`estimate_drift` (with the same
        ``field_fraction``).
    method : {"fourier", "spline"}, optional
        ``"fourier"`` multiplies the spectrum of a reflect-padded frame by a phase ramp: exact
        for band-limited content and noise-power preserving. ``"spline"`` uses
        :func:`scipy.ndimage.shift` with ``order`` and ``mode``.
    order : int, optional
        Spline order for ``method="spline"``.
    mode : str, optional
        Boundary mode for ``method="spline"`` (see :func:`scipy.ndimage.shift`).
    field_fraction : float, optional
        Resonant scan model of the frames (see :func:`forward_model`). With a non-zero value,
        ``dx`` is in nominal (linear-grid) pixels and each column moves by its own display
        shift, so content anywhere along the line moves by the same physical distance; the
        Fourier method then resamples the columns away from the centre of the line with a
        cubic kernel (see Notes). 0 (the default) is a rigid translation in display pixels.

    Returns
    -------
    shifted : (T, Y, X) ndarray
        float32 (float64 when ``frames`` is float64).

    Notes
    -----
    A resonant frame displays the nominal grid stretched at the centre and compressed towards
    the ends of each line, so a specimen displacement of ``dx`` nominal pixels moves content by
    ``dx / s`` display pixels where a column is ``s`` nominal pixels wide: ``0.76 dx`` at the
    centre and ``2.4 dx`` at the ends of a line for a field fraction of 0.8. A rigid display
    shift can only match one of them. With ``field_fraction`` the frame is shifted in Fourier
    space by ``dy`` and by the display shift of the line centre, and the columns are then
    resampled for the remainder, which is zero at the centre.
    """
    _check_choice("method", method, ("fourier", "spline"))
    frames = _as_frames(frames)
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.shape != (frames.shape[0], 2):
        raise ValueError(f"shifts must have shape ({frames.shape[0]}, 2), got {shifts.shape}")
    out = np.empty(frames.shape, dtype=_float_dtype(frames.dtype))
    for t in range(frames.shape[0]):
        if field_fraction:
            out[t] = _shift_resonant(frames[t], shifts[t], field_fraction, method=method, order=order, mode=mode)
        else:
            out[t] = _shift_array(frames[t], shifts[t], method=method, order=order, mode=mode)
    return out
