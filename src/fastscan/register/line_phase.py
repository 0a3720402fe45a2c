"""Line phase of the bidirectional scan: estimating the odd/even row displacement and undoing it.

Separate from the drift because it is a property of the scanner, measured on the raw series
(odd rows against even rows), not a motion of the specimen between frames.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sp_fft

from fastscan.register.arrays import _check_choice, _float_dtype
from fastscan.register.correlate import Normalization, _taper, _upsampled_peak_1d
from fastscan.register.shifts import ShiftMethod, _shift_rows_x


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
