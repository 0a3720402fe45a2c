"""Registration of video-rate LR series and of their HR targets.

A video-rate FOV arrives as a noisy LR series ``(T, Y, X)`` acquired with a bidirectional
resonant scan and one slow, high-resolution HR image ``(scale*Y, scale*X)`` of the same field.
Before the pair can be tiled for training this module

1. measures the line phase of the bidirectional scan (odd rows against even rows); the distortion
   is kept in the training input because the network learns to undo it, so the value is stored for
   information and used by the forward model and the classical baselines;
2. estimates and removes per-frame drift against a robust temporal reference;
3. moves the HR target onto the grid of the drift-corrected LR series through a forward model of
   the LR acquisition (:func:`forward_model`, with the resonant field fraction fitted by
   :func:`fit_scan_model`), and scores the match with a normalised cross-correlation that
   decides whether the FOV enters the training set.

For a resonant scan, drift is measured and corrected as a displacement of the specimen on the
nominal (linear) grid, each display column moving by its own amount (see :func:`estimate_drift`
and :func:`apply_shifts` with ``field_fraction``).

Shift conventions follow :func:`skimage.registration.phase_cross_correlation`: an estimated shift
is the translation that, applied to the moving image with :func:`apply_shifts` (or
:func:`scipy.ndimage.shift`), registers it with the reference. Shifts are ``[dy, dx]`` in pixels
of the array they apply to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import zarr
from scipy import fft as sp_fft
from scipy import ndimage
from scipy.signal import windows
from skimage.registration import phase_cross_correlation

from fastscan.atomic import atomic_path
from fastscan.photons import PhotonCalibration, calibrate_series, curve_to_text
from fastscan.scan import display_columns, nominal_columns, resonant_gain, warp_resonant

__all__ = [
    "BLUR_SIGMAS",
    "QC_COLUMNS",
    "ScanFit",
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
    "scan_model_evidence",
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
    # Photon calibration of the raw series (fastscan.photons); NaN where not measurable.
    "gain_adu_per_photon",
    "offset_adu",
    "read_noise_adu",
    "photons_at_median",
    # The binned mean-variance curve, "mean:variance;..." (ADU, ADU^2), for the report's plot.
    "photon_curve",
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


# --------------------------------------------------------------------------------------------
# line phase of the bidirectional scan


def estimate_line_phase(
    image: np.ndarray,
    *,
    upsample_factor: int = 20,
    taper: float = 0.25,
    normalization: Normalization = None,
    smooth_sigma: float = 0.7,
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
    smooth_sigma : float, optional
        Gaussian low-pass of the cross-power spectrum, the same as smoothing both row sets along
        x with this standard deviation in pixels (0 disables it). The optics and the pixel
        integration leave little signal above a third of the sampling frequency while the
        photon noise is white, so this roughly halves the error on single frames of a few
        photons per pixel; being common to both row sets it does not move the peak.

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
        raise ValueError(f"need at least 4 rows to compare odd with even rows, got {image.shape[0]}")
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
    if smooth_sigma > 0:
        freq = sp_fft.fftfreq(image.shape[1])
        cross = cross * np.exp(-((2.0 * np.pi * smooth_sigma * freq) ** 2))
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
        out[..., 0::2, :] = _shift_rows_x(out[..., 0::2, :], 0.5 * float(shift_px), method=method, order=order)
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
    field_fraction: float = 0.0,
    initial: np.ndarray | None = None,
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
    field_fraction : float, optional
        Resonant scan model of the frames (:func:`fit_scan_model`). With a non-zero value the
        x drift is a displacement of the specimen in nominal (linear-grid) pixels, the unit of
        the HR target and of ``fastscan.simulate``'s ``drift_px``, and the frames are aligned
        by :func:`apply_shifts` with the same ``field_fraction`` between passes (see Notes).
        0 (the default) treats the frames as a linear scan: shifts in display pixels.
    initial : (T, 2) array_like, optional
        Starting estimate, in the units of the result; the first pass then measures the residual
        of the frames aligned with it.

    Returns
    -------
    drift : (T, 2) ndarray of float64
        ``drift[t] = [dy, dx]`` is the shift that, applied to frame ``t`` with
        :func:`apply_shifts` (and the same ``field_fraction``) or, for a linear scan,
        :func:`scipy.ndimage.shift`, aligns it with the reference. The reference is the
        temporal median (or mean) of the series, so the drift is relative to the series'
        robust centre position, not to the first frame; its mean is not removed.

    Notes
    -----
    Every frame is compared with one reference (not frame-to-frame), so errors do not
    accumulate over the series. Each pass costs, per frame, one FFT and one inverse FFT of the
    frame, an upsampled DFT of ``(1.5 * upsample_factor)**2`` points [1]_ and, after the first
    pass, one Fourier shift.

    A specimen displacement along a resonant line is not a translation of the displayed frame:
    columns are narrower towards the ends of the line, where the same displacement covers more
    display pixels. A rigid registration of such frames reports a display shift that is an
    average over the line (about 0.9 times the displacement for a field fraction of 0.8, and
    not that of the centre, 0.76) and leaves the ends misaligned by a third of the displacement.
    With ``field_fraction`` each pass measures the rigid residual of frames aligned by the
    model-based shift and converts it to nominal pixels (:func:`fastscan.scan.resonant_gain`); the passes
    converge to the displacement that aligns the frames at every column.

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
        smoothed = ndimage.gaussian_filter(smoothed, (0, smooth_sigma, smooth_sigma), mode="reflect")
    window = _taper(frames.shape[1:], taper)
    gain = np.array([1.0, resonant_gain(frames.shape[2], field_fraction, taper)])

    drift = np.zeros((frames.shape[0], 2), dtype=np.float64)
    if initial is not None:
        initial = np.asarray(initial, dtype=np.float64)
        if initial.shape != drift.shape:
            raise ValueError(f"initial must have shape {drift.shape}, got {initial.shape}")
        drift += initial
    aligned = smoothed
    for it in range(iterations):
        if it or initial is not None:
            # Re-estimating the residual of already aligned frames, rather than the full shift,
            # also removes the small pull of the taper towards zero shift (about 1 % of the
            # shift for a 0.25 Tukey window): the residual is near zero, so is its bias.
            aligned = apply_shifts(smoothed, drift, field_fraction=field_fraction)
        ref_f = sp_fft.fft2(_prepare(_reference(aligned, reference), smooth_sigma=0, window=window))
        for t in range(frames.shape[0]):
            frame_f = sp_fft.fft2(_prepare(aligned[t], smooth_sigma=0, window=window))
            drift[t] += gain * _pcc(ref_f, frame_f, upsample_factor=upsample_factor, normalization=normalization)
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
        :func:`fastscan.scan.nominal_columns` gives (wide pixels at the centre,
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
        raise ValueError(f"hr shape {hr.shape} is not a multiple of scale={scale}; crop or pad the HR image")
    img = hr.astype(_float_dtype(hr.dtype), copy=False)
    if blur_sigma > 0:
        img = ndimage.gaussian_filter(img, blur_sigma * scale, mode="reflect")
    ny, nx = img.shape[0] // scale, img.shape[1] // scale
    lr = img.reshape(ny, scale, nx, scale).mean(axis=(1, 3), dtype=np.float64).astype(img.dtype)
    if field_fraction:
        lr = warp_resonant(lr, field_fraction=field_fraction)
    if line_phase_px:
        lr[0::2] = _shift_rows_x(lr[0::2], -0.5 * line_phase_px, method="fourier", order=3)
        lr[1::2] = _shift_rows_x(lr[1::2], 0.5 * line_phase_px, method="fourier", order=3)
    return lr


def _edge_columns(shift_px: float, n: int, field_fraction: float) -> int:
    """Display columns at the end of a line that a nominal shift of ``shift_px`` fills from outside.

    The ends of a resonant line are compressed, so a shift covers more display columns there.
    """
    return int(math.ceil(float(display_columns(np.array(abs(shift_px)), n, field_fraction))))


def _check_hr_lr_shapes(hr: np.ndarray, lr_mean: np.ndarray, scale: int) -> None:
    model_shape = (hr.shape[0] // scale, hr.shape[1] // scale) if hr.ndim == 2 else hr.shape
    if model_shape != lr_mean.shape:
        raise ValueError(f"hr shape {hr.shape} / scale {scale} = {model_shape} does not match the LR shape {lr_mean.shape}")


def _align_hr(
    hr: np.ndarray,
    ref_f: np.ndarray,
    window: np.ndarray | None,
    start: np.ndarray,
    *,
    scale: int,
    upsample_factor: int,
    blur_sigma: float,
    line_phase_px: float,
    field_fraction: float,
    iterations: int,
    smooth_sigma: float,
    taper: float,
    normalization: Normalization,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Passes of :func:`align_hr_to_lr` from ``start``.

    Returns the HR shift and, when the last pass measured no residual, the forward model of the
    HR image moved by it (else ``None``).
    """
    # A shift measured in resonant display columns is an average over the line of a shift that
    # varies along it; resonant_gain converts it to nominal pixels and iterating removes the rest.
    gain = scale * np.array([1.0, resonant_gain(ref_f.shape[1], field_fraction, taper)])
    hr_shift = np.array(start, dtype=np.float64)
    for _ in range(iterations):
        # As in estimate_drift: measuring the residual of the already moved HR removes the
        # taper's pull towards zero shift.
        moved = _shift_array(hr, hr_shift) if np.any(hr_shift) else hr
        model = forward_model(
            moved,
            scale=scale,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            field_fraction=field_fraction,
        )
        mov_f = sp_fft.fft2(_prepare(model, smooth_sigma=smooth_sigma, window=window))
        shift_lr = _pcc(ref_f, mov_f, upsample_factor=upsample_factor, normalization=normalization)
        if not np.any(shift_lr):
            # Converged to the resolution of the estimate: further passes would repeat this one.
            return hr_shift, model
        hr_shift = hr_shift + shift_lr * gain
    return hr_shift, None


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
    initial: Sequence[float] | None = None,
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
        and adds the residual shift it measures. Passes stop early once the residual is below
        the resolution of the estimate.
    smooth_sigma : float, optional
        Gaussian pre-smoothing in LR pixels applied to both images before correlation.
    taper : float, optional
        Tukey window parameter applied to both images (0 disables it).
    normalization : {None, "phase"}, optional
        Passed to :func:`skimage.registration.phase_cross_correlation`.
    initial : (2,) array_like, optional
        Starting estimate in HR pixels (for example the shift found for a nearby field
        fraction); the first pass then measures the residual.

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
    The shift is a translation of the HR image, i.e. of the nominal (linear) grid; the resonant
    warp and the line phase are applied after it by :func:`forward_model`.
    """
    _check_choice("normalization", normalization, (None, "phase"))
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    lr_mean = np.asarray(lr_mean)
    hr = np.asarray(hr)
    _check_hr_lr_shapes(hr, lr_mean, scale)
    window = _taper(lr_mean.shape, taper)
    ref_f = sp_fft.fft2(_prepare(lr_mean, smooth_sigma=smooth_sigma, window=window))
    start = np.zeros(2) if initial is None else np.asarray(initial, dtype=np.float64)
    if start.shape != (2,):
        raise ValueError(f"initial must be [dy, dx], got {start.tolist()}")
    hr_shift, _ = _align_hr(
        hr,
        ref_f,
        window,
        start,
        scale=scale,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        line_phase_px=line_phase_px,
        field_fraction=field_fraction,
        iterations=iterations,
        smooth_sigma=smooth_sigma,
        taper=taper,
        normalization=normalization,
    )
    return hr_shift


#: Field fractions tried by :func:`fit_scan_model` (0 is a linear scan).
FIELD_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(19))

# Largest field fraction fit_scan_model evaluates when it refines past the end of its grid (the
# simulator's limit: beyond it the outermost dwells reach the mirror's turning points).
_MAX_FIELD_FRACTION = 0.98

#: Extra Gaussian blurs (LR px) of the forward model that :func:`fit_scan_model` lets each
#: candidate choose from before candidates are compared. The LR acquisition is often softer than
#: the HR target predicts (a larger pinhole or detector bandwidth at video rate, a widefield
#: camera's binning of an already blurred image). Without this nuisance parameter the resampling
#: of a small resonant warp is the only way the model can blur, so a linear scan is "fitted" a
#: field fraction of 0.1-0.2 that is then undone on every frame.
BLUR_SIGMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

#: Evidence a resonant scan model must have over the linear one to be accepted (see
#: :func:`scan_model_evidence`): a one-sided t statistic over interleaved sets of lines.
MIN_RESONANT_EVIDENCE = 3.0

# Interleaved sets of lines the evidence statistic is computed over.
_EVIDENCE_BANDS = 16


class ScanFit(NamedTuple):
    """Result of :func:`fit_scan_model`."""

    #: Resonant field fraction; 0 for a linear scan (also when a resonant fit was not significant).
    field_fraction: float
    #: ``[dy, dx]`` in HR pixels for that field fraction (see :func:`align_hr_to_lr`).
    hr_shift: np.ndarray
    #: Normalised cross-correlation of the forward model (with ``blur_sigma``) and the LR mean.
    ncc: float
    #: Extra blur of the LR acquisition beyond the block average, in LR px (from BLUR_SIGMAS).
    blur_sigma: float
    #: t statistic of the best resonant model against the linear one (NaN if none was compared).
    evidence: float
    #: The best resonant field fraction found, accepted or not.
    best_field_fraction: float


def _parabola_vertex(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Abscissa of the extremum of the parabola through three points (``None`` if degenerate)."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if den == 0 or not math.isfinite(num / den):
        return None
    return x1 - 0.5 * num / den


def _zero_mean_unit(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    norm = math.sqrt(float(np.sum(a * a)))
    return a / norm if norm > 0 else a


def scan_model_evidence(resonant: np.ndarray, linear: np.ndarray, data: np.ndarray, *, bands: int = _EVIDENCE_BANDS) -> float:
    """How much better a resonant forward model explains an LR image than the linear one.

    The difference of the two normalised cross-correlations with ``data`` is a sum over pixels,
    ``sum((r - l) d)`` of the zero-mean, unit-norm images. Summed over each of ``bands``
    interleaved sets of lines (line ``i`` in set ``i mod bands``, so every set samples the whole
    field and the same structures) it gives one paired difference per set; the value returned is
    their one-sided t statistic (mean over standard error). The sets differ by their noise, not by
    their content, so the statistic asks whether the improvement is larger than the noise. A
    resonant scan distorts every line alike, and a real field fraction improves every set: on
    simulated single frames (field fraction 0.8) it is about 12. On linear scans (a real confocal
    frame, 3-300 photons per pixel, with and without a softer LR) the best resonant candidate
    stays below 1.3. With an even ``bands`` each set holds lines of one scan direction; both
    directions are distorted alike.

    Parameters
    ----------
    resonant, linear, data : (Y, X) ndarray
        The two forward models and the LR image, over the same region.
    bands : int, optional
        Number of interleaved sets of lines (at least 4 lines each).

    Returns
    -------
    float
        The t statistic (0 when the differences are all zero; inf when they are all equal and
        positive).
    """
    r, lin, d = (_zero_mean_unit(np.asarray(a, dtype=np.float64)) for a in (resonant, linear, data))
    per_line = np.sum((r - lin) * d, axis=1)
    bands = max(2, min(int(bands), per_line.size // 4))
    sums = np.array([per_line[k::bands].sum() for k in range(bands)])
    mean, sd = float(sums.mean()), float(sums.std(ddof=1))
    if sd == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / (sd / math.sqrt(bands))


def fit_scan_model(
    hr: np.ndarray,
    lr_mean: np.ndarray,
    *,
    scale: int = 2,
    line_phase_px: float = 0.0,
    field_fractions: Sequence[float] = FIELD_FRACTIONS,
    upsample_factor: int = 20,
    blur_sigma: float = 0.0,
    blur_sigmas: Sequence[float] = BLUR_SIGMAS,
    smooth_sigma: float = 1.0,
    iterations: int = 3,
    refine: bool = True,
    min_evidence: float = MIN_RESONANT_EVIDENCE,
) -> ScanFit:
    """Fit the resonant field fraction and the HR shift by forward-modelling the HR target.

    A rigid shift estimated between a distorted LR mean and the undistorted HR target is biased
    (the edges of a resonant frame are stretched), so each candidate field fraction is
    forward-modelled, aligned, and scored by its normalised cross-correlation with the LR mean.

    Parameters
    ----------
    hr : (scale*Y, scale*X) ndarray
        HR target.
    lr_mean : (Y, X) ndarray
        Temporal mean of the drift-corrected LR series.
    scale, line_phase_px, upsample_factor, blur_sigma, smooth_sigma
        As for :func:`align_hr_to_lr`.
    field_fractions : sequence of float, optional
        Candidates of the coarse search, each in ``[0, 1)``.
    blur_sigmas : sequence of float, optional
        Extra Gaussian blurs (LR px) of the aligned forward model; each candidate is scored with
        the one that fits best, so that a softer LR acquisition is not explained by a resonant
        warp (see :data:`BLUR_SIGMAS`). Empty: ``blur_sigma`` only.
    iterations : int, optional
        Passes of :func:`align_hr_to_lr` per candidate; each candidate starts from the shift of
        the previous one, so later candidates usually converge in one or two.
    refine : bool, optional
        Refine the best candidate by successive parabolic interpolation of the correlation
        through it and its neighbours (down to 0.001), evaluating one step past the end of the
        grid when the best candidate is the last one. False keeps the best candidate.
    min_evidence : float, optional
        When 0 is a candidate, the best resonant model is accepted only if its
        :func:`scan_model_evidence` over the linear model exceeds this; otherwise the scan is
        taken as linear. A linear scan (a confocal or widefield frame) must not be "corrected"
        for a distortion it does not have.

    Returns
    -------
    ScanFit
        ``field_fraction``, ``hr_shift`` ([dy, dx] HR px), ``ncc`` (inner region, away from
        shifted-in borders), ``blur_sigma`` (the extra blur chosen), ``evidence`` and
        ``best_field_fraction`` (the best resonant candidate, accepted or not).
    """
    lr_mean = np.asarray(lr_mean)
    hr = np.asarray(hr)
    _check_hr_lr_shapes(hr, lr_mean, scale)
    grid = sorted({round(float(f), 6) for f in field_fractions})
    if not grid:
        raise ValueError("field_fractions must not be empty")
    if grid[0] < 0 or grid[-1] >= 1:
        raise ValueError(f"field fractions must lie in [0, 1), got {grid[0]} .. {grid[-1]}")
    blurs = sorted({float(b) for b in blur_sigmas}) or [0.0]
    if blurs[0] < 0:
        raise ValueError(f"blur_sigmas must be 0 or more, got {blurs}")
    ny, nx = lr_mean.shape
    taper = 0.25
    window = _taper(lr_mean.shape, taper)
    ref_f = sp_fft.fft2(_prepare(lr_mean, smooth_sigma=smooth_sigma, window=window))
    # field fraction -> (shift, ncc, extra blur, blurred model, inner region)
    scores: dict[float, tuple[np.ndarray, float, float, np.ndarray, tuple[slice, slice]]] = {}

    def score(ff: float, start: np.ndarray) -> np.ndarray:
        shift, model = _align_hr(
            hr,
            ref_f,
            window,
            start,
            scale=scale,
            upsample_factor=upsample_factor,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            field_fraction=ff,
            iterations=iterations,
            smooth_sigma=smooth_sigma,
            taper=taper,
            normalization=None,
        )
        if model is None:
            model = forward_model(
                _shift_array(hr, shift),
                scale=scale,
                blur_sigma=blur_sigma,
                line_phase_px=line_phase_px,
                field_fraction=ff,
            )
        my = min(int(math.ceil(abs(shift[0]) / scale)) + 1, ny // 4)
        mx = min(_edge_columns(shift[1] / scale, nx, ff) + 1, nx // 4)
        inner = (slice(my, ny - my), slice(mx, nx - mx))
        best = None
        for sigma in blurs:
            blurred = ndimage.gaussian_filter(model, sigma, mode="reflect") if sigma > 0 else model
            ncc = normalised_cross_correlation(blurred[inner], lr_mean[inner])
            if best is None or ncc > best[1]:
                best = (sigma, float(ncc), blurred)
        logger.debug("field fraction %.3f: shift %s, ncc %.5f, blur %.1f", ff, shift, best[1], best[0])
        scores[ff] = (shift, best[1], best[0], best[2], inner)
        return shift

    start = np.zeros(2)
    for ff in grid:
        # The shift changes little between neighbouring candidates: start from the last one.
        start = score(ff, start)

    for _ in range(4 if refine and len(grid) > 1 else 0):
        fs = sorted(scores)
        k = max(range(len(fs)), key=lambda i: scores[fs[i]][1])
        best = fs[k]
        if k in (0, len(fs) - 1):
            # The optimum lies at or past the end of the grid: evaluate one step further.
            step = fs[1] - fs[0] if k == 0 else fs[-1] - fs[-2]
            beyond = round(best - step if k == 0 else best + step, 3)
            if not 0.0 <= beyond <= _MAX_FIELD_FRACTION or beyond in scores or best == 0.0:
                break
            score(beyond, scores[best][0])
            continue
        three = (fs[k - 1], best, fs[k + 1])
        vertex = _parabola_vertex(three, [scores[f][1] for f in three])
        if vertex is None:
            break
        vertex = round(min(max(vertex, three[0]), three[2]), 3)
        if min(abs(vertex - f) for f in fs) < 1e-3:
            break
        score(vertex, scores[best][0])

    resonant = [f for f in scores if f > 0]
    best_resonant = max(resonant, key=lambda f: scores[f][1]) if resonant else 0.0
    ff = max(scores, key=lambda f: scores[f][1])
    evidence = math.nan
    if resonant and 0.0 in scores:
        # Both models on the region valid for both.
        (_, _, _, m1, (y1, x1)), (_, _, _, m0, (y0, x0)) = scores[best_resonant], scores[0.0]
        ys = slice(max(y0.start, y1.start), min(y0.stop, y1.stop))
        xs = slice(max(x0.start, x1.start), min(x0.stop, x1.stop))
        evidence = scan_model_evidence(m1[ys, xs], m0[ys, xs], lr_mean[ys, xs])
        if ff > 0 and not evidence > min_evidence:
            logger.info(
                "resonant field fraction %.3f rejected: its evidence over a linear scan is t = %.2f (needs > %.1f); the scan is taken as linear",
                ff,
                evidence,
                min_evidence,
            )
            ff = 0.0
    shift, ncc, sigma = scores[ff][:3]
    return ScanFit(float(ff), shift, ncc, float(sigma), float(evidence), float(best_resonant))


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


class _MovedMean:
    """The registered mean moved back to where each raw frame shows the specimen, on demand.

    It is the noise-free signal of every raw frame as far as registration knows it: the photon
    calibration subtracts its frame-to-frame changes (a drifting edge) from the raw frames,
    whose noise, unlike that of the interpolated registered frames, is untouched. Frames are
    computed when sliced, a few at a time, so the series is never held twice.
    """

    def __init__(self, mean: np.ndarray, drift: np.ndarray, field_fraction: float) -> None:
        self._mean = np.asarray(mean, dtype=np.float32)
        self._drift = np.asarray(drift, dtype=np.float64)
        self._field_fraction = float(field_fraction)
        self.shape = (self._drift.shape[0], *self._mean.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        frames = np.atleast_1d(np.arange(self.shape[0])[index])
        stack = np.broadcast_to(self._mean, (frames.size, *self._mean.shape))
        return apply_shifts(stack, -self._drift[frames], field_fraction=self._field_fraction)


def _photon_calibration(
    lr: np.ndarray,
    lr_mean: np.ndarray,
    drift: np.ndarray,
    field_fraction: float,
    significant_bits: Any,
) -> PhotonCalibration:
    """Photon calibration of the raw series (:func:`fastscan.photons.calibrate_series`).

    The raw frames are measured, not the registered ones: on simulated series the Fourier
    shifts and the resonant column resampling of registration lowered the fitted gain by 2-22 %
    (they average neighbouring pixels' noise), while the raw frames with the drift's signal
    changes removed (:class:`_MovedMean`) stayed within 1.5 % (5 % at five times the
    simulator's drift, where the raw frames alone reached +26 %; see :mod:`fastscan.photons`).
    """
    bits = int(significant_bits) if significant_bits else None
    saturation = float(2**bits - 1) if bits and np.issubdtype(lr.dtype, np.integer) else None
    signal = _MovedMean(lr_mean, drift, field_fraction) if lr.shape[0] >= 2 else None
    return calibrate_series(lr, saturation=saturation, signal=signal)


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
        Passes of drift estimation: a first rigid one, on which the scan model is fitted, then
        ``iterations - 1`` of :func:`estimate_drift` with the fitted field fraction.
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
        drift_rms_px, residual_drift_px, passed``, the photon calibration
        ``gain_adu_per_photon, offset_adu, read_noise_adu, photons_at_median`` (NaN where not
        measurable, e.g. for one frame) and its binned curve ``photon_curve`` (see
        :data:`QC_COLUMNS`).

    Notes
    -----
    The registered store holds ``lr`` (float32, drift-corrected, one frame per chunk; the line
    phase is kept because the network learns to undo it), ``hr`` (float32, moved onto the LR
    grid) and the attribute ``fastscan``: the ingest attributes plus ``registration`` with
    ``drift_px`` (T x 2, LR px), ``hr_shift_px`` ([dy, dx], HR px), ``line_phase_px`` (LR px),
    ``field_fraction``, ``ncc``, ``residual_drift_px`` (RMS drift re-estimated on the corrected
    frames, LR px), ``passed``, ``min_ncc`` and ``photons``: the photon calibration of the raw
    series (:func:`fastscan.photons.calibrate_series`, its
    :meth:`~fastscan.photons.PhotonCalibration.summary` with ``photons_at_median``, the
    photons per pixel at the median of the registered mean; None for what was not measurable,
    with ``reason``).

    Steps: the line phase of the raw series; a rigid drift pass and the scan model
    (:func:`fit_scan_model`) on the mean of the frames it aligns; the drift with that model
    (:func:`estimate_drift` with ``field_fraction``), applied by :func:`apply_shifts` with the
    same model; the HR shift refined on the mean of the registered frames. For a resonant scan
    the x drift is therefore a displacement of the specimen in nominal (linear-grid) LR pixels,
    like ``hr_shift_px`` and the simulator's ``drift_px``, and each column of a frame is moved
    by its own display shift, so the ends of the lines are aligned as well as their centre; for
    a linear scan (field fraction 0) nominal and display pixels are the same.

    A series of one frame (one fast frame per HR target) has nothing to align that frame to:
    the drift passes are skipped, ``drift_px`` is ``[[0, 0]]`` and ``residual_drift_px`` 0, and
    the line phase, the scan model and the HR shift are estimated from the frame itself.
    """
    src, out = Path(src), Path(out)
    group = zarr.open_group(str(src), mode="r")
    attrs = dict(group.attrs.get("fastscan", {}))
    if attrs.get("kind") != "fov":
        raise ValueError(
            f"{src} is not a canonical per-FOV store (attribute fastscan.kind is {attrs.get('kind')!r}, expected 'fov'); write it with fastscan.io.ingest_fov"
        )
    lr = _as_frames(np.asarray(group["lr"][...]), name=f"{src}/lr")
    if lr.shape[0] == 0:
        # One frame is enough (see Notes); none leaves nothing to register, and the estimates
        # below would fail on an empty mean with a message that names neither store nor cause.
        raise ValueError(f"{src}: lr holds no frame (shape {lr.shape}); re-run ingestion")
    hr = np.asarray(group["hr"][...])
    scale = int(attrs.get("scale", 2))
    if hr.shape != (scale * lr.shape[1], scale * lr.shape[2]):
        raise ValueError(f"{src}: hr shape {hr.shape} is not scale={scale} times the LR frame shape {lr.shape[1:]}; re-run ingestion")
    ident = {k: str(attrs.get(k, "")) for k in ("sample", "session", "fov")}
    label = "/".join(ident.values())

    line_phase = estimate_line_phase(lr, upsample_factor=upsample_factor)
    drift_options = {
        "reference": reference,
        "upsample_factor": upsample_factor,
        "smooth_sigma": smooth_sigma,
    }
    # One frame (a paired dataset, or a lab saving one fast frame per FOV) has nothing to be
    # aligned with: its drift is zero by definition, not measured. Line phase, scan model and
    # HR alignment come from that frame alone, as they come from the mean of a series.
    single = lr.shape[0] == 1
    # A first, rigid pass gives a sharp enough mean to fit the scan model on; the remaining
    # passes measure the drift with that model, in nominal pixels (see estimate_drift).
    if single:
        rigid = np.zeros((1, 2), dtype=np.float64)
        lr_mean = lr[0].astype(np.float64)
    else:
        rigid = estimate_drift(lr, iterations=1, **drift_options)
        lr_mean = apply_shifts(lr, rigid).mean(axis=0, dtype=np.float64)
    fit = fit_scan_model(
        hr,
        lr_mean,
        scale=scale,
        line_phase_px=line_phase,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        smooth_sigma=smooth_sigma,
    )
    field_fraction, hr_shift = fit.field_fraction, fit.hr_shift
    if fit.best_field_fraction > 0 and field_fraction == 0:
        logger.info(
            "%s: resonant field fraction %.3f not significant over a linear scan (t = %.2f); registered as a linear scan",
            label,
            fit.best_field_fraction,
            fit.evidence,
        )
    ny, nx = lr_mean.shape
    gain = resonant_gain(nx, field_fraction, 0.25)
    drift = rigid * [1.0, gain]
    if iterations > 1 and not single:
        drift = estimate_drift(
            lr,
            iterations=iterations - 1,
            field_fraction=field_fraction,
            initial=drift,
            **drift_options,
        )
    registered = apply_shifts(lr, drift, field_fraction=field_fraction).astype(np.float32, copy=False)
    lr_mean = registered.mean(axis=0, dtype=np.float64)
    # The registered frames sit where the drift reference was, a little away from the rigid
    # pre-registration that the shift was fitted on.
    hr_shift = align_hr_to_lr(
        hr,
        lr_mean,
        scale=scale,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        line_phase_px=line_phase,
        field_fraction=field_fraction,
        smooth_sigma=smooth_sigma,
        iterations=3,
        initial=hr_shift,
    )
    hr_aligned = apply_shifts(hr[None], hr_shift[None])[0].astype(np.float32, copy=False)

    # Borders filled by the shifts carry reflected, not measured, content; the ends of resonant
    # lines are compressed, so the same shift fills more display columns there.
    my = math.ceil(np.abs(drift[:, 0]).max(initial=0) + abs(hr_shift[0]) / scale) + 1
    shift_x = np.abs(drift[:, 1]).max(initial=0) + abs(hr_shift[1]) / scale
    mx = _edge_columns(shift_x, nx, field_fraction) + 1
    my, mx = min(my, ny // 4), min(mx, nx // 4)
    inner = (slice(my, ny - my), slice(mx, nx - mx))
    model = forward_model(
        hr_aligned,
        scale=scale,
        blur_sigma=blur_sigma,
        line_phase_px=line_phase,
        field_fraction=field_fraction,
    )
    if fit.blur_sigma > 0:
        # The LR acquisition's extra softness, as fitted with the scan model.
        model = ndimage.gaussian_filter(model, fit.blur_sigma, mode="reflect")
    ncc = normalised_cross_correlation(model[inner], lr_mean[inner])
    # A single frame cannot be misaligned with itself; 0.0 keeps the QC table complete.
    residual = (
        0.0
        if single
        else _rms(
            estimate_drift(
                registered,
                iterations=1,
                field_fraction=field_fraction,
                **drift_options,
            )
        )
    )
    passed = bool(ncc >= min_ncc)
    photons = _photon_calibration(
        lr,
        lr_mean,
        drift,
        field_fraction,
        (attrs.get("source") or {}).get("lr", {}).get("significant_bits"),
    )
    median_adu = float(np.median(lr_mean))
    photons_at_median = photons.photons(median_adu)

    registration = {
        "drift_px": drift.tolist(),
        "hr_shift_px": hr_shift.tolist(),
        "line_phase_px": float(line_phase),
        "field_fraction": float(field_fraction),
        # The scan-model fit's evidence for the best resonant field fraction over a linear scan
        # (a t statistic; NaN when not compared) and the extra blur of the LR acquisition (LR px).
        "resonant_field_fraction": float(fit.best_field_fraction),
        "resonant_evidence": float(fit.evidence) if math.isfinite(fit.evidence) else None,
        "blur_sigma_px": float(fit.blur_sigma),
        "ncc": float(ncc),
        "residual_drift_px": float(residual),
        "passed": passed,
        "min_ncc": float(min_ncc),
        "photons": photons.summary(median_adu),
    }
    out_attrs = _to_builtin({**attrs, "registration": registration})

    with atomic_path(out) as tmp:
        dest = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        dest.create_array(
            "lr",
            data=registered,
            chunks=(1, *registered.shape[1:]),
            dimension_names=("t", "y", "x"),
        )
        dest.create_array("hr", data=hr_aligned, chunks=hr_aligned.shape, dimension_names=("y", "x"))
        dest.attrs["fastscan"] = out_attrs

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
        "gain_adu_per_photon": photons.gain_adu_per_photon,
        "offset_adu": photons.offset_adu,
        "read_noise_adu": photons.read_noise_adu,
        "photons_at_median": photons_at_median,
        "photon_curve": curve_to_text(photons),
    }
    if photons.measurable:
        logger.info(
            "photon calibration of %s: %.3g ADU per photon, offset %.1f ADU, read noise %.2f ADU, %.2f photons per pixel at the median signal %.1f ADU%s",
            label,
            photons.gain_adu_per_photon,
            photons.offset_adu,
            photons.read_noise_adu,
            photons_at_median,
            median_adu,
            f" ({photons.reason})" if photons.reason else "",
        )
    else:
        logger.info("no photon calibration of %s: %s", label, photons.reason)
    logger.info(
        "registered %s: T=%d line phase %.2f px, drift rms %.2f px (residual %.3f), hr shift (%.2f, %.2f) px, ncc %.3f",
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
            "registration QC failed for sample=%s session=%s fov=%s: ncc %.3f < min_ncc %.3f; the FOV is written with passed=False and excluded downstream",
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
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


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
        table["passed"] = table["passed"].map(lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1")).astype(bool)
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
