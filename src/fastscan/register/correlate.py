"""Measuring translations and similarity: cross-correlation primitives and the NCC score.

Owns how two images are compared: the border taper, the pre-smoothing, the phase
cross-correlation with its upsampled peak (2-D via scikit-image, 1-D for the line phase) and
the zero-shift normalised cross-correlation that scores the scan model and the QC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage
from scipy.signal import windows
from skimage.registration import phase_cross_correlation

from fastscan.register.arrays import _float_dtype

Normalization = Literal["phase"] | None


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
