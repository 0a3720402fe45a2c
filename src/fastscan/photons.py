"""Photon calibration of a video-rate series from its temporal mean-variance curve.

A point-scanning microscope turns photons into digital units (ADU) through a photomultiplier
(PMT) and an analogue-to-digital converter. The noise of one pixel over the frames of a static
field of view therefore measures the detector: this is Janesick's photon transfer method
(J. R. Janesick, *Photon Transfer*, SPIE Press, 2007, DOI 10.1117/3.725073), applied here to the
~100 frames of a video-rate series instead of to flat fields.

Model
-----
A pixel that receives ``n ~ Poisson(lambda)`` photoelectrons per frame reads

    ``adu = g * n + offset + read``,   ``read ~ N(0, sigma_read**2)``,

so its temporal mean and variance obey the photon transfer line

    ``var(adu) = g * (mean(adu) - offset) + sigma_read**2``.

``g`` is the gain in ADU per detected photon, ``offset`` the ADU of zero photons, and
``sigma_read`` the additive noise at zero photons (amplifier and ADC noise; the 1/12 ADU**2 of
integer rounding is part of it). Assumptions:

* **PMT excess noise folds into the effective gain.** A real PMT multiplies each photoelectron by
  a random gain (excess noise factor ``F = 1 + var(G) / E(G)**2``, about 1.2-1.5); the variance
  then grows as ``F * E(G)`` per ADU of signal. The slope is that *effective* gain, and
  ``(adu - offset) / g`` is the number of Poisson-equivalent photons: the count whose shot noise
  matches the measured noise, ``1 / F`` of the photoelectrons. This is what a variance-stabilising
  transform and a noise model need.
* **Dark counts are photons.** Thermionic electrons from the photocathode are amplified exactly
  like photoelectrons; the offset is the level of *zero* electrons, not the dark level.
* **The specimen is static between frames** (after the slow drift, which the estimator below is
  insensitive to); pixels that change beyond the noise are detected and left out.
* **No clipping.** Pixels that touch the ADC's top (``saturation``, the dtype maximum) or bottom
  (the dtype minimum of integer data) in any frame are left out: a clipped distribution has a
  smaller variance at a wrong mean (on a simulated field with 16 % of its pixels clipped at
  4095 ADU, they pulled the top of the curve down to a fifth of the line).

Fit
---
1. Per pixel: the temporal mean and the *successive-difference* variance
   ``sum((x[t+1] - x[t])**2) / (2 (T - 1))`` (von Neumann's mean square successive difference).
   For white noise its expectation is the variance; a slow change of the signal (drift of a few
   hundredths of a pixel per frame, bleaching) enters it only through its tiny frame-to-frame
   increments, where it would dominate the ordinary variance of the same pixel. A known
   expected signal per frame (``signal``: registration's mean moved back by each frame's drift)
   is subtracted first, which removes faster drift as well.
2. Trends: the ratio of the ordinary variance to the successive-difference variance is
   ``1 +- 1 / sqrt(T)`` for white noise and large where the signal has a temporal trend; pixels
   above ``1 + motion_sigma / sqrt(T)`` are left out.
3. The remaining pixels are binned by mean (equal-width bins between the 0.5th and 99.5th
   percentiles, bins with too few pixels dropped); each bin gives its mean signal and the mean
   of its pixels' variances after gross outliers are rejected.
4. A Theil-Sen line (median of the pairwise slopes) through the bins. Changes without a trend
   (a structure blinking or passing through a pixel) are caught next: pixels more than
   ``excess_sigma`` sampling standard deviations above the line are dropped and the line is
   refitted (:func:`_fit_line`). A curve the line explains less than half of (``r2 < 0.5``) is
   refused.

Measured on simulated 128 x 128 x 100 series (gain 8, 15 photons at the brightest structures,
mitochondria and tissue, 4 seeds each): the gain was within -1.4 to -0.1 % of the truth at the
simulator's default drift and within -0.3 to +4.9 % at five times that drift. The same raw
frames without the drift's signal changes removed gave -0.9 to +1.6 % and +2.8 to +26 %; the
registered (interpolated) frames -2 to -18 % and -11 to -22 %. On five static series with
gains of 2-20 ADU per photon and read noise of 2-8 ADU the gain was within 1.1 %. Fields with
blinking and passing structures over a third of their pixels biased the line by up to +60 %
(tissue: +26 to +40 %) without steps 2 and 4, and by -5 to +7 % with them. Theil-Sen scattered 0.9 %
(RMS over 10 static series) against 0.4 % for a weighted least-squares line, but stayed within
6 % on the blinking fields where the weighted line reached +17 %.

Offset and read noise
---------------------
One line gives two numbers, ``g`` and the intercept ``sigma_read**2 - g * offset``, for three
unknowns. The third comes from the darkest pixels of the series (the lowest 5 % of the means,
at least 20 pixels): their values are Poisson mixtures of Gaussian peaks
``N(offset + g k, sigma_read**2)``, ``k ~ Poisson(lambda_i)``, and at the few photons of a
video-rate background the zero-photon peak dominates. Given ``g``, each pixel's rate follows
from its mean, ``lambda_i = (m_i - offset) / g``, and the read noise from the pixels' mean
variance ``v``, ``sigma_read**2 = v - g (mean(m_i) - offset)``; the offset is then the one free
parameter, fitted by maximum likelihood to the dark pixels' values (integer values integrate
their unit ADC bin) (:func:`_dark_core`). The dark pixels are chosen on the even frames and
measured on the odd ones, so that their selection does not favour low noise. The "variance
floor" alone (``offset`` = dark mean, ``sigma_read**2`` = dark variance) is biased by the dark
counts: on the default simulated detector (0.1 dark photons of 8 ADU per pixel) it reads a read
noise of 5 ADU for the true 3. On the simulated series above the offset was within 0.15 ADU
for a background of 0.1 photons, 0.4 ADU for 0.6-1 photons, and 1.4 ADU (0.2 photons) where
the read noise is as wide as a photon and the background holds 4; the read noise within 9 %.

Offset and read noise are reported as NaN, with the reason, when the zero-photon peak is not
observable: the darkest pixels reach the bottom of the ADC range (an offset turned down until
the background reads 0, common on confocal systems; or a photon counter whose zero is the
floor), or their variance is more than 30 photons' worth (peaks merged). The gain and the line
are still measured, and the generalised Anscombe transform (:func:`generalized_anscombe`) needs
only the line.

Raw frames, not registered ones
-------------------------------
Drift correction interpolates: the Fourier shift averages the variances of neighbouring pixels
of different means, and the resonant column resampling lowers the noise variance towards the
ends of the lines by up to a third; the registered frames' gain came out 2-22 % low (above).
Calibrate the ingested frames, passing the expected signal of each frame when the drift is
known (as :func:`fastscan.register.register_fov` does).

References
----------
J. R. Janesick, *Photon Transfer: DN -> lambda*, SPIE Press, 2007. DOI 10.1117/3.725073.

M. Makitalo and A. Foi, "Optimal inversion of the generalized Anscombe transformation for
Poisson-Gaussian noise", *IEEE Trans. Image Process.* 22(1), 91-103, 2013.
DOI 10.1109/TIP.2012.2202675.

J. von Neumann, R. H. Kent, H. R. Bellinson and B. I. Hart, "The mean square successive
difference", *Ann. Math. Statist.* 12(2), 153-162, 1941.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "PhotonCalibration",
    "calibrate_series",
    "curve_from_text",
    "curve_to_text",
    "generalized_anscombe",
    "inverse_generalized_anscombe",
]

#: Fewest frames with which a temporal variance exists.
MIN_FRAMES: Final[int] = 2

# Fraction of the unsaturated pixels, by mean, taken as the dark pixels of the offset estimate, and
# the fewest of them (a smaller background gives too few values to see the zero-photon peak).
_DARK_FRACTION: Final[float] = 0.05
_MIN_DARK_PIXELS: Final[int] = 20
# Most dark pixels whose values enter the likelihood of the offset.
_DARK_PIXELS_FITTED: Final[int] = 400
# Fewest bins the line needs, and the least share of the binned curve it must explain
# (0.93-0.9998 on simulated series; a curve bent by clipped pixels went down to 0.27).
_MIN_BINS: Final[int] = 4
_MIN_R2: Final[float] = 0.5
# Largest dark variance, in photons' worth (variance / gain**2), whose zero-photon peak is fitted.
_MAX_DARK_PHOTONS: Final[float] = 30.0
# Values converted to float64 at a time (whole frames; 8 MB per array).
_CHUNK_VALUES: Final[int] = 1 << 20
# Gross outliers of a bin's variances, in robust standard deviations above the bin median.
_OUTLIER_SIGMA: Final[float] = 8.0
_MAD_TO_SIGMA: Final[float] = 1.4826
# Where the closed-form inverse of the Anscombe transform has its minimum.
_INVERSE_D_MIN: Final[float] = 0.85


@dataclass(frozen=True)
class PhotonCalibration:
    """The detector of one series, measured from its temporal mean-variance curve.

    Attributes
    ----------
    gain_adu_per_photon : float
        Effective gain ``g`` (ADU per Poisson-equivalent photon), the slope of the curve.
    offset_adu : float
        ADU of zero photons (NaN when not measurable, see ``reason``).
    read_noise_adu : float
        Standard deviation of the additive noise at zero photons, ADU (NaN when not measurable).
    variance_intercept_adu2 : float
        The line's variance at 0 ADU, ``read_noise_adu**2 - g * offset_adu``; with the gain it
        fixes the noise variance at any signal, ``g * adu + intercept``.
    frames : int
        Frames of the series.
    n_pixels_used : int
        Pixels that entered the binned curve (not clipped, not moving).
    n_pixels : int
        Pixels of a frame.
    r2 : float
        Coefficient of determination of the line over the bins, weighted by their pixel counts.
    dark_level_adu : float
        Mean ADU of the dark pixels that gave the offset.
    curve_mean, curve_variance : tuple of float
        The binned curve: mean signal (ADU) and mean temporal variance (ADU**2) per bin.
    curve_pixels : tuple of int
        Pixels per bin.
    reason : str or None
        Why the calibration, or part of it, is not measurable; None when all of it is.
    """

    gain_adu_per_photon: float
    offset_adu: float
    read_noise_adu: float
    variance_intercept_adu2: float
    frames: int
    n_pixels_used: int = 0
    n_pixels: int = 0
    r2: float = math.nan
    dark_level_adu: float = math.nan
    curve_mean: tuple[float, ...] = field(default=())
    curve_variance: tuple[float, ...] = field(default=())
    curve_pixels: tuple[int, ...] = field(default=())
    reason: str | None = None

    @property
    def measurable(self) -> bool:
        """Whether the gain (and so the noise line) was measured."""
        return math.isfinite(self.gain_adu_per_photon) and self.gain_adu_per_photon > 0

    @property
    def complete(self) -> bool:
        """Whether gain, offset and read noise were all measured."""
        return self.measurable and math.isfinite(self.offset_adu) and math.isfinite(self.read_noise_adu)

    def photons(self, adu: Any) -> Any:
        """Poisson-equivalent photons per pixel at the signal ``adu``.

        Parameters
        ----------
        adu : float or array_like
            Mean signal in ADU.

        Returns
        -------
        photons : float or ndarray
            ``(adu - offset_adu) / gain_adu_per_photon``; NaN when offset or gain are unknown.
        """
        value = (np.asarray(adu, dtype=np.float64) - self.offset_adu) / self.gain_adu_per_photon
        return float(value) if np.ndim(value) == 0 else value

    def variance(self, adu: Any) -> Any:
        """Temporal noise variance (ADU**2) the line predicts at the mean signal ``adu``."""
        value = self.gain_adu_per_photon * np.asarray(adu, dtype=np.float64) + (self.variance_intercept_adu2)
        return float(value) if np.ndim(value) == 0 else value

    def summary(self, median_adu: float | None = None) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None), as the registration attributes store it.

        Parameters
        ----------
        median_adu : float, optional
            Median signal of the series; adds ``photons_at_median``.
        """
        out: dict[str, Any] = {k: _json_number(v) if isinstance(v, float) else v for k, v in asdict(self).items() if not k.startswith("curve_")}
        out["curve"] = {
            "mean": [_json_number(v) for v in self.curve_mean],
            "variance": [_json_number(v) for v in self.curve_variance],
            "pixels": [int(v) for v in self.curve_pixels],
        }
        if median_adu is not None:
            out["median_adu"] = _json_number(float(median_adu))
            out["photons_at_median"] = _json_number(self.photons(float(median_adu)))
        return out

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> PhotonCalibration:
        """Rebuild a calibration from :meth:`summary` (None reads as NaN).

        Raises
        ------
        ValueError
            When ``summary`` lacks the gain or the frame count.
        """
        missing = [k for k in ("gain_adu_per_photon", "frames") if k not in summary]
        if missing:
            raise ValueError(f"photon calibration summary lacks {missing}: {dict(summary)!r}")
        curve = summary.get("curve") or {}

        def num(key: str) -> float:
            value = summary.get(key)
            return math.nan if value is None else float(value)

        return cls(
            gain_adu_per_photon=num("gain_adu_per_photon"),
            offset_adu=num("offset_adu"),
            read_noise_adu=num("read_noise_adu"),
            variance_intercept_adu2=num("variance_intercept_adu2"),
            frames=int(summary["frames"]),
            n_pixels_used=int(summary.get("n_pixels_used") or 0),
            n_pixels=int(summary.get("n_pixels") or 0),
            r2=num("r2"),
            dark_level_adu=num("dark_level_adu"),
            curve_mean=tuple(math.nan if v is None else float(v) for v in curve.get("mean", [])),
            curve_variance=tuple(math.nan if v is None else float(v) for v in curve.get("variance", [])),
            curve_pixels=tuple(int(v) for v in curve.get("pixels", [])),
            reason=summary.get("reason"),
        )


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _not_measurable(frames: int, n_pixels: int, reason: str, **known: Any) -> PhotonCalibration:
    values = {
        "gain_adu_per_photon": math.nan,
        "offset_adu": math.nan,
        "read_noise_adu": math.nan,
        "variance_intercept_adu2": math.nan,
        **known,
    }
    return PhotonCalibration(frames=frames, n_pixels=n_pixels, reason=reason, **values)


