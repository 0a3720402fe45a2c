"""Where the GAN departs from the MSE generator by more than the noise level.

The stage-1 generator is trained with a pixel MSE loss, so it predicts (close to)
the conditional mean of the HR image given the LR input: blurred where the input
is ambiguous, but without invented detail. The GAN starts from it and is pushed
by the critic towards sharp, plausible texture, which is exactly where it may
draw structure the specimen does not have. A pixel is therefore *flagged* when
``|GAN - MSE|`` exceeds ``k`` times a robust noise level; on the test images,
where the HR target is known, each flagged pixel is also checked for whether the
GAN moved *away* from the target (further from it than the MSE generator was),
which is what an invented structure does, or towards it (recovered detail).

Noise level
-----------
``"residual"`` (default): the robust standard deviation (1.4826 x median absolute
deviation) of ``MSE - target``, i.e. the typical error of the MSE generator on
that image, which includes the target's own noise. A GAN departure below
``k`` times this is within the uncertainty of the conditional-mean estimate and
cannot be called invented. The median makes it insensitive to the few large
errors at edges.

``"highpass"``: the noise of the HR target alone, from the median absolute
response to Immerkaer's (1996) 3 x 3 Laplacian-difference kernel, which cancels
smooth structure (sd of the kernel response to white noise of sd ``s`` is
``6 s``). It is smaller and flags more.

All images are on the normalised HR scale (training-split percentiles mapped to
0 and 1), so the noise level and threshold are in those units.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "DEFAULT_K",
    "HALLUCINATION_COLUMNS",
    "NOISE_METHODS",
    "Departure",
    "departure_map",
    "estimate_noise_sd",
    "hallucination_table",
    "robust_sd",
]

logger = logging.getLogger(__name__)

#: Multiple of the noise level beyond which a GAN departure is flagged: about 0.3 %
#: of the pixels of a Gaussian difference of that sd would exceed it by chance.
DEFAULT_K: float = 3.0

#: Ways to estimate the noise level, see the module docstring.
NOISE_METHODS: tuple[str, ...] = ("residual", "highpass")

#: Columns of the per-image table, in order.
HALLUCINATION_COLUMNS: tuple[str, ...] = (
    "model",
    "sample",
    "session",
    "fov",
    "frame",
    "noise",
    "noise_sd",
    "k",
    "threshold",
    "fraction_flagged",
    "flagged_away_share",
)

# 1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian standard deviation.
_MAD_TO_SD = 1.482602218505602
# Immerkaer's kernel: two discrete Laplacians subtracted, zero on planes and quadratics.
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_IMMERKAER_NORM = float(np.sqrt((_IMMERKAER**2).sum()))  # = 6
# float32 rounding of two predictions of the same network is not a departure.
_MIN_THRESHOLD = 1e-6


@dataclass(frozen=True)
class Departure:
    """Result of :func:`departure_map` for one image.

    Attributes
    ----------
    difference : ndarray, shape (Y, X)
        ``|GAN - MSE|`` in normalised HR units.
    flagged : ndarray of bool, shape (Y, X)
        ``difference > threshold``.
    noise_sd : float
        Noise level the threshold is built on.
    threshold : float
        ``max(k * noise_sd, 1e-6)``.
    fraction_flagged : float
        Flagged pixels over all pixels.
    flagged_away_share : float
        Of the flagged pixels, the share where the GAN is further from the
        target than the MSE generator; NaN without a target or flagged pixels.
    """

    difference: np.ndarray
    flagged: np.ndarray
    noise_sd: float
    threshold: float
    fraction_flagged: float
    flagged_away_share: float


def robust_sd(values: np.ndarray) -> float:
    """Standard deviation from the median absolute deviation (exact for Gaussian data).

    ``1.4826 * median(|v - median(v)|)`` over the finite values; NaN if there
    are none.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(_MAD_TO_SD * np.median(np.abs(v - np.median(v))))


