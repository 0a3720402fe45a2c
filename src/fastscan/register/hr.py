"""The HR target onto the LR grid: the forward model of the LR acquisition and the HR shift.

Owns what the LR acquisition would record of the HR image (:func:`forward_model`, the one seam
through which HR is compared with LR) and the translation that moves the HR target onto the
drift-corrected LR series (:func:`align_hr_to_lr`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from fastscan.register.arrays import _check_choice, _float_dtype
from fastscan.register.correlate import Normalization, _pcc, _prepare, _taper
from fastscan.register.shifts import _shift_array, _shift_rows_x
from fastscan.scan import display_columns, resonant_gain, warp_resonant


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
