"""The driver of the photon calibration, :func:`calibrate_series`: pixel selection, the photon
transfer line, then the offset and read noise (see :mod:`fastscan.photons` for the model)."""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from fastscan.photons.calibration import PhotonCalibration, _not_measurable
from fastscan.photons.dark import _offset_and_read_noise
from fastscan.photons.transfer import _MIN_BINS, _pixel_statistics, _transfer_line

#: Fewest frames with which a temporal variance exists.
MIN_FRAMES: Final[int] = 2


def calibrate_series(
    frames: np.ndarray,
    *,
    saturation: float | None = None,
    floor: float | None = None,
    signal: Any = None,
    bins: int = 24,
    min_pixels_per_bin: int | None = None,
    motion_sigma: float = 4.0,
    excess_sigma: float = 3.0,
) -> PhotonCalibration:
    """Measure gain, offset and read noise from the temporal noise of a static series.

    Parameters
    ----------
    frames : (T, Y, X) array_like
        The raw series in ADU, as ingested (not drift-corrected: see the module notes). A
        ``(Y, X)`` image counts as one frame.
    saturation : float, optional
        Top of the ADC range: pixels reaching it in any frame are left out. Defaults to the
        dtype maximum for integer data (pass ``2**significant_bits - 1`` for 12-bit data stored
        as uint16) and to no limit for floats.
    floor : float, optional
        Bottom of the ADC range, likewise; defaults to the dtype minimum for integer data
        (0 for unsigned) and to no limit for floats.
    signal : array_like, optional
        The expected noise-free value of every frame, ``(T, Y, X)`` (anything that slices like
        an array along T; read a few frames at a time), e.g. the registered mean moved back by
        each frame's drift. Its frame-to-frame changes are removed before the variances are
        taken, so a drifting specimen's edges do not add variance; the noise stays that of the
        raw frames.
    bins : int, optional
        Bins of the mean-variance curve.
    min_pixels_per_bin : int, optional
        Fewest pixels a bin needs to enter the fit; defaults to 0.1 % of the usable pixels,
        at least 10.
    motion_sigma : float, optional
        Pixels whose ordinary variance exceeds their successive-difference variance by more
        than ``motion_sigma / sqrt(T)`` (relative) have a temporal trend and are left out.
    excess_sigma : float, optional
        Pixels whose variance lies more than ``excess_sigma`` sampling standard deviations
        above the fitted line change beyond the noise (a blinking or passing structure) and
        are left out of a refit (see :func:`_fit_line`).

    Returns
    -------
    PhotonCalibration
        The measured detector. With fewer than 2 frames, no usable pixels, too few bins or a
        variance that does not grow with the signal, the gain (and all else) is NaN and
        ``reason`` says why; when only the dark level is unobservable, offset and read noise are
        NaN and ``reason`` says so. Never raises for such data.

    Raises
    ------
    ValueError
        For an array that is not 2-D or 3-D, a ``signal`` of another shape, ``bins`` below 4 or
        a non-positive ``motion_sigma``.
    """
    arr = _as_series(frames, signal, bins=bins, motion_sigma=motion_sigma, excess_sigma=excess_sigma)
    t, ny, nx = arr.shape
    n_pixels = ny * nx
    if t < MIN_FRAMES:
        return _not_measurable(
            t,
            n_pixels,
            f"{t} frame(s): a temporal variance needs at least {MIN_FRAMES} frames of the same field, so the photon transfer curve is not measurable",
        )
    saturation, floor = _adc_range(arr.dtype, saturation, floor)
    st = _pixel_statistics(arr, signal)
    pixels = _select_pixels(st, t=t, saturation=saturation, floor=floor, motion_sigma=motion_sigma)
    known = _transfer_line(st, pixels["usable"], t=t, n_pixels=n_pixels, bins=bins, min_pixels_per_bin=min_pixels_per_bin, excess_sigma=excess_sigma)
    if isinstance(known, PhotonCalibration):  # no line: nothing else is measurable either
        return known
    return _offset_and_read_noise(arr, signal, st, pixels, known, saturation=saturation, floor=floor)


def _as_series(frames: np.ndarray, signal: Any, *, bins: int, motion_sigma: float, excess_sigma: float) -> np.ndarray:
    """``frames`` as a ``(T, Y, X)`` array (an image is one frame), after the arguments' checks."""
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"frames must be a (T, Y, X) series, got shape {arr.shape}")
    if signal is not None and tuple(np.shape(signal)) != arr.shape:
        raise ValueError(f"signal has shape {tuple(np.shape(signal))}, frames {arr.shape}")
    if bins < _MIN_BINS:
        raise ValueError(f"bins must be at least {_MIN_BINS}, got {bins!r}")
    if not (motion_sigma > 0 and excess_sigma > 0):
        raise ValueError(f"motion_sigma and excess_sigma must be positive, got {motion_sigma!r}, {excess_sigma!r}")
    return arr


def _adc_range(dtype: np.dtype, saturation: float | None, floor: float | None) -> tuple[float | None, float | None]:
    """Top and bottom of the ADC range: the dtype's limits for integer data unless given."""
    integer = np.issubdtype(dtype, np.integer)
    if saturation is None and integer:
        saturation = float(np.iinfo(dtype).max)
    if floor is None and integer:
        floor = float(np.iinfo(dtype).min)
    return saturation, floor


def _select_pixels(st: dict[str, np.ndarray], *, t: int, saturation: float | None, floor: float | None, motion_sigma: float) -> dict[str, np.ndarray]:
    """Masks of the ``finite`` pixels, those ``at_floor`` of the ADC range, and the ``usable`` ones
    of the curve: unclipped, changing, and without a temporal trend."""
    mean, var = st["mean"], st["var"]
    finite = np.isfinite(mean) & np.isfinite(var)
    at_floor = (st["low"] <= floor) if floor is not None else np.zeros(mean.shape, bool)
    unclipped = finite & ~at_floor
    if saturation is not None:
        unclipped &= st["high"] < saturation
    # A pixel that never changes is dead, padded or replaced; it carries no noise.
    unclipped &= var > 0
    usable = unclipped.copy()
    if t >= 3:
        ratio = np.divide(st["var_total"], var, out=np.full_like(var, np.inf), where=var > 0)
        usable &= ratio <= 1.0 + motion_sigma / math.sqrt(t)
    return {"finite": finite, "at_floor": at_floor, "usable": usable}