# --------------------------------------------------------------------------------------------
# per-pixel statistics


def _pixel_statistics(frames: np.ndarray, signal: Any = None, *, frames_slice: slice = slice(None)) -> dict[str, np.ndarray]:
    """Temporal statistics of every pixel of ``(T, Y, X)`` frames.

    ``signal``, when given, is the expected noise-free value of each frame (anything that
    slices like an array of the frames' shape); the variances are those of ``frames - signal``,
    the mean and the extremes those of ``frames``. ``frames_slice`` (a step) selects frames.
    Frames are read a few at a time, so ``signal`` may compute them lazily.
    """
    index = np.arange(frames.shape[0])[frames_slice]
    t = index.size
    shape = frames.shape[1:]
    total = np.zeros(shape)
    s1 = np.zeros(shape)
    s2 = np.zeros(shape)
    sd = np.zeros(shape)
    low = np.full(shape, np.inf)
    high = np.full(shape, -np.inf)
    ref = prev = None
    step = max(1, _CHUNK_VALUES // max(1, int(np.prod(shape))))
    for k0 in range(0, t, step):
        sel = index[k0 : k0 + step]
        x = np.asarray(frames[sel], dtype=np.float64)
        r = x if signal is None else x - np.asarray(signal[sel], dtype=np.float64)
        if ref is None:
            # Sums of squares about the first frame, not about zero: no cancellation at 4095 ADU.
            ref = r[0].copy()
        r = r - ref
        total += x.sum(axis=0)
        np.minimum(low, x.min(axis=0), out=low)
        np.maximum(high, x.max(axis=0), out=high)
        s1 += r.sum(axis=0)
        s2 += np.sum(r * r, axis=0)
        if prev is not None:
            sd += (r[0] - prev) ** 2
        # Mean square successive difference: half of it is the white-noise variance, whatever
        # slow trend the signal has.
        sd += np.sum(np.diff(r, axis=0) ** 2, axis=0)
        prev = r[-1]
    denom = max(t - 1, 1)
    return {
        "mean": total / t,
        "var": sd / (2.0 * denom),
        "var_total": np.maximum(s2 - s1 * s1 / t, 0.0) / denom,
        "low": low,
        "high": high,
    }


def _bin_curve(mean: np.ndarray, var: np.ndarray, *, bins: int, min_pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean signal, mean variance (gross outliers rejected) and pixel count of each bin."""
    lo, hi = np.percentile(mean, [0.5, 99.5])
    if not hi > lo:
        return np.empty(0), np.empty(0), np.empty(0, dtype=np.int64)
    edges = np.linspace(lo, hi, bins + 1)
    index = np.digitize(mean, edges[1:-1])
    inside = (mean >= lo) & (mean <= hi)
    out_m, out_v, out_n = [], [], []
    for b in range(bins):
        sel = inside & (index == b)
        if np.count_nonzero(sel) < min_pixels:
            continue
        v = var[sel]
        med = np.median(v)
        spread = _MAD_TO_SIGMA * np.median(np.abs(v - med))
        # A pixel a structure flickers through has a variance far above its bin; the cut is so
        # far out that the skewed tail of honest sample variances is kept (no bias from it).
        keep = v <= med + _OUTLIER_SIGMA * spread if spread > 0 else np.ones(v.shape, bool)
        if np.count_nonzero(keep) < min_pixels:
            continue
        out_m.append(mean[sel][keep].mean())
        out_v.append(v[keep].mean())
        out_n.append(int(np.count_nonzero(keep)))
    return np.asarray(out_m), np.asarray(out_v), np.asarray(out_n, dtype=np.int64)


def _weighted_r2(x: np.ndarray, y: np.ndarray, w: np.ndarray, slope: float, icept: float) -> float:
    resid = y - (slope * x + icept)
    ybar = np.average(y, weights=w)
    total = float(np.sum(w * (y - ybar) ** 2))
    return 1.0 - float(np.sum(w * resid**2)) / total if total > 0 else math.nan


def _fit_line(
    mean: np.ndarray,
    var: np.ndarray,
    usable: np.ndarray,
    *,
    t: int,
    bins: int,
    min_pixels: int,
    sigma: float,
    rounds: int = 3,
) -> tuple[float, float, float, np.ndarray, np.ndarray, np.ndarray, int]:
    """Theil-Sen line through the binned curve, refitted without pixels far above it.

    A structure that blinks or passes through a pixel within a frame or two raises that
    pixel's variance without a trend, which the variance ratio cannot see; where such pixels
    fill the bright bins they bend the line up (+26 to +60 % on simulated fields of blinking
    puncta; -5 to +7 % after the refit with ``sigma`` 3, where 4 left +6 to +10 %).
    The sample variance of a Poisson-Gaussian pixel has a relative standard deviation of about
    ``sqrt(3 / (T - 1) + kappa / T)`` (the successive-difference estimator is about 1.5 times
    less efficient than the ordinary one for white noise; ``kappa``, the excess kurtosis, is at
    most ``g**2 / var``), so a pixel more than ``sigma`` of those above the line is not noise.
    Each refit starts from all ``usable`` pixels.
    """
    keep = usable
    slope = icept = r2 = math.nan
    bm = bv = np.empty(0)
    bn = np.empty(0, dtype=np.int64)
    for _ in range(rounds):
        bm, bv, bn = _bin_curve(mean[keep], var[keep], bins=bins, min_pixels=min_pixels)
        if bm.size < _MIN_BINS:
            break
        slope, icept, _, _ = stats.theilslopes(bv, bm)
        slope, icept = float(slope), float(icept)
        r2 = _weighted_r2(bm, bv, bn.astype(np.float64), slope, icept)
        if not (math.isfinite(slope) and slope > 0) or t < 3:
            break
        predicted = np.maximum(slope * mean + icept, 1e-12)
        rel_sd = np.sqrt(3.0 / (t - 1) + slope**2 / (predicted * t))
        new = usable & (var <= predicted * (1.0 + sigma * rel_sd))
        if np.array_equal(new, keep):
            break
        keep = new
    return slope, icept, r2, bm, bv, bn, int(np.count_nonzero(keep))


# --------------------------------------------------------------------------------------------
# offset and read noise


def _dark_core(values: np.ndarray, *, variance: float, gain: float, integer: bool) -> tuple[float, float]:
    """Offset and read noise from the dark pixels' values (see the module notes).

    ``values`` is ``(pixels, frames)``; ``variance`` the dark pixels' mean temporal variance.
    The pixels' photon rates differ (a background is never perfectly flat), so each pixel gets
    its own ``lambda_i = (m_i - offset) / g`` from its mean ``m_i``, and the read noise follows
    from the mean variance, ``sigma**2 = v - g (mean(m) - offset)``: the offset is the one free
    parameter of the likelihood. On simulated tissue fields, whose background holds 1-4
    photons, one rate for all pooled values missed the offset by up to 2.1 ADU and the read
    noise by up to 17 %; per-pixel rates by at most 0.9 ADU and 5 %. Returns
    ``(offset, read_noise)``.
    """
    x = values.astype(np.float64)
    m_i = x.mean(axis=1)
    m = float(m_i.mean())
    # Integer values are ADC codes: each integrates a unit bin of the analogue value, whose
    # rounding adds 1/12 ADU**2 to the measured variance.
    rounding = 1.0 / 12.0 if integer else 0.0
    if variance - rounding <= 0.0:
        return m, math.sqrt(max(variance, 0.0))

    def neg_log_likelihood(offset: float) -> float:
        lam = np.maximum((m_i - offset) / gain, 0.0)
        s = math.sqrt(max(variance - gain * (m - offset) - rounding, 1e-6))
        top = float(lam.max())
        k = np.arange(int(math.ceil(top + 8.0 * math.sqrt(top) + 8.0)) + 1)
        weights = stats.poisson.pmf(k[None, :], lam[:, None])
        centre = offset + gain * k
        z = x[:, :, None] - centre
        if integer:
            p = special.ndtr((z + 0.5) / s) - special.ndtr((z - 0.5) / s)
        else:
            p = np.exp(-0.5 * (z / s) ** 2) / (s * math.sqrt(2.0 * math.pi))
        pmf = np.einsum("pfk,pk->pf", p, weights)
        return -float(np.sum(np.log(np.maximum(pmf, 1e-300))))

    # sigma**2 >= 0 bounds the offset from below; no negative photons bound it from above.
    lowest = m - (variance - rounding) / gain
    grid = np.linspace(lowest, m, 41)
    nll = np.array([neg_log_likelihood(o) for o in grid])
    k = int(np.argmin(nll))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    best = optimize.minimize_scalar(neg_log_likelihood, bounds=(lo, hi), method="bounded")
    offset = float(best.x) if best.fun <= nll[k] else float(grid[k])
    return offset, math.sqrt(max(variance - gain * (m - offset), 0.0))


# --------------------------------------------------------------------------------------------
# calibration


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
    t, ny, nx = arr.shape
    n_pixels = ny * nx
    if t < MIN_FRAMES:
        return _not_measurable(
            t,
            n_pixels,
            f"{t} frame(s): a temporal variance needs at least {MIN_FRAMES} frames of the same field, so the photon transfer curve is not measurable",
        )
    integer = np.issubdtype(arr.dtype, np.integer)
    if saturation is None and integer:
        saturation = float(np.iinfo(arr.dtype).max)
    if floor is None and integer:
        floor = float(np.iinfo(arr.dtype).min)

    st = _pixel_statistics(arr, signal)
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
    n_used = int(np.count_nonzero(usable))
    if n_used < _MIN_BINS * 10:
        return _not_measurable(
            t,
            n_pixels,
            f"only {n_used} of {n_pixels} pixels are unclipped and static over the {t} frames",
            n_pixels_used=n_used,
        )
    per_bin = min_pixels_per_bin if min_pixels_per_bin is not None else max(10, n_used // 1000)
    fit = _fit_line(mean, var, usable, t=t, bins=bins, min_pixels=per_bin, sigma=excess_sigma)
    slope, icept, r2, bm, bv, bn, n_used = fit
    curve = {
        "curve_mean": tuple(float(v) for v in bm),
        "curve_variance": tuple(float(v) for v in bv),
        "curve_pixels": tuple(int(v) for v in bn),
        "n_pixels_used": n_used,
    }
    if bm.size < _MIN_BINS:
        return _not_measurable(
            t,
            n_pixels,
            f"the signal spans {bm.size} populated bin(s); a line needs {_MIN_BINS} (a nearly uniform field)",
            **curve,
        )
    if not (math.isfinite(slope) and slope > 0 and r2 >= _MIN_R2):
        return _not_measurable(
            t,
            n_pixels,
            f"the temporal variance does not grow along a line with the signal (slope "
            f"{slope:.3g} ADU, r2 {r2:.2f}): no shot noise to measure (frames averaged or "
            "denoised, additive noise only), or a curve bent by clipped or changing pixels",
            r2=r2,
            **curve,
        )
    known = {"gain_adu_per_photon": slope, "variance_intercept_adu2": icept, "r2": r2, **curve}

    # Dark pixels are chosen on the even frames and measured on the odd ones. Choosing the
    # lowest means and measuring the same frames would pick pixels whose noise happened to be
    # low: on 100 frames of the default simulated detector the darkest 5 % sit 0.6 ADU below
    # their true mean, and the offset with them.
    if t >= 4:
        choose = _pixel_statistics(arr, signal, frames_slice=slice(0, None, 2))["mean"]
        measured = slice(1, None, 2)
        dark_stats = _pixel_statistics(arr, signal, frames_slice=measured)
    else:
        choose, measured, dark_stats = mean, slice(None), st
    candidates = finite & (st["high"] < saturation if saturation is not None else True)
    n_dark = max(_MIN_DARK_PIXELS, int(_DARK_FRACTION * np.count_nonzero(candidates)))
    order = np.sort(choose[candidates])
    cut = order[min(n_dark, order.size) - 1] if order.size else -np.inf
    darkest = candidates & (choose <= cut)
    # The zero-photon peak must be seen whole: when the darkest pixels reach the bottom of the
    # ADC range its lower half is piled up there (an offset turned down until the background
    # reads 0, as on many confocal systems; or a photon counter whose zero is the floor).
    touching = int(np.count_nonzero(darkest & at_floor))
    if touching > 0.01 * np.count_nonzero(darkest):
        return _not_measurable(
            t,
            n_pixels,
            f"{touching} of the {np.count_nonzero(darkest)} darkest pixels reach the bottom of "
            f"the ADC range ({floor:g} ADU): the zero-photon level lies at or below it, so "
            "offset and read noise are not measurable; the gain and the noise line are",
            dark_level_adu=float(dark_stats["mean"][darkest].mean()),
            **known,
        )
    dark = darkest & ~at_floor & (var > 0)
    if np.count_nonzero(dark) < _MIN_DARK_PIXELS:
        return _not_measurable(
            t,
            n_pixels,
            f"only {np.count_nonzero(dark)} dark pixels: offset and read noise are not measurable, only the gain",
            **known,
        )
    dark_mean = float(dark_stats["mean"][dark].mean())
    dark_var = float(dark_stats["var"][dark].mean())
    if dark_var / slope**2 > _MAX_DARK_PHOTONS:
        # Read noise many photons wide, or a background of many photons: the Poisson peaks
        # merge into one Gaussian and the zero-photon level cannot be told from the rest.
        return _not_measurable(
            t,
            n_pixels,
            f"the dark pixels' variance is {dark_var / slope**2:.0f} photons' worth: no "
            "zero-photon peak is resolved, so offset and read noise are not separable; the gain "
            "and the noise line are measured",
            dark_level_adu=dark_mean,
            **known,
        )
    offset, read = _dark_core(_dark_values(arr, dark, measured), variance=dark_var, gain=slope, integer=integer)
    return PhotonCalibration(
        gain_adu_per_photon=slope,
        offset_adu=offset,
        read_noise_adu=read,
        variance_intercept_adu2=icept,
        frames=t,
        n_pixels_used=n_used,
        n_pixels=n_pixels,
        r2=r2,
        dark_level_adu=dark_mean,
        curve_mean=curve["curve_mean"],
        curve_variance=curve["curve_variance"],
        curve_pixels=curve["curve_pixels"],
    )


def _dark_values(frames: np.ndarray, dark: np.ndarray, measured: slice, limit: int = _DARK_PIXELS_FITTED) -> np.ndarray:
    """``(pixels, frames)`` values of the ``dark`` pixels in the ``measured`` frames.

    At most ``limit`` pixels, evenly spaced among them, to bound the likelihood's cost.
    """
    iy, ix = np.nonzero(dark)
    step = max(1, int(math.ceil(iy.size / limit)))
    return np.asarray(frames[measured][:, iy[::step], ix[::step]]).T


def curve_to_text(calibration: PhotonCalibration) -> str:
    """The binned curve as ``"mean:variance;..."`` (ADU, ADU**2), for one cell of a QC table.

    Empty when no curve was measured.
    """
    return ";".join(f"{m:.6g}:{v:.6g}" for m, v in zip(calibration.curve_mean, calibration.curve_variance, strict=True))


def curve_from_text(text: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`curve_to_text`: ``(mean, variance)`` arrays, empty for an empty cell.

    Raises
    ------
    ValueError
        For text that is not ``mean:variance`` pairs separated by ``;``.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return np.empty(0), np.empty(0)
    try:
        pairs = [tuple(float(x) for x in item.split(":")) for item in str(text).split(";")]
        if any(len(p) != 2 for p in pairs):
            raise ValueError
    except ValueError:
        raise ValueError(f"photon curve {str(text)[:60]!r} is not 'mean:variance' pairs separated by ';'") from None
    arr = np.asarray(pairs, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


# --------------------------------------------------------------------------------------------
# variance stabilisation


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
