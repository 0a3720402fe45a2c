"""The classical restoration cascade: the conventional alternative to the learned generator.

A video-rate LR frame is restored with the hand-built chain an imaging facility would use without
a trained model:

1. line-phase correction of the bidirectional scan
   (:func:`fastscan.register.correct_line_phase`, split symmetrically between the two scan
   directions);
2. un-warping of the sinusoidal fast axis onto the uniform nominal grid
   (:func:`fastscan.scan.unwarp_resonant`);
3. denoising (non-local means by default, BM3D when the ``bm3d`` package is installed);
4. bicubic upsampling to the HR grid (:func:`fastscan.baselines.upsample` with ``order=3``).

Noise model of step 3
---------------------
Photon-limited frames are Poisson-Gaussian: the noise grows with the signal, and one noise level
for a whole frame (estimated by :func:`estimate_noise_sigma`, which follows the dominant dark
background) under-smooths the bright structures. When the series' photon calibration is known
(``registration.photons`` of the registered store, :func:`fastscan.photons.calibrate_series`),
the frame is first variance-stabilised with the generalised Anscombe transform
(:func:`fastscan.photons.generalized_anscombe`), denoised there with one noise level, and
mapped back with the closed-form approximation of the exact unbiased inverse (Makitalo and Foi
2013, DOI 10.1109/TIP.2012.2202675). The stabilised noise is 1 for raw pixels but lower after
the un-warp of step 2, whose linear interpolation averages neighbouring samples, so its level is
measured on the stabilised frame. Without a calibration the frame is denoised as before.

Geometry
--------
The registered HR target (``docs/architecture.md``) is translated, never warped, and sits midway
between the two scan directions: :func:`fastscan.register.forward_model` shifts even rows by
``-line_phase_px / 2`` and odd rows by ``+line_phase_px / 2`` after the resonant warp. Undoing
exactly that, a symmetric line-phase correction followed by an un-warp with the phase-0 resonant
coordinates, puts the restored frame on the geometry of the registered HR. Un-warping with the
true coordinates of each scan direction (``scan.unwarp_resonant(..., line_phase_px=...)``) would
instead land on the even (forward) lines' geometry, about ``line_phase_px / 2`` centre pixels
away from the target (0.1-0.5 dB of PSNR lost on simulated frames at the default 0.6 px line
phase, more for a larger phase or sharper, cleaner data).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Final

import numpy as np
from skimage.restoration import denoise_nl_means

from fastscan.baselines import upsample
from fastscan.photons import (
    PhotonCalibration,
    generalized_anscombe,
    inverse_generalized_anscombe,
)
from fastscan.register import correct_line_phase
from fastscan.scan import check_field_fraction, unwarp_resonant

__all__ = [
    "DENOISERS",
    "DEFAULT_STRENGTH",
    "VST_STRENGTH",
    "estimate_noise_sigma",
    "restore_classical",
]

logger = logging.getLogger(__name__)

#: Denoisers known to :func:`restore_classical`; ``"none"`` skips the step (for ablations).
DENOISERS: Final[tuple[str, ...]] = ("nlm", "bm3d", "none")

#: Default ``strength`` per denoiser, in units of the estimated noise standard deviation.
#: 0.8 for non-local means is scikit-image's recommendation for ``fast_mode``; on simulated
#: 256 x 256 frames (mitochondria and tissue, default detector) PSNR against the HR target varies
#: by less than 0.1 dB between 0.6 and 1.2 for mitochondria and peaks at 0.6-0.8 for tissue.
#: BM3D takes the noise standard deviation itself.
DEFAULT_STRENGTH: Final[dict[str, float]] = {"nlm": 0.8, "bm3d": 1.0}

#: Default ``strength`` in the variance-stabilised domain (a photon calibration is given).
#: On simulated 128 x 128 frames (mitochondria and tissue, 15 and 60 photons at the brightest
#: structures, 2 seeds each) NLM at 1.0 scored 0.07-1.5 dB above the fixed-strength path against
#: the noise-free HR target (PSNR after a least-squares gain and offset; 0.08-3.3 dB with both
#: normalised to their percentiles), and within 0.1 dB of the best of 0.6-1.2. Denoising at the
#: nominal level of 1 scored 0.1-2.2 dB lower (strengths 0.6-1.2), at the RMS of what the
#: un-warp leaves of it 0-0.2 dB lower at its best strength, than at the level measured on the
#: stabilised frame.
VST_STRENGTH: Final[dict[str, float]] = {"nlm": 1.0, "bm3d": 1.0}

# Patch geometry of non-local means: 5 x 5 patches fit the sub-micrometre structures (a tubule
# is one or two LR pixels wide), a 13 x 13 search window keeps a frame well under 0.1 s.
_NLM_PATCH_SIZE: Final[int] = 5
_NLM_PATCH_DISTANCE: Final[int] = 6

# Median absolute deviation of a standard normal variable.
_MAD_TO_SIGMA: Final[float] = 1.0 / 0.6744897501960817


# --------------------------------------------------------------------------------------------
# noise level


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive white noise, from the finest diagonal wavelet band.

    Parameters
    ----------
    image : (Y, X) ndarray
        One frame (at least 2 x 2).

    Returns
    -------
    sigma : float
        ``median(|HH|) / 0.6745`` of the orthonormal Haar diagonal detail coefficients
        ``(a - b - c + d) / 2`` of the non-overlapping 2 x 2 blocks.

    Notes
    -----
    This is the estimator of :func:`skimage.restoration.estimate_sigma` (Donoho and Johnstone's
    median absolute deviation of the finest diagonal band) with the Haar wavelet computed here:
    scikit-image's version needs PyWavelets, which is not part of the pinned stack. The median
    ignores the sparse bright structures; for photon-limited frames it follows the noise of the
    dominant (often dark) background.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 2:
        raise ValueError(f"image must be a (Y, X) frame of at least 2 x 2, got shape {img.shape}")
    ny, nx = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    hh = 0.5 * (img[0:ny:2, 0:nx:2] - img[0:ny:2, 1:nx:2] - img[1:ny:2, 0:nx:2] + img[1:ny:2, 1:nx:2])
    return float(np.median(np.abs(hh)) * _MAD_TO_SIGMA)


# --------------------------------------------------------------------------------------------
# denoising


def _require_bm3d() -> ModuleType:
    if importlib.util.find_spec("bm3d") is None:
        raise ImportError(
            "denoise='bm3d' needs the bm3d package, which is not part of the fastscan environment; install it with `pip install bm3d` or use denoise='nlm'"
        )
    return importlib.import_module("bm3d")


def _denoise_frame(
    frame: np.ndarray,
    *,
    method: str,
    strength: float,
    bm3d_module: ModuleType | None,
    vst: tuple[PhotonCalibration, float, float] | None = None,
) -> np.ndarray:
    if method == "none":
        return frame
    if vst is not None:
        # Back to ADU, where the calibration holds; stabilise, denoise at the (now uniform)
        # noise level, and return the unbiased inverse in the frame's own units.
        calibration, low, span = vst
        stabilised = generalized_anscombe(frame.astype(np.float64) * span + low, calibration)
        denoised = _denoise_frame(stabilised, method=method, strength=strength, bm3d_module=bm3d_module)
        adu = inverse_generalized_anscombe(denoised, calibration)
        return ((adu - low) / span).astype(np.float32)
    sigma = estimate_noise_sigma(frame)
    if sigma <= 0.0:
        # A constant or noise-free frame: nothing to remove, and h = 0 would only cost time.
        return frame
    if method == "nlm":
        # Passing sigma lets fast mode subtract the expected noise contribution 2 sigma^2 from
        # the patch distances, so h only needs to cover the residual spread.
        out = denoise_nl_means(
            frame.astype(np.float64, copy=False),
            h=strength * sigma,
            sigma=sigma,
            fast_mode=True,
            patch_size=_NLM_PATCH_SIZE,
            patch_distance=_NLM_PATCH_DISTANCE,
        )
    else:
        assert bm3d_module is not None
        out = bm3d_module.bm3d(frame.astype(np.float64, copy=False), sigma_psd=strength * sigma)
    return np.asarray(out, dtype=np.float32)


def _vst_parameters(
    calibration: PhotonCalibration | Mapping[str, Any] | None,
    normalisation: Sequence[float] | None,
) -> tuple[PhotonCalibration, float, float] | None:
    """``(calibration, low, high - low)`` for the stabilised path, or None for the fixed one."""
    if calibration is None:
        return None
    cal = calibration if isinstance(calibration, PhotonCalibration) else PhotonCalibration.from_summary(calibration)
    if not (cal.measurable and math.isfinite(cal.variance_intercept_adu2)):
        logger.info(
            "no variance stabilisation: the photon calibration was not measured (%s)",
            cal.reason or "gain unknown",
        )
        return None
    if normalisation is None:
        return cal, 0.0, 1.0
    values = [float(v) for v in normalisation]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[1] <= values[0]:
        raise ValueError(f"normalisation must be (low, high) with high > low, got {list(normalisation)!r}")
    return cal, values[0], values[1] - values[0]


# --------------------------------------------------------------------------------------------
# cascade


def restore_classical(
    frames: np.ndarray,
    *,
    line_phase_px: float,
    field_fraction: float,
    scale: int = 2,
    denoise: str = "nlm",
    strength: float | None = None,
    calibration: PhotonCalibration | Mapping[str, Any] | None = None,
    normalisation: Sequence[float] | None = None,
) -> np.ndarray:
    """Restore LR frames with the classical cascade.

    Line-phase correction, sinusoidal un-warping, denoising and bicubic upsampling, frame by
    frame (see the module notes for the geometry).

    Parameters
    ----------
    frames : (Y, X) or (T, Y, X) ndarray
        Raw or normalised LR intensities of a bidirectional resonant scan, in display order with
        row 0 an even (forward) line. The resonant distortion and the line phase must still be
        present (the frames of the registered store are).
    line_phase_px : float
        Line phase of the odd rows in LR pixels (:func:`fastscan.register.estimate_line_phase`,
        ``registration.line_phase_px`` of the registered store).
    field_fraction : float
        Resonant field fraction (``registration.field_fraction`` of the registered store);
        0 for a linear scan.
    scale : int, optional
        HR pixels per LR pixel.
    denoise : {"nlm", "bm3d", "none"}, optional
        Denoiser of step 3. ``"nlm"``: :func:`skimage.restoration.denoise_nl_means` with
        ``fast_mode=True``, 5 x 5 patches, a 13 x 13 search window (``patch_distance=6``) and
        ``h = strength * sigma``, ``sigma`` estimated per frame by
        :func:`estimate_noise_sigma`. ``"bm3d"``: ``bm3d.bm3d`` with
        ``sigma_psd = strength * sigma``; needs the ``bm3d`` package. ``"none"`` skips the step.
    strength : float, optional
        Denoising strength in units of the estimated noise standard deviation; defaults to
        :data:`DEFAULT_STRENGTH` (0.8 for NLM, 1.0 for BM3D), or to :data:`VST_STRENGTH` in
        the variance-stabilised domain.
    calibration : PhotonCalibration or mapping, optional
        Photon calibration of the series (a :class:`fastscan.photons.PhotonCalibration`, or the
        registered store's ``registration.photons``). When its noise line was measured, step 3
        runs in the variance-stabilised domain (see the module notes); otherwise (None, one
        frame, a flat field) the frames are denoised at one estimated noise level.
    normalisation : (low, high), optional
        The frames are ``(adu - low) / (high - low)`` (the model's ``normalisation.lr``); the
        calibration is in ADU. None: the frames are in ADU.

    Returns
    -------
    restored : ndarray of float32
        ``(scale*Y, scale*X)`` or ``(T, scale*Y, scale*X)`` on the geometry of the registered HR
        target.

    Raises
    ------
    ValueError
        For an input that is not 2-D or 3-D, an unknown ``denoise``, a non-positive
        ``strength``, a ``field_fraction`` outside ``[0, 1)``, a ``calibration`` mapping
        without a gain, or (with a measured calibration) a ``normalisation`` that is not two
        finite numbers with ``high > low``.
    ImportError
        For ``denoise="bm3d"`` without the ``bm3d`` package (``pip install bm3d``).

    Notes
    -----
    Non-local means is the default because it ships with scikit-image, which the pinned stack
    already has, while ``bm3d`` is an extra package (with PyWavelets and ``bm4d``'s compiled
    library behind it) and is far slower: on a 2-core Intel Xeon, NLM takes about 0.04 s per
    256 x 256 frame and the whole cascade about 0.065 s (6.4 s for a 100-frame series), against
    about 3.6 s per frame for ``bm3d`` 4.0.3, for at most 0.4 dB more PSNR on simulated frames.

    At the default video-rate noise (about 15 photoelectrons per pixel at the brightest
    structures) the denoiser contributes little: on simulated 256 x 256 frames NLM adds about
    0.3 dB (mitochondria) and 0.7-0.9 dB (tissue) of PSNR against the HR target to un-warping
    alone, while the geometric steps gain about 6 dB (tissue) to 8.5 dB (mitochondria) over
    bicubic upsampling of the raw frame.

    The frames of the registered store have been drift-corrected with fractional row shifts,
    which mix forward and backward lines in proportion to the fractional part; the mixed-in
    component is then displaced by the full line phase, a slight blur along x that the
    correction cannot separate. Raw frames avoid it when the drift is negligible.
    """
    arr = np.asarray(frames)
    if arr.ndim not in (2, 3):
        raise ValueError(f"frames must be (Y, X) or (T, Y, X), got shape {arr.shape}")
    if arr.shape[-2] < 2 or arr.shape[-1] < 2:
        raise ValueError(f"frames must be at least 2 x 2 pixels, got shape {arr.shape}")
    if denoise not in DENOISERS:
        raise ValueError(f"denoise must be one of {list(DENOISERS)}, got {denoise!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    ff = check_field_fraction(field_fraction)
    if not math.isfinite(float(line_phase_px)):
        raise ValueError(f"line_phase_px must be finite, got {line_phase_px!r}")
    vst = _vst_parameters(calibration, normalisation) if denoise != "none" else None
    if strength is None:
        strength = (VST_STRENGTH if vst is not None else DEFAULT_STRENGTH).get(denoise, 0.0)
    elif denoise != "none" and not (math.isfinite(float(strength)) and strength > 0):
        raise ValueError(f"strength must be a positive number, got {strength!r}")
    # Fail before any work is done when the optional denoiser is missing.
    bm3d_module = _require_bm3d() if denoise == "bm3d" else None

    start = time.perf_counter()
    stack = arr[None] if arr.ndim == 2 else arr
    stack = stack.astype(np.float32, copy=False)
    # (1) Both scan directions onto their mean geometry, the one the registered HR sits on.
    corrected = correct_line_phase(stack, float(line_phase_px), symmetric=True)
    # (2) Resonant display columns onto the uniform nominal grid.
    linear = unwarp_resonant(corrected, field_fraction=ff)
    # (3) Denoise on the LR grid, before interpolation spreads the noise over several HR pixels.
    denoised = np.empty_like(linear)
    for t, frame in enumerate(linear):
        denoised[t] = _denoise_frame(frame, method=denoise, strength=float(strength), bm3d_module=bm3d_module, vst=vst)
    # (4) Pixel-area aligned bicubic upsampling, the geometry of every other method.
    out = upsample(denoised, scale=int(scale), order=3)
    elapsed = time.perf_counter() - start
    logger.info(
        "classical restoration of %d frame(s) %s -> %s (line phase %.3f px, field fraction %.2f, denoise=%s%s, strength %.2f) in %.2f s, %.3f s per frame",
        stack.shape[0],
        stack.shape[1:],
        out.shape[1:],
        float(line_phase_px),
        ff,
        denoise,
        " after the generalised Anscombe transform" if vst is not None else "",
        float(strength),
        elapsed,
        elapsed / stack.shape[0],
    )
    return out[0] if arr.ndim == 2 else out
