"""Drift between frames: per-frame sub-pixel translation of a series against its temporal reference.

Owns the estimate (:func:`estimate_drift`); applying it is :func:`fastscan.register.shifts.apply_shifts`.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from fastscan.register.arrays import _as_frames, _check_choice, _float_dtype
from fastscan.register.correlate import Normalization, _pcc, _prepare, _taper
from fastscan.register.shifts import apply_shifts
from fastscan.scan import resonant_gain

# One logger for the whole registration step (the name the CLI, the workflow logs and the tests use).
logger = logging.getLogger("fastscan.register")


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
