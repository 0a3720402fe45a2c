"""The photon transfer curve of a series and its line: per-pixel temporal statistics, the binned
mean-variance curve and the Theil-Sen fit whose slope is the gain (see :mod:`fastscan.photons`)."""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from scipy import stats

from fastscan.photons.calibration import PhotonCalibration, _not_measurable

# Fewest bins the line needs, and the least share of the binned curve it must explain
# (0.93-0.9998 on simulated series; a curve bent by clipped pixels went down to 0.27).
_MIN_BINS: Final[int] = 4
_MIN_R2: Final[float] = 0.5
# Values converted to float64 at a time (whole frames; 8 MB per array).
_CHUNK_VALUES: Final[int] = 1 << 20
# Gross outliers of a bin's variances, in robust standard deviations above the bin median.
_OUTLIER_SIGMA: Final[float] = 8.0
_MAD_TO_SIGMA: Final[float] = 1.4826


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


def _transfer_line(
    st: dict[str, np.ndarray],
    usable: np.ndarray,
    *,
    t: int,
    n_pixels: int,
    bins: int,
    min_pixels_per_bin: int | None,
    excess_sigma: float,
) -> dict[str, Any] | PhotonCalibration:
    """The line through the ``usable`` pixels' curve: the measured fields of the calibration
    (gain, intercept, r2, the binned curve and the pixels used), or, when no line is measurable,
    the calibration that says why."""
    n_used = int(np.count_nonzero(usable))
    if n_used < _MIN_BINS * 10:
        return _not_measurable(
            t,
            n_pixels,
            f"only {n_used} of {n_pixels} pixels are unclipped and static over the {t} frames",
            n_pixels_used=n_used,
        )
    per_bin = min_pixels_per_bin if min_pixels_per_bin is not None else max(10, n_used // 1000)
    fit = _fit_line(st["mean"], st["var"], usable, t=t, bins=bins, min_pixels=per_bin, sigma=excess_sigma)
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
    return {"gain_adu_per_photon": slope, "variance_intercept_adu2": icept, "r2": r2, **curve}