def estimate_noise_sd(target: np.ndarray, *, reference: np.ndarray | None = None, method: str = "residual") -> float:
    """Noise level of one image on the normalised HR scale.

    Parameters
    ----------
    target : ndarray, shape (Y, X)
        HR target.
    reference : ndarray, shape (Y, X), optional
        MSE-generator prediction; required by ``method="residual"``.
    method : {"residual", "highpass"}
        ``"residual"``: :func:`robust_sd` of ``reference - target``.
        ``"highpass"``: median absolute response of `target` to Immerkaer's
        3 x 3 kernel, as a Gaussian sd (``/ 0.6745 / 6``), over the interior
        (the kernel needs all 8 neighbours).

    Returns
    -------
    float
        The estimated standard deviation.
    """
    t = np.asarray(target, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"estimate_noise_sd expects a (Y, X) target, got shape {t.shape}")
    if method == "residual":
        if reference is None:
            raise ValueError("noise method 'residual' needs the MSE prediction as reference")
        r = np.asarray(reference, dtype=np.float64)
        if r.shape != t.shape:
            raise ValueError(f"reference shape {r.shape} differs from target shape {t.shape}")
        return robust_sd(r - t)
    if method == "highpass":
        if min(t.shape) < 3:
            raise ValueError(f"noise method 'highpass' needs an image of at least 3 x 3, got {t.shape}")
        response = ndimage.correlate(t, _IMMERKAER, mode="nearest")[1:-1, 1:-1]
        # The median of |N(0, s)| is 0.6745 s; a median of the response (not its mean, as in
        # Immerkaer's paper) keeps the structure edges the kernel does not cancel from inflating it.
        return float(np.median(np.abs(response)) * _MAD_TO_SD / _IMMERKAER_NORM)
    raise ValueError(f"noise method must be one of {NOISE_METHODS}, got {method!r}")


def departure_map(
    gan: np.ndarray,
    mse: np.ndarray,
    *,
    target: np.ndarray | None = None,
    k: float = DEFAULT_K,
    noise: str = "residual",
    noise_sd: float | None = None,
) -> Departure:
    """Flag the pixels where the GAN departs from the MSE generator beyond the noise.

    Parameters
    ----------
    gan, mse : ndarray, shape (Y, X)
        GAN and stage-1 generator predictions of one frame, normalised HR scale.
    target : ndarray, shape (Y, X), optional
        HR target; needed to estimate the noise (unless `noise_sd` is given)
        and for ``flagged_away_share``.
    k : float, optional
        Threshold in multiples of the noise level (positive).
    noise : {"residual", "highpass"}, optional
        Noise estimate, see :func:`estimate_noise_sd`.
    noise_sd : float, optional
        Use this noise level instead of estimating it.

    Returns
    -------
    Departure
        The difference map, the flagged pixels and their fractions.
    """
    g = np.asarray(gan, dtype=np.float64)
    m = np.asarray(mse, dtype=np.float64)
    if g.ndim != 2 or g.shape != m.shape:
        raise ValueError(f"gan {g.shape} and mse {m.shape} must be (Y, X) images of one shape")
    if not k > 0:
        raise ValueError(f"k must be positive, got {k!r}")
    t = None
    if target is not None:
        t = np.asarray(target, dtype=np.float64)
        if t.shape != g.shape:
            raise ValueError(f"target shape {t.shape} differs from the predictions' {g.shape}")
    if noise_sd is None:
        if t is None:
            raise ValueError("departure_map needs the target to estimate the noise, or noise_sd")
        noise_sd = estimate_noise_sd(t, reference=m, method=noise)
    if not np.isfinite(noise_sd) or noise_sd < 0:
        raise ValueError(f"noise level must be a finite non-negative number, got {noise_sd!r}")
    threshold = max(k * float(noise_sd), _MIN_THRESHOLD)
    difference = np.abs(g - m)
    flagged = difference > threshold
    n_flagged = int(flagged.sum())
    away = float("nan")
    if t is not None and n_flagged:
        further = np.abs(g - t) > np.abs(m - t)
        away = float((further & flagged).sum() / n_flagged)
    return Departure(
        difference=difference,
        flagged=flagged,
        noise_sd=float(noise_sd),
        threshold=threshold,
        fraction_flagged=n_flagged / flagged.size,
        flagged_away_share=away,
    )


