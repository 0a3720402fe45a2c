"""Registration of video-rate LR series and of their HR targets.

A video-rate FOV arrives as a noisy LR series ``(T, Y, X)`` acquired with a bidirectional
resonant scan and one slow, high-resolution HR image ``(scale*Y, scale*X)`` of the same field.
Before the pair can be tiled for training this module

1. measures the line phase of the bidirectional scan (odd rows against even rows); the distortion
   is kept in the training input because the network learns to undo it, so the value is stored for
   information and used by the forward model and the classical baselines;
2. estimates and removes per-frame drift against a robust temporal reference;
3. moves the HR target onto the grid of the drift-corrected LR series through a forward model of
   the LR acquisition (:func:`forward_model`), and scores the match with a normalised
   cross-correlation that decides whether the FOV enters the training set.

Shift conventions follow :func:`skimage.registration.phase_cross_correlation`: an estimated shift
is the translation that, applied to the moving image with :func:`apply_shifts` (or
:func:`scipy.ndimage.shift`), registers it with the reference. Shifts are ``[dy, dx]`` in pixels
of the array they apply to.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import zarr
from scipy import fft as sp_fft
from scipy import ndimage
from scipy.signal import windows
from skimage.registration import phase_cross_correlation

__all__ = [
    "QC_COLUMNS",
    "align_hr_to_lr",
    "apply_shifts",
    "correct_line_phase",
    "estimate_drift",
    "estimate_line_phase",
    "fit_scan_model",
    "forward_model",
    "gather_qc",
    "normalised_cross_correlation",
    "read_qc",
    "register_fov",
    "write_qc",
]

logger = logging.getLogger(__name__)

#: Column order of the registration QC tables (per FOV and gathered).
QC_COLUMNS: tuple[str, ...] = (
    "sample",
    "session",
    "fov",
    "frames",
    "ncc",
    "line_phase_px",
    "field_fraction",
    "hr_shift_dy",
    "hr_shift_dx",
    "drift_rms_px",
    "residual_drift_px",
    "passed",
)

# Extra samples added on each side before a Fourier shift. The periodic boundary of the padded
# array still rings, but the ringing decays as 1/distance, so a few pixels keep it out of the crop.
_FOURIER_PAD = 8

ShiftMethod = Literal["fourier", "spline"]
Normalization = Literal["phase"] | None


# --------------------------------------------------------------------------------------------
# helpers


def _float_dtype(dtype: np.dtype | type) -> np.dtype:
    """Working precision for ``dtype``: float64 stays float64, everything else is float32.

    float32 is exact for the 12- and 16-bit integer data of the scanners, and halves memory.
    """
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _taper(shape: Sequence[int], alpha: float) -> np.ndarray | None:
    """Separable Tukey window, or ``None`` when ``alpha`` is 0.

    Microscopy frames are not periodic: the jump at the frame border is the same in every frame
    and would pull the circular cross-correlation towards zero shift. Tapering the borders of the
    mean-subtracted images removes that jump while keeping the centre at full weight.
    """
    if alpha <= 0:
        return None
    win = np.ones((), dtype=np.float32)
    for n in shape:
        win = np.multiply.outer(win, windows.tukey(n, alpha).astype(np.float32))
    return win


def _prepare(image: np.ndarray, *, smooth_sigma: float, window: np.ndarray | None) -> np.ndarray:
    """Smooth, remove the mean and taper ``image`` before a cross-correlation."""
    out = np.asarray(image, dtype=_float_dtype(image.dtype))
    if smooth_sigma > 0:
        # A Gaussian of about 1 px suppresses the white Poisson noise of single frames; it is a
        # common linear filter of reference and moving image, so it cannot bias the peak position.
        out = ndimage.gaussian_filter(out, smooth_sigma, mode="reflect")
    out = out - out.mean(dtype=np.float64).astype(out.dtype)
    if window is not None:
        out = out * window
    return out


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


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
        return ndimage.shift(array, shift, order=order, mode=mode, prefilter=order > 1).astype(
            dtype, copy=False
        )
    _check_choice("method", method, ("fourier", "spline"))

    axes = tuple(int(a) for a in np.flatnonzero(shift))
    pads = [(0, 0)] * array.ndim
    for ax in axes:
        p = min(int(math.ceil(abs(shift[ax]))) + _FOURIER_PAD, array.shape[ax] - 1)
        pads[ax] = (p, p)
    padded = np.pad(array, pads, mode="symmetric") if any(p for p, _ in pads) else array
    spectrum = sp_fft.fftn(padded, axes=axes)
    for ax in axes:
        freq = sp_fft.fftfreq(padded.shape[ax]).astype(dtype)
        ramp = np.exp(-2j * np.pi * shift[ax] * freq).astype(spectrum.dtype)
        ramp_shape = [1] * array.ndim
        ramp_shape[ax] = -1
        spectrum *= ramp.reshape(ramp_shape)
    shifted = sp_fft.ifftn(spectrum, axes=axes).real
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, array.shape, strict=True))
    return np.ascontiguousarray(shifted[crop], dtype=dtype)


def _shift_rows_x(
    rows: np.ndarray, shift_px: float, *, method: ShiftMethod, order: int
) -> np.ndarray:
    """Shift every row of ``rows`` (``(..., n, X)``) by ``shift_px`` along x."""
    shift = [0.0] * rows.ndim
    shift[-1] = shift_px
    return _shift_array(rows, shift, method=method, order=order, mode="reflect")


def _upsampled_peak_1d(cross_spectrum: np.ndarray, upsample_factor: int) -> float:
    """Sub-pixel position of the maximum of the circular correlation with ``cross_spectrum``.

    Equivalent to zero-padding the spectrum ``upsample_factor`` times and taking the argmax of
    the inverse FFT, but only evaluates the 1.5-pixel neighbourhood of the coarse peak with a
    matrix-multiply DFT, as :func:`skimage.registration.phase_cross_correlation` does in 2-D
    (Guizar-Sicairos et al. 2008).
    """
    n = cross_spectrum.shape[-1]
    spectrum = cross_spectrum.astype(np.complex128, copy=True)
    if n % 2 == 0:
        # The Nyquist term of a real signal has no defined phase at fractional positions.
        spectrum[n // 2] = 0
    coarse = int(np.argmax(sp_fft.ifft(spectrum).real))
    if coarse > n // 2:
        coarse -= n
    if upsample_factor <= 1:
        return float(coarse)
    half = int(math.ceil(1.5 * upsample_factor))
    positions = coarse + np.arange(-half, half + 1) / upsample_factor
    kernel = np.exp(2j * np.pi * np.outer(positions, sp_fft.fftfreq(n)))
    fine = (kernel @ spectrum).real
    return float(positions[int(np.argmax(fine))])


def _pcc(
    reference_f: np.ndarray,
    moving_f: np.ndarray,
    *,
    upsample_factor: int,
    normalization: Normalization,
) -> np.ndarray:
    shift, _, _ = phase_cross_correlation(
        reference_f,
        moving_f,
        upsample_factor=upsample_factor,
        space="fourier",
        normalization=normalization,
    )
    return np.asarray(shift, dtype=np.float64)


def _as_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"{name} must be a (T, Y, X) array, got shape {frames.shape}")
    return frames


# --------------------------------------------------------------------------------------------
# line phase of the bidirectional scan


def estimate_line_phase(
    image: np.ndarray,
    *,
    upsample_factor: int = 20,
    taper: float = 0.25,
    normalization: Normalization = None,
) -> float:
    """Sub-pixel x displacement of the odd rows against the even rows of a bidirectional scan.

    Parameters
    ----------
    image : (Y, X) or (T, Y, X) ndarray
        A bidirectionally scanned frame, or a series whose temporal mean is used. Row 0 is taken
        as an even (forward) line. Use the raw series: drift correction with fractional y shifts
        mixes forward and backward lines, while drift alone only blurs both sets alike.
    upsample_factor : int, optional
        The shift is resolved to ``1 / upsample_factor`` of a pixel.
    taper : float, optional
        Tukey window parameter applied along x (0 disables it); see Notes.
    normalization : {None, "phase"}, optional
        ``None`` weights each frequency by its signal power, which is what keeps the estimate
        stable at a few photons per pixel; ``"phase"`` whitens the spectrum (classic phase
        correlation), which amplifies high-frequency noise.

    Returns
    -------
    line_phase : float
        Displacement, in pixels along x, of the odd rows relative to the even rows. Positive
        means the content of the odd rows sits at larger x than it should: an odd row ``r``
        reads ``truth(x - line_phase)``. :func:`correct_line_phase` with this value undoes it.

    Notes
    -----
    Odd row ``2k+1`` lies halfway between even rows ``2k`` and ``2k+2``, so the two sets never
    sample the same line. Each odd row is compared with the mean of the even rows above and
    below it and, symmetrically, each interior even row with the mean of its odd neighbours; the
    vertical averaging is a low-pass filter along y and leaves the x displacement untouched.
    The cross-power spectra along x of all row pairs are summed and the 1-D correlation peak is
    refined with an upsampled DFT [1]_. The borders are tapered because the border of a
    microscopy frame is not periodic and the same for both row sets, which would bias the
    circular correlation towards zero.

    A resonant scanner's phase error varies along x (the beam slows down towards the turning
    points); this returns one value, dominated by the centre of the line.

    References
    ----------
    .. [1] Manuel Guizar-Sicairos, Samuel T. Thurman, and James R. Fienup, "Efficient subpixel
           image registration algorithms," Optics Letters 33, 156-158 (2008).
           :DOI:`10.1364/OL.33.000156`
    """
    _check_choice("normalization", normalization, (None, "phase"))
    image = np.asarray(image)
    if image.ndim == 3:
        image = image.mean(axis=0, dtype=_float_dtype(image.dtype))
    if image.ndim != 2:
        raise ValueError(f"image must be (Y, X) or (T, Y, X), got shape {image.shape}")
    if image.shape[0] < 4:
        raise ValueError(
            f"need at least 4 rows to compare odd with even rows, got {image.shape[0]}"
        )
    image = np.asarray(image, dtype=_float_dtype(image.dtype))
    even, odd = image[0::2], image[1::2]

    # odd row k (y = 2k+1) between even rows k and k+1
    n1 = min(len(odd), len(even) - 1)
    odd_a = odd[:n1]
    even_a = 0.5 * (even[:n1] + even[1 : n1 + 1])
    # even row k (y = 2k) between odd rows k-1 and k
    n2 = min(len(even) - 1, len(odd) - 1)
    even_b = even[1 : n2 + 1]
    odd_b = 0.5 * (odd[:n2] + odd[1 : n2 + 1])

    moving = np.concatenate([odd_a, odd_b])
    reference = np.concatenate([even_a, even_b])
    # Per-row means carry no x information and would dominate an unnormalised spectrum.
    moving = moving - moving.mean(axis=1, keepdims=True)
    reference = reference - reference.mean(axis=1, keepdims=True)
    window = _taper((image.shape[1],), taper)
    if window is not None:
        moving = moving * window
        reference = reference * window
    # F(odd) * conj(F(even)) peaks at +line_phase when odd(x) = even(x - line_phase).
    cross = (sp_fft.fft(moving, axis=1) * sp_fft.fft(reference, axis=1).conj()).sum(axis=0)
    if normalization == "phase":
        cross = cross / np.maximum(np.abs(cross), np.finfo(np.float32).eps)
    return _upsampled_peak_1d(cross, upsample_factor)


def correct_line_phase(
    image_or_series: np.ndarray,
    shift_px: float,
    *,
    symmetric: bool = False,
    method: ShiftMethod = "fourier",
    order: int = 3,
) -> np.ndarray:
    """Undo a bidirectional line phase by shifting the odd rows by ``-shift_px`` along x.

    Parameters
    ----------
    image_or_series : (..., Y, X) ndarray
        A frame or a series of frames; row 0 of each frame is an even line.
    shift_px : float
        Line phase as returned by :func:`estimate_line_phase`.
    symmetric : bool, optional
        If True, even rows move by ``+shift_px / 2`` and odd rows by ``-shift_px / 2`` instead.
        The result then lies on the mean geometry of both scan directions, the geometry that
        :func:`forward_model` assumes and hence the one the registered HR target is moved to;
        with the default the result lies on the even rows' geometry, ``shift_px / 2`` pixels
        towards -x from it.
    method : {"fourier", "spline"}, optional
        Fourier shift of reflect-padded rows (keeps the noise power) or spline interpolation.
    order : int, optional
        Spline order for ``method="spline"``.

    Returns
    -------
    corrected : ndarray
        Floating-point copy (float64 for float64 input, float32 otherwise); unless
        ``symmetric``, even rows are copied unchanged.
    """
    image = np.asarray(image_or_series)
    if image.ndim < 2:
        raise ValueError(f"expected (..., Y, X), got shape {image.shape}")
    out = image.astype(_float_dtype(image.dtype), copy=True)
    if not shift_px:
        return out
    odd_shift = -0.5 * float(shift_px) if symmetric else -float(shift_px)
    out[..., 1::2, :] = _shift_rows_x(out[..., 1::2, :], odd_shift, method=method, order=order)
    if symmetric:
        out[..., 0::2, :] = _shift_rows_x(
            out[..., 0::2, :], 0.5 * float(shift_px), method=method, order=order
        )
    return out


# --------------------------------------------------------------------------------------------
# drift


def apply_shifts(
    frames: np.ndarray,
    shifts: np.ndarray,
    *,
    method: ShiftMethod = "fourier",
    order: int = 3,
    mode: str = "reflect",
) -> np.ndarray:
    """Translate each frame by its own shift.

    Parameters
    ----------
    frames : (T, Y, X) ndarray
        Frames to translate (any real dtype).
    shifts : (T, 2) array_like
        ``[dy, dx]`` per frame, in pixels, as returned by :func:`estimate_drift`.
    method : {"fourier", "spline"}, optional
        ``"fourier"`` multiplies the spectrum of a reflect-padded frame by a phase ramp: exact
        for band-limited content and noise-power preserving. ``"spline"`` uses
        :func:`scipy.ndimage.shift` with ``order`` and ``mode``.
    order : int, optional
        Spline order for ``method="spline"``.
    mode : str, optional
        Boundary mode for ``method="spline"`` (see :func:`scipy.ndimage.shift`).

    Returns
    -------
    shifted : (T, Y, X) ndarray
        float32 (float64 when ``frames`` is float64).
    """
    _check_choice("method", method, ("fourier", "spline"))
    frames = _as_frames(frames)
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.shape != (frames.shape[0], 2):
        raise ValueError(f"shifts must have shape ({frames.shape[0]}, 2), got {shifts.shape}")
    out = np.empty(frames.shape, dtype=_float_dtype(frames.dtype))
    for t in range(frames.shape[0]):
        out[t] = _shift_array(frames[t], shifts[t], method=method, order=order, mode=mode)
    return out


def _reference(frames: np.ndarray, reference: str) -> np.ndarray:
    if reference == "median":
        return np.median(frames, axis=0).astype(frames.dtype, copy=False)
    return frames.mean(axis=0, dtype=np.float64).astype(frames.dtype)


def estimate_drift(
    frames: np.ndarray,
    *,
    reference: Literal["median", "mean"] = "median",
    upsample_factor: int = 20,
    iterations: int = 2,
    smooth_sigma: float = 1.0,
    taper: float = 0.25,
    normalization: Normalization = None,
) -> np.ndarray:
    """Per-frame sub-pixel translation of a series against its robust temporal reference.

    Parameters
    ----------
    frames : (T, Y, X) ndarray
        The series (any real dtype, typically photon counts).
    reference : {"median", "mean"}, optional
        Temporal statistic used as reference. The median ignores transient events (a frame
        with a bright blob passing through) at the cost of a slightly noisier reference.
    upsample_factor : int, optional
        Shifts are resolved to ``1 / upsample_factor`` of a pixel.
    iterations : int, optional
        Number of estimation passes. Each pass after the first aligns the frames with the current
        estimate, rebuilds the reference from them (sharper than one blurred by drift) and adds
        the residual shifts it measures.
    smooth_sigma : float, optional
        Gaussian pre-smoothing of frames and reference, in pixels (0 disables it).
    taper : float, optional
        Tukey window parameter applied to both images (0 disables it).
    normalization : {None, "phase"}, optional
        Passed to :func:`skimage.registration.phase_cross_correlation`. ``None`` (plain
        cross-correlation) is the default because phase normalisation whitens the spectrum and
        so undoes the pre-smoothing, giving the white Poisson noise the same weight as signal.

    Returns
    -------
    drift : (T, 2) ndarray of float64
        ``drift[t] = [dy, dx]`` is the shift that, applied to frame ``t`` with
        :func:`apply_shifts` or :func:`scipy.ndimage.shift`, aligns it with the reference. The
        reference is the temporal median (or mean) of the series, so the drift is relative to
        the series' robust centre position, not to the first frame; its mean is not removed.

    Notes
    -----
    Every frame is compared with one reference (not frame-to-frame), so errors do not
    accumulate over the series. Each pass costs, per frame, one FFT and one inverse FFT of the
    frame, an upsampled DFT of ``(1.5 * upsample_factor)**2`` points [1]_ and, after the first
    pass, one Fourier shift.

    References
    ----------
    .. [1] Manuel Guizar-Sicairos, Samuel T. Thurman, and James R. Fienup, "Efficient subpixel
           image registration algorithms," Optics Letters 33, 156-158 (2008).
           :DOI:`10.1364/OL.33.000156`
    """
    _check_choice("reference", reference, ("median", "mean"))
    _check_choice("normalization", normalization, (None, "phase"))
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    frames = _as_frames(frames)
    dtype = _float_dtype(frames.dtype)
    smoothed = np.asarray(frames, dtype=dtype)
    if smooth_sigma > 0:
        smoothed = ndimage.gaussian_filter(
            smoothed, (0, smooth_sigma, smooth_sigma), mode="reflect"
        )
    window = _taper(frames.shape[1:], taper)

    drift = np.zeros((frames.shape[0], 2), dtype=np.float64)
    aligned = smoothed
    for it in range(iterations):
        if it:
            # Re-estimating the residual of already aligned frames, rather than the full shift,
            # also removes the small pull of the taper towards zero shift (about 1 % of the
            # shift for a 0.25 Tukey window): the residual is near zero, so is its bias.
            aligned = apply_shifts(smoothed, drift)
        ref_f = sp_fft.fft2(_prepare(_reference(aligned, reference), smooth_sigma=0, window=window))
        for t in range(frames.shape[0]):
            frame_f = sp_fft.fft2(_prepare(aligned[t], smooth_sigma=0, window=window))
            drift[t] += _pcc(
                ref_f, frame_f, upsample_factor=upsample_factor, normalization=normalization
            )
        logger.debug("drift pass %d/%d: rms %.3f px", it + 1, iterations, _rms(drift))
    return drift


def _rms(shifts: np.ndarray) -> float:
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(shifts**2, axis=1)))) if len(shifts) else 0.0


# --------------------------------------------------------------------------------------------
# HR target onto the LR grid


def forward_model(
    hr: np.ndarray,
    *,
    scale: int = 2,
    blur_sigma: float = 0.0,
    line_phase_px: float = 0.0,
    field_fraction: float = 0.0,
) -> np.ndarray:
    """Predict what the LR acquisition would record of the HR image (noise-free).

    This is the seam for a fitted model of the resonant scan: everything that compares HR with
    LR goes through this function.

    Parameters
    ----------
    hr : (scale*Y, scale*X) ndarray
        HR image.
    scale : int, optional
        HR pixels per LR pixel along each axis.
    blur_sigma : float, optional
        Extra Gaussian blur in LR pixels (detector bandwidth, a softer focus at video rate),
        applied on the HR grid before sampling.
    line_phase_px : float, optional
        Bidirectional line phase in LR pixels (see :func:`estimate_line_phase`). Applied
        symmetrically, even rows by ``-line_phase_px / 2`` and odd rows by ``+line_phase_px / 2``,
        so the mean position of the two scan directions stays on the HR geometry.
    field_fraction : float, optional
        Fraction of the resonant half-period used for imaging. Display column ``j`` of a
        resonant scan shows the nominal column
        :func:`fastscan.simulate.resonant_pixel_coordinates` gives (wide pixels at the centre,
        compressed at the edges); 0 means a linear scan.

    Returns
    -------
    lr : (Y, X) ndarray
        float32 (float64 for float64 input).

    Notes
    -----
    An LR pixel ``i`` integrates HR pixels ``scale*i ... scale*i + scale - 1``, so sampling is
    a block average. A shift of ``d`` HR pixels on the HR grid is a shift of ``d / scale`` LR
    pixels after this model.
    """
    hr = np.asarray(hr)
    if hr.ndim != 2:
        raise ValueError(f"hr must be a (Y, X) image, got shape {hr.shape}")
    scale = int(scale)
    if scale < 1 or hr.shape[0] % scale or hr.shape[1] % scale:
        raise ValueError(
            f"hr shape {hr.shape} is not a multiple of scale={scale}; crop or pad the HR image"
        )
    img = hr.astype(_float_dtype(hr.dtype), copy=False)
    if blur_sigma > 0:
        img = ndimage.gaussian_filter(img, blur_sigma * scale, mode="reflect")
    ny, nx = img.shape[0] // scale, img.shape[1] // scale
    lr = img.reshape(ny, scale, nx, scale).mean(axis=(1, 3), dtype=np.float64).astype(img.dtype)
    if field_fraction:
        from fastscan.simulate import resonant_pixel_coordinates

        xs = resonant_pixel_coordinates(nx, field_fraction=field_fraction)
        coords = np.stack(np.meshgrid(np.arange(ny, dtype=np.float64), xs, indexing="ij"))
        lr = ndimage.map_coordinates(lr, coords, order=1, mode="nearest").astype(lr.dtype)
    if line_phase_px:
        lr[0::2] = _shift_rows_x(lr[0::2], -0.5 * line_phase_px, method="fourier", order=3)
        lr[1::2] = _shift_rows_x(lr[1::2], 0.5 * line_phase_px, method="fourier", order=3)
    return lr


def align_hr_to_lr(
    hr: np.ndarray,
    lr_mean: np.ndarray,
    *,
    scale: int = 2,
    upsample_factor: int = 20,
    blur_sigma: float = 0.0,
    line_phase_px: float = 0.0,
    field_fraction: float = 0.0,
    iterations: int = 2,
    smooth_sigma: float = 1.0,
    taper: float = 0.25,
    normalization: Normalization = None,
) -> np.ndarray:
    """Translation that moves the HR target onto the grid of the LR series.

    Parameters
    ----------
    hr : (scale*Y, scale*X) ndarray
        HR target.
    lr_mean : (Y, X) ndarray
        Temporal mean of the drift-corrected LR series.
    scale : int, optional
        HR pixels per LR pixel.
    upsample_factor : int, optional
        Resolution of the estimate: ``1 / upsample_factor`` LR pixel.
    blur_sigma, line_phase_px, field_fraction : float, optional
        Passed to :func:`forward_model`.
    iterations : int, optional
        Estimation passes; each pass after the first moves the HR image by the current estimate
        and adds the residual shift it measures.
    smooth_sigma : float, optional
        Gaussian pre-smoothing in LR pixels applied to both images before correlation.
    taper : float, optional
        Tukey window parameter applied to both images (0 disables it).
    normalization : {None, "phase"}, optional
        Passed to :func:`skimage.registration.phase_cross_correlation`.

    Returns
    -------
    hr_shift : (2,) ndarray of float64
        ``[dy, dx]`` in HR pixels: ``apply_shifts(hr[None], hr_shift[None])[0]`` lies on the LR
        grid, i.e. its :func:`forward_model` matches ``lr_mean``.

    Notes
    -----
    The HR image is forward-modelled into LR geometry and phase-correlated with the LR mean; the
    LR-pixel shift is multiplied by ``scale``. The estimate is thus limited by the LR sampling,
    which is adequate because the HR target only has to agree with the LR grid at that scale.
    """
    _check_choice("normalization", normalization, (None, "phase"))
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    lr_mean = np.asarray(lr_mean)
    hr = np.asarray(hr)
    model_shape = (hr.shape[0] // scale, hr.shape[1] // scale) if hr.ndim == 2 else hr.shape
    if model_shape != lr_mean.shape:
        raise ValueError(
            f"hr shape {hr.shape} / scale {scale} = {model_shape} does not match the LR "
            f"shape {lr_mean.shape}"
        )
    window = _taper(lr_mean.shape, taper)
    ref_f = sp_fft.fft2(_prepare(lr_mean, smooth_sigma=smooth_sigma, window=window))
    # A shift measured in resonant display columns is, near the centre where most of the
    # correlation comes from, phi/sin(phi) nominal columns wide; iterating removes the rest.
    half = 0.5 * math.pi * field_fraction
    gain = np.array([1.0, half / math.sin(half) if field_fraction else 1.0])
    hr_shift = np.zeros(2, dtype=np.float64)
    moved = hr
    for it in range(iterations):
        if it:
            # As in estimate_drift: measuring the residual of the already moved HR removes the
            # taper's pull towards zero shift.
            moved = _shift_array(hr, hr_shift)
        model = forward_model(
            moved,
            scale=scale,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            field_fraction=field_fraction,
        )
        mov_f = sp_fft.fft2(_prepare(model, smooth_sigma=smooth_sigma, window=window))
        shift_lr = _pcc(ref_f, mov_f, upsample_factor=upsample_factor, normalization=normalization)
        hr_shift += shift_lr * gain * scale
    return hr_shift


#: Field fractions tried by :func:`fit_scan_model` (0 is a linear scan).
FIELD_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(19))


def fit_scan_model(
    hr: np.ndarray,
    lr_mean: np.ndarray,
    *,
    scale: int = 2,
    line_phase_px: float = 0.0,
    field_fractions: Sequence[float] = FIELD_FRACTIONS,
    upsample_factor: int = 20,
    blur_sigma: float = 0.0,
    smooth_sigma: float = 1.0,
    iterations: int = 3,
) -> tuple[float, np.ndarray, float]:
    """Fit the resonant field fraction and the HR shift by forward-modelling the HR target.

    A rigid shift estimated between a distorted LR mean and the undistorted HR target is biased
    (the edges of a resonant frame are stretched), so each candidate field fraction is
    forward-modelled, aligned, and scored by its normalised cross-correlation with the LR mean.

    Returns
    -------
    field_fraction : float
        The best candidate.
    hr_shift : (2,) ndarray
        ``[dy, dx]`` in HR pixels for that candidate (see :func:`align_hr_to_lr`).
    ncc : float
        Its normalised cross-correlation (inner region, away from shifted-in borders).
    """
    best: tuple[float, np.ndarray, float] | None = None
    ny, nx = lr_mean.shape
    for ff in field_fractions:
        shift = align_hr_to_lr(
            hr,
            lr_mean,
            scale=scale,
            upsample_factor=upsample_factor,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            field_fraction=ff,
            smooth_sigma=smooth_sigma,
            iterations=iterations,
        )
        model = forward_model(
            _shift_array(hr, shift),
            scale=scale,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            field_fraction=ff,
        )
        m = min(int(math.ceil(np.abs(shift).max() / scale)) + 1, ny // 4, nx // 4)
        ncc = normalised_cross_correlation(model[m : ny - m, m : nx - m], lr_mean[m : ny - m, m : nx - m])
        logger.debug("field fraction %.2f: shift %s, ncc %.4f", ff, shift, ncc)
        if best is None or ncc > best[2]:
            best = (float(ff), shift, float(ncc))
    assert best is not None, "field_fractions must not be empty"
    return best


def normalised_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation of two images of the same shape.

    Parameters
    ----------
    a, b : ndarray
        Images; compared pixel by pixel without any shift.

    Returns
    -------
    ncc : float
        ``sum((a - mean(a)) * (b - mean(b))) / sqrt(sum((a - mean(a))**2) * sum((b - mean(b))**2))``
        in ``[-1, 1]``; 0 when either image is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    if denom <= np.finfo(np.float64).tiny:
        return 0.0
    return float(np.sum(a * b) / denom)


# --------------------------------------------------------------------------------------------
# per-FOV driver


def _tmp_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _clear_stale_tmp(out: Path) -> None:
    """Remove temporary siblings of ``out`` left by killed jobs (and our own)."""
    for tmp in [*out.parent.glob(f"{out.name}.tmp-*"), *out.parent.glob(f"{out.name}.old-*")]:
        suffix = tmp.name.rsplit("-", 1)[-1]
        # Leave a sibling alone while the process that writes it is still running.
        if suffix.isdigit() and int(suffix) != os.getpid() and _pid_alive(int(suffix)):
            continue
        _remove(tmp)


def _to_builtin(value: Any) -> Any:
    """JSON-friendly copy of ``value`` (numpy scalars and arrays become Python objects)."""
    if isinstance(value, Mapping):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return _to_builtin(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def register_fov(
    src: str | Path,
    out: str | Path,
    *,
    min_ncc: float = 0.3,
    upsample_factor: int = 20,
    reference: Literal["median", "mean"] = "median",
    iterations: int = 2,
    smooth_sigma: float = 1.0,
    blur_sigma: float = 0.0,
    qc: str | Path | None = None,
) -> dict[str, Any]:
    """Register one canonical FOV store and write the registered store.

    Parameters
    ----------
    src : str or Path
        Canonical per-FOV Zarr store (``results/ingest/...``, see ``docs/architecture.md``).
    out : str or Path
        Registered per-FOV Zarr store to write. Written to ``<out>.tmp-<pid>`` and renamed into
        place at the end; an existing store at ``out`` is replaced.
    min_ncc : float, optional
        QC threshold on the normalised cross-correlation between the forward-modelled aligned HR
        and the mean of the registered LR frames. FOVs below it are written with
        ``passed=False`` and a warning; downstream steps exclude them.
    upsample_factor : int, optional
        Sub-pixel resolution of all shift estimates.
    reference : {"median", "mean"}, optional
        Temporal reference for :func:`estimate_drift`.
    iterations : int, optional
        Passes of :func:`estimate_drift`.
    smooth_sigma : float, optional
        Gaussian pre-smoothing (LR px) for the drift and HR shift estimates.
    blur_sigma : float, optional
        Extra blur of :func:`forward_model`, in LR px.
    qc : str or Path, optional
        If given, the returned QC row is also written there with :func:`write_qc`.

    Returns
    -------
    qc_row : dict
        ``sample, session, fov, frames, ncc, line_phase_px, hr_shift_dy, hr_shift_dx,
        drift_rms_px, residual_drift_px, passed`` (see :data:`QC_COLUMNS`).

    Notes
    -----
    The registered store holds ``lr`` (float32, drift-corrected, one frame per chunk; the line
    phase is kept because the network learns to undo it), ``hr`` (float32, moved onto the LR
    grid) and the attribute ``fastscan``: the ingest attributes plus ``registration`` with
    ``drift_px`` (T x 2, LR px), ``hr_shift_px`` ([dy, dx], HR px), ``line_phase_px`` (LR px),
    ``ncc``, ``residual_drift_px`` (RMS drift re-estimated on the corrected frames, LR px),
    ``passed`` and ``min_ncc``.
    """
    src, out = Path(src), Path(out)
    group = zarr.open_group(str(src), mode="r")
    attrs = dict(group.attrs.get("fastscan", {}))
    if attrs.get("kind") != "fov":
        raise ValueError(
            f"{src} is not a canonical per-FOV store (attribute fastscan.kind is "
            f"{attrs.get('kind')!r}, expected 'fov'); write it with fastscan.io.ingest_fov"
        )
    lr = _as_frames(np.asarray(group["lr"][...]), name=f"{src}/lr")
    hr = np.asarray(group["hr"][...])
    scale = int(attrs.get("scale", 2))
    if hr.shape != (scale * lr.shape[1], scale * lr.shape[2]):
        raise ValueError(
            f"{src}: hr shape {hr.shape} is not scale={scale} times the LR frame shape "
            f"{lr.shape[1:]}; re-run ingestion"
        )
    ident = {k: str(attrs.get(k, "")) for k in ("sample", "session", "fov")}
    label = "/".join(ident.values())

    line_phase = estimate_line_phase(lr, upsample_factor=upsample_factor)
    drift = estimate_drift(
        lr,
        reference=reference,
        upsample_factor=upsample_factor,
        iterations=iterations,
        smooth_sigma=smooth_sigma,
    )
    registered = apply_shifts(lr, drift).astype(np.float32, copy=False)
    lr_mean = registered.mean(axis=0, dtype=np.float64)
    field_fraction, hr_shift, _ = fit_scan_model(
        hr,
        lr_mean,
        scale=scale,
        line_phase_px=line_phase,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        smooth_sigma=smooth_sigma,
    )
    hr_aligned = apply_shifts(hr[None], hr_shift[None])[0].astype(np.float32, copy=False)

    # Borders filled by the shifts carry reflected, not measured, content.
    ny, nx = lr_mean.shape
    margin = int(math.ceil(np.abs(drift).max(initial=0) + np.abs(hr_shift).max() / scale)) + 1
    margin = min(margin, ny // 4, nx // 4)
    inner = (slice(margin, ny - margin), slice(margin, nx - margin))
    model = forward_model(
        hr_aligned,
        scale=scale,
        blur_sigma=blur_sigma,
        line_phase_px=line_phase,
        field_fraction=field_fraction,
    )
    ncc = normalised_cross_correlation(model[inner], lr_mean[inner])
    residual = _rms(
        estimate_drift(
            registered,
            reference=reference,
            upsample_factor=upsample_factor,
            iterations=1,
            smooth_sigma=smooth_sigma,
        )
    )
    passed = bool(ncc >= min_ncc)

    registration = {
        "drift_px": drift.tolist(),
        "hr_shift_px": hr_shift.tolist(),
        "line_phase_px": float(line_phase),
        "field_fraction": float(field_fraction),
        "ncc": float(ncc),
        "residual_drift_px": float(residual),
        "passed": passed,
        "min_ncc": float(min_ncc),
    }
    out_attrs = _to_builtin({**attrs, "registration": registration})

    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_tmp(out)
    tmp = _tmp_path(out)
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    _remove(old)
    try:
        dest = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        dest.create_array(
            "lr",
            data=registered,
            chunks=(1, *registered.shape[1:]),
            dimension_names=("t", "y", "x"),
        )
        dest.create_array(
            "hr", data=hr_aligned, chunks=hr_aligned.shape, dimension_names=("y", "x")
        )
        dest.attrs["fastscan"] = out_attrs
        # Move a previous store aside rather than deleting it first, so a failed rename can
        # put it back.
        if out.exists() or out.is_symlink():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old.exists() and not out.exists():
                os.replace(old, out)
            raise
    except BaseException:
        _remove(tmp)
        raise
    _remove(old)

    row = {
        **ident,
        "frames": int(lr.shape[0]),
        "ncc": float(ncc),
        "line_phase_px": float(line_phase),
        "field_fraction": float(field_fraction),
        "hr_shift_dy": float(hr_shift[0]),
        "hr_shift_dx": float(hr_shift[1]),
        "drift_rms_px": _rms(drift),
        "residual_drift_px": float(residual),
        "passed": passed,
    }
    logger.info(
        "registered %s: T=%d line phase %.2f px, drift rms %.2f px (residual %.3f), "
        "hr shift (%.2f, %.2f) px, ncc %.3f",
        label,
        row["frames"],
        line_phase,
        row["drift_rms_px"],
        residual,
        hr_shift[0],
        hr_shift[1],
        ncc,
    )
    if not passed:
        logger.warning(
            "registration QC failed for sample=%s session=%s fov=%s: ncc %.3f < min_ncc %.3f; "
            "the FOV is written with passed=False and excluded downstream",
            ident["sample"],
            ident["session"],
            ident["fov"],
            ncc,
            min_ncc,
        )
    if qc is not None:
        write_qc(row, qc)
    return row


# --------------------------------------------------------------------------------------------
# QC tables


def _qc_frame(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        table = rows.copy()
    elif isinstance(rows, Mapping):
        table = pd.DataFrame([dict(rows)])
    else:
        table = pd.DataFrame([dict(r) for r in rows])
    for col in QC_COLUMNS:
        if col not in table.columns:
            table[col] = pd.Series(dtype=object)
    extra = [c for c in table.columns if c not in QC_COLUMNS]
    return table[list(QC_COLUMNS) + extra]


def _write_tsv_atomic(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_qc(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], path: str | Path) -> Path:
    """Write registration QC rows as a tab-separated table.

    Parameters
    ----------
    rows : dict or list of dict
        One dict per FOV, as returned by :func:`register_fov`. Columns follow
        :data:`QC_COLUMNS`; unknown keys are appended after them.
    path : str or Path
        Output TSV, written atomically.

    Returns
    -------
    path : Path
    """
    path = Path(path)
    _write_tsv_atomic(_qc_frame(rows), path)
    return path


_QC_TEXT = ("sample", "session", "fov", "passed")


def read_qc(path: str | Path) -> pd.DataFrame:
    """Read a registration QC table written by :func:`write_qc` or :func:`gather_qc`.

    Identifiers stay strings (``"001"`` is not the number 1) and ``passed`` is boolean.
    """
    table = pd.read_csv(
        path,
        sep="\t",
        dtype={"sample": str, "session": str, "fov": str},
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in QC_COLUMNS if c not in _QC_TEXT},
    )
    if "passed" in table.columns:
        table["passed"] = table["passed"].map(
            lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1")
        ).astype(bool)
    return table


def gather_qc(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate per-FOV QC tables into one, sorted by sample, session and fov.

    Parameters
    ----------
    paths : list of str or Path
        Per-FOV tables written by :func:`write_qc`.
    out : str or Path
        Output TSV, written atomically.

    Returns
    -------
    table : pandas.DataFrame
        The gathered table (identifiers sorted as strings, stable for ties).
    """
    tables = [read_qc(p) for p in paths]
    table = _qc_frame(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    table = table.sort_values(["sample", "session", "fov"], kind="mergesort").reset_index(drop=True)
    _write_tsv_atomic(table, Path(out))
    return table
