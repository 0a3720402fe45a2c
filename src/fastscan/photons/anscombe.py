"""Variance stabilisation with a measured photon calibration: the generalised Anscombe transform
and its closed-form unbiased inverse (Makitalo and Foi 2013)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from fastscan.photons.calibration import PhotonCalibration

# Where the closed-form inverse of the Anscombe transform has its minimum.
_INVERSE_D_MIN: Final[float] = 0.85


def _gat_parameters(calibration: PhotonCalibration | Mapping[str, Any]) -> tuple[float, float]:
    cal = calibration if isinstance(calibration, PhotonCalibration) else PhotonCalibration.from_summary(calibration)
    if not cal.measurable or not math.isfinite(cal.variance_intercept_adu2):
        raise ValueError(f"the photon calibration has no measured noise line ({cal.reason or 'gain unknown'})")
    return cal.gain_adu_per_photon, cal.variance_intercept_adu2


def generalized_anscombe(adu: np.ndarray, calibration: PhotonCalibration | Mapping[str, Any]) -> np.ndarray:
    """Generalised Anscombe transform: Poisson-Gaussian ADU to unit-variance values.

    ``f(z) = 2 / g * sqrt(max(g z + 3/8 g**2 + sigma_read**2 - g offset, 0))``; with the line's
    intercept ``c = sigma_read**2 - g offset`` this is ``2 / g * sqrt(max(g z + 3/8 g**2 + c,
    0))``, so only the measured line is needed (Makitalo and Foi 2013, eq. 2; the scaling of
    Starck, Murtagh and Bijaoui 1998).

    Parameters
    ----------
    adu : array_like
        Values in ADU.
    calibration : PhotonCalibration or mapping
        A measured calibration, or its :meth:`PhotonCalibration.summary`.

    Returns
    -------
    ndarray of float64
        Values whose noise has a standard deviation of about 1 at every signal level.
    """
    g, c = _gat_parameters(calibration)
    z = np.asarray(adu, dtype=np.float64)
    return (2.0 / g) * np.sqrt(np.maximum(g * z + 0.375 * g * g + c, 0.0))


def inverse_generalized_anscombe(stabilised: np.ndarray, calibration: PhotonCalibration | Mapping[str, Any]) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`generalized_anscombe`.

    The algebraic inverse of a square root is biased for a denoised value, which estimates the
    *expectation* of the transformed noisy data. Makitalo and Foi (2013, DOI
    10.1109/TIP.2012.2202675, eq. 12 ff.) give the exact unbiased inverse in the normalised
    units ``y = (z - offset) / g``, ``s = sigma_read / g`` and its closed-form approximation

    ``I(D) = D**2/4 + sqrt(3/2)/4 D**-1 - 11/8 D**-2 + 5/8 sqrt(3/2) D**-3 - 1/8 - s**2``,

    clipped at 0 (no negative photon counts) and mapped back as ``z = g I(D) + offset``.
    ``offset + g (- s**2)`` is ``-c / g`` with the line's intercept ``c``, so again only the line
    is needed; the clip becomes ``z >= offset`` when the offset is known and ``z >= -c / g``
    (zero photons *and* zero read noise) otherwise.

    Parameters
    ----------
    stabilised : array_like
        Denoised values in the stabilised domain.
    calibration : PhotonCalibration or mapping
        The calibration the forward transform used.

    Returns
    -------
    ndarray of float64
        Unbiased estimates of the mean signal in ADU.
    """
    g, c = _gat_parameters(calibration)
    cal = calibration if isinstance(calibration, PhotonCalibration) else PhotonCalibration.from_summary(calibration)
    # Below its minimum (D about 0.85, I = -0.24) the asymptotic series turns back up and is
    # meaningless; every expectation of the transform lies above it, and the clip to zero photons
    # below is what such values mean.
    d = np.maximum(np.asarray(stabilised, dtype=np.float64), _INVERSE_D_MIN)
    root = math.sqrt(1.5)
    poisson = 0.25 * d**2 + 0.25 * root / d - 1.375 / d**2 + 0.625 * root / d**3 - 0.125
    adu = g * poisson - c / g
    floor = cal.offset_adu if math.isfinite(cal.offset_adu) else -c / g
    return np.maximum(adu, floor)