def _store_rows(path: Path, ident: Mapping[str, Any], *, k: float, noise: str, gan: str, mse: str) -> list[dict[str, Any]]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    nested = dict(group.attrs).get("fastscan", {})
    attrs = dict(nested) if isinstance(nested, Mapping) else {}
    for name in ("hr", gan, mse):
        if name not in group:
            raise ValueError(f"{path}: array {name!r} is missing; the departure map needs 'hr', {gan!r} and {mse!r}")
    hr = np.asarray(group["hr"][...], dtype=np.float64)
    n = group[gan].shape[0]
    if group[mse].shape[0] != n:
        raise ValueError(f"{path}: {gan!r} has {n} frames but {mse!r} has {group[mse].shape[0]}")
    frames = [int(f) for f in attrs.get("frames", range(n))]
    if len(frames) != n:
        raise ValueError(f"{path}: fastscan.frames lists {len(frames)} frames but {gan!r} has {n}")
    rows = []
    for i, frame in enumerate(frames):
        result = departure_map(group[gan][i], group[mse][i], target=hr, k=k, noise=noise)
        rows.append(
            {
                **{c: str(ident.get(c, attrs.get(c, ""))) for c in ("model", "sample", "session", "fov")},
                "frame": frame,
                "noise": noise,
                "noise_sd": result.noise_sd,
                "k": float(k),
                "threshold": result.threshold,
                "fraction_flagged": result.fraction_flagged,
                "flagged_away_share": result.flagged_away_share,
            }
        )
    return rows


def hallucination_table(
    stores: Iterable[str | Path | Mapping[str, Any]],
    *,
    k: float = DEFAULT_K,
    noise: str = "residual",
    gan: str = "gan",
    mse: str = "mse",
) -> pd.DataFrame:
    """Per-image departure of the GAN from the MSE generator over restored FOV stores.

    Parameters
    ----------
    stores : iterable of path or mapping
        Restored FOV stores (``docs/architecture.md``), or mappings with a
        ``restored`` path and optional ``model``, ``sample``, ``session``,
        ``fov`` (otherwise read from the store's ``fastscan`` attributes, and
        failing those from the path ``.../{model}/{sample}/{session}/{fov}.zarr``).
        Stores without both methods are skipped with a warning.
    k, noise : optional
        As :func:`departure_map`.
    gan, mse : str, optional
        Array names of the two methods compared.

    Returns
    -------
    pandas.DataFrame
        :data:`HALLUCINATION_COLUMNS`, one row per restored frame.
    """
    import zarr

    rows: list[dict[str, Any]] = []
    for entry in stores:
        if isinstance(entry, Mapping):
            path = Path(entry["restored"])
            ident = {c: entry[c] for c in ("model", "sample", "session", "fov") if c in entry}
        else:
            path = Path(entry)
            ident = {}
        # Restored stores live at .../{model}/{sample}/{session}/{fov}.zarr; the store's own
        # attributes win over the path for sample, session and fov.
        if len(path.parts) >= 4:
            ident.setdefault("model", path.parts[-4])
        from_path = dict(zip(("sample", "session", "fov"), [*path.parts[-3:-1], path.name.removesuffix(".zarr")]))
        group = zarr.open_group(str(path), mode="r")
        if gan not in group or mse not in group:
            logger.warning("%s: no %r and %r arrays to compare; left out of the departure table", path, gan, mse)
            continue
        attrs = dict(group.attrs).get("fastscan", {})
        for key, value in from_path.items():
            if key not in ident and not (isinstance(attrs, Mapping) and key in attrs):
                ident[key] = value
        rows.extend(_store_rows(path, ident, k=k, noise=noise, gan=gan, mse=mse))
    df = pd.DataFrame(rows, columns=list(HALLUCINATION_COLUMNS))
    df = df.astype({c: str for c in ("model", "sample", "session", "fov", "noise")})
    df["frame"] = df["frame"].astype("int64")
    logger.info("departure of %r from %r scored on %d frames", gan, mse, len(df))
    return df
