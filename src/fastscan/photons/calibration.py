"""The measured detector of one series (:class:`PhotonCalibration`) and its serialisations.

The JSON summary the registration attributes store, and the binned curve as one cell of a QC
table. See :mod:`fastscan.photons` for the model and how it is measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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
