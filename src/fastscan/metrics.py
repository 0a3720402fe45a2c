"""Image-quality metrics of restored frames against the HR target.

All metrics are computed on the normalised HR scale: intensities mapped by the
training split's percentiles so that ``low -> 0`` and ``high -> 1`` (see
``docs/architecture.md``). ``data_range`` is therefore 1 and is always passed
explicitly, because scikit-image otherwise guesses it from the dtype (and a
float guess of 2, for [-1, 1], shifts PSNR by 6 dB).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skimage import metrics as skm

from fastscan.baselines import BASELINE_ORDERS, method_label, method_sort_key, upsample

__all__ = [
    "METRIC_COLUMNS",
    "SSIM_WIN_SIZE",
    "SUMMARY_COLUMNS",
    "evaluate_many",
    "evaluate_restored",
    "nrmse",
    "psnr",
    "read_metrics_tsv",
    "ssim",
    "summarise",
    "write_tsv",
]

logger = logging.getLogger(__name__)

#: Columns of the per-image metrics table, in order.
METRIC_COLUMNS: tuple[str, ...] = (
    "model",
    "sample",
    "session",
    "fov",
    "frame",
    "method",
    "psnr",
    "ssim",
    "nrmse",
)

#: Side of the square SSIM window (uniform weights), as in Wang et al. (2004)
#: with the uniform-window implementation of scikit-image.
SSIM_WIN_SIZE: int = 7

#: Columns of the summary table (Table II), in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "sample",
    "method",
    "label",
    "n",
    "psnr_mean",
    "psnr_sd",
    "psnr_n",
    "ssim_mean",
    "ssim_sd",
    "nrmse_mean",
    "nrmse_sd",
)

_ID_COLUMNS: tuple[str, ...] = ("model", "sample", "session", "fov")


def _as_pair(pred: np.ndarray, target: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"{what}: prediction shape {p.shape} differs from target shape {t.shape}")
    return p, t


def psnr(pred: np.ndarray, target: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB.

    ``10 * log10(data_range**2 / MSE)``, via
    :func:`skimage.metrics.peak_signal_noise_ratio`.

    Parameters
    ----------
    pred, target : ndarray
        Restored image and HR target, same shape; computed in float64.
    data_range : float, optional
        Peak-to-peak range of the intensity scale (1 on the normalised scale).

    Returns
    -------
    float
        PSNR in dB; ``inf`` when `pred` equals `target` exactly. The infinite
        value is kept rather than capped so that a perfect score cannot be
        mistaken for a measured one; :func:`summarise` and the box plots leave
        non-finite values out, with a warning.
    """
    p, t = _as_pair(pred, target, "psnr")
    # skimage divides by the MSE and would emit a divide-by-zero RuntimeWarning.
    if skm.mean_squared_error(t, p) == 0.0:
        return math.inf
    return float(skm.peak_signal_noise_ratio(t, p, data_range=data_range))


def ssim(pred: np.ndarray, target: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean structural similarity index (unitless, at most 1).

    Via :func:`skimage.metrics.structural_similarity` with a 7 x 7 uniform
    window (``gaussian_weights=False``, ``win_size=7``), the sample covariance
    and the default constants ``K1 = 0.01``, ``K2 = 0.03``.

    Parameters
    ----------
    pred, target : ndarray
        2-D restored image and HR target, same shape, each side at least 7;
        computed in float64.
    data_range : float, optional
        Peak-to-peak range of the intensity scale (1 on the normalised scale);
        it sets the stabilising constants ``(K * data_range)**2``.

    Returns
    -------
    float
        Mean SSIM over the image, excluding a 3-pixel border that the window
        cannot cover.

    Notes
    -----
    The uniform 7 x 7 window is scikit-image's default; the Gaussian window
    (sigma 1.5) of Wang et al. gives values that differ by about 0.01, so the
    choice is fixed here to keep numbers comparable between runs and releases.
    """
    p, t = _as_pair(pred, target, "ssim")
    return float(
        skm.structural_similarity(
            t,
            p,
            data_range=data_range,
            win_size=SSIM_WIN_SIZE,
            gaussian_weights=False,
            use_sample_covariance=True,
        )
    )


def nrmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root-mean-square error normalised by the target's Euclidean norm.

    ``sqrt(mean((pred - target)**2)) / sqrt(mean(target**2))``, i.e.
    ``||pred - target|| / ||target||`` (scikit-image's ``'euclidean'``
    normalisation), via :func:`skimage.metrics.normalized_root_mse`.

    Parameters
    ----------
    pred, target : ndarray
        Restored image and HR target, same shape; computed in float64.

    Returns
    -------
    float
        Unitless NRMSE; ``inf`` (or ``nan``) if the target is all zeros.
    """
    p, t = _as_pair(pred, target, "nrmse")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(skm.normalized_root_mse(t, p, normalization="euclidean"))


def _fastscan_attrs(group: Any) -> dict[str, Any]:
    attrs = dict(group.attrs)
    nested = attrs.get("fastscan")
    return dict(nested) if isinstance(nested, Mapping) else {}


def evaluate_restored(
    restored: str | Path,
    *,
    model: str,
    sample: str,
    session: str,
    fov: str,
) -> pd.DataFrame:
    """Score every method on every restored frame of one FOV.

    Parameters
    ----------
    restored : str or Path
        Restored FOV store (Zarr v3 group) with arrays ``lr`` ``(N, y, x)``,
        ``hr`` ``(Y, X)`` and one ``(N, Y, X)`` array per learned method named
        in the group attribute ``fastscan.methods``; ``fastscan.frames`` gives
        the frame index of each of the ``N`` frames (``0..N-1`` if absent) and
        ``fastscan.scale`` the HR pixels per LR pixel (inferred from the
        shapes if absent). All intensities are on the normalised scale.
    model, sample, session, fov : str
        Identifiers copied into the table.

    Returns
    -------
    pandas.DataFrame
        One row per (frame, method) with columns :data:`METRIC_COLUMNS`. The
        bilinear and bicubic baselines are computed from ``lr`` with
        :func:`fastscan.baselines.upsample`; methods appear in
        :data:`fastscan.baselines.METHODS` order, unknown names after.

    Raises
    ------
    ValueError
        If an array is missing, a learned method collides with a baseline
        name, or the shapes of ``lr``, ``hr``, the method arrays, ``frames``
        and ``scale`` disagree; the message names the store and the arrays.
    """
    import zarr

    store = Path(restored)
    group = zarr.open_group(str(store), mode="r")
    attrs = _fastscan_attrs(group)
    learned = [str(m) for m in attrs.get("methods", [])]
    clash = sorted(set(learned) & set(BASELINE_ORDERS))
    if clash:
        raise ValueError(
            f"{store}: stored methods {clash} collide with baselines computed from 'lr'; rename them"
        )
    for name in ("lr", "hr", *learned):
        if name not in group:
            raise ValueError(f"{store}: array {name!r} is missing (arrays listed in fastscan.methods: {learned})")

    lr = group["lr"]
    hr = np.asarray(group["hr"][...], dtype=np.float64)
    if lr.ndim != 3 or hr.ndim != 2:
        raise ValueError(f"{store}: expected 'lr' (N, y, x) and 'hr' (Y, X), got 'lr' {lr.shape} and 'hr' {hr.shape}")
    n_frames = lr.shape[0]

    scale = attrs.get("scale")
    if scale is None:
        scale = hr.shape[0] // lr.shape[1] if lr.shape[1] else 0
    scale = int(scale)
    if (scale * lr.shape[1], scale * lr.shape[2]) != hr.shape:
        raise ValueError(
            f"{store}: 'lr' {lr.shape} upsampled by scale {scale} does not match 'hr' {hr.shape}"
        )
    for name in learned:
        shape = tuple(group[name].shape)
        if shape != (n_frames, *hr.shape):
            raise ValueError(
                f"{store}: array {name!r} has shape {shape}, expected {(n_frames, *hr.shape)} "
                f"from 'lr' {lr.shape} and 'hr' {hr.shape}"
            )
    frames = [int(f) for f in attrs.get("frames", range(n_frames))]
    if len(frames) != n_frames:
        raise ValueError(f"{store}: fastscan.frames lists {len(frames)} frames but 'lr' has {n_frames}")

    methods = sorted([*BASELINE_ORDERS, *learned], key=method_sort_key)
    rows: list[dict[str, Any]] = []
    # One frame at a time: a full (N, Y, X) stack per method need not fit in memory.
    for i, frame in enumerate(frames):
        lr_frame = np.asarray(lr[i], dtype=np.float64)
        for method in methods:
            if method in BASELINE_ORDERS:
                pred = upsample(lr_frame, scale=scale, order=BASELINE_ORDERS[method])
            else:
                pred = group[method][i]
            rows.append(
                {
                    "model": model,
                    "sample": sample,
                    "session": session,
                    "fov": fov,
                    "frame": frame,
                    "method": method,
                    "psnr": psnr(pred, hr),
                    "ssim": ssim(pred, hr),
                    "nrmse": nrmse(pred, hr),
                }
            )
    logger.info("%s: scored %d frames x %d methods (%s)", store, n_frames, len(methods), ", ".join(methods))
    return _typed(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)))


def evaluate_many(stores: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Concatenate :func:`evaluate_restored` over several restored stores.

    Parameters
    ----------
    stores : iterable of mapping
        Each with keys ``restored``, ``model``, ``sample``, ``session``, ``fov``.

    Returns
    -------
    pandas.DataFrame
        The per-image table (:data:`METRIC_COLUMNS`), possibly empty.
    """
    tables = [
        evaluate_restored(
            s["restored"], model=str(s["model"]), sample=str(s["sample"]), session=str(s["session"]), fov=str(s["fov"])
        )
        for s in stores
    ]
    if not tables:
        return _typed(pd.DataFrame(columns=list(METRIC_COLUMNS)))
    return pd.concat(tables, ignore_index=True)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    # Identifiers stay strings so that FOV "001" never becomes the integer 1.
    df = df.astype({c: str for c in (*_ID_COLUMNS, "method")})
    df["frame"] = df["frame"].astype("int64")
    for c in ("psnr", "ssim", "nrmse"):
        df[c] = df[c].astype("float64")
    return df


def read_metrics_tsv(path: str | Path) -> pd.DataFrame:
    """Read a per-image metrics table written by :func:`write_tsv`.

    Identifier columns are read as strings (``fov`` ``"001"`` stays ``"001"``)
    and ``inf`` as infinity.
    """
    df = pd.read_csv(
        path,
        sep="\t",
        dtype={c: str for c in (*_ID_COLUMNS, "method")},
        # Only the spellings write_tsv uses mean missing: a sample called "NA" stays "NA".
        keep_default_na=False,
        na_values=["NaN", ""],
    )
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing metrics columns {missing}")
    return _typed(df)


def _finite_stats(values: pd.Series) -> tuple[float, float, int]:
    v = values.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if v.size else math.nan
    # Sample standard deviation; undefined for a single image.
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return mean, sd, int(v.size)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Table II: per (model, sample, method) mean and SD of PSNR and SSIM.

    Parameters
    ----------
    df : pandas.DataFrame
        Per-image table from :func:`evaluate_restored` (columns
        :data:`METRIC_COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUMMARY_COLUMNS` (``model, sample, method, label, n,
        psnr_mean, psnr_sd, psnr_n, ssim_mean, ssim_sd, nrmse_mean,
        nrmse_sd``), one row per
        (model, sample, method) present, methods in
        :data:`fastscan.baselines.METHODS` order. ``n`` counts images;
        ``psnr_n`` counts the finite PSNR values the PSNR statistics use.
        SD is the sample standard deviation (``ddof=1``; NaN for one image).

    Warns
    -----
    Logs a warning when non-finite values (PSNR of an exact reconstruction)
    are left out of the statistics.
    """
    missing = [c for c in ("model", "sample", "method", "psnr", "ssim", "nrmse") if c not in df.columns]
    if missing:
        raise ValueError(f"summarise: metrics table lacks columns {missing}")
    rows: list[dict[str, Any]] = []
    for (model, sample, method), group in df.groupby(["model", "sample", "method"], sort=False):
        n = len(group)
        row: dict[str, Any] = {
            "model": model,
            "sample": sample,
            "method": method,
            "label": method_label(str(method)),
            "n": n,
        }
        for metric in ("psnr", "ssim", "nrmse"):
            mean, sd, kept = _finite_stats(group[metric])
            if kept < n:
                logger.warning(
                    "%s/%s/%s: %d of %d %s values are not finite and are left out of the summary",
                    model,
                    sample,
                    method,
                    n - kept,
                    n,
                    metric,
                )
            row[f"{metric}_mean"] = mean
            row[f"{metric}_sd"] = sd
            if metric == "psnr":
                row["psnr_n"] = kept
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    if out.empty:
        return out
    ranked = sorted(out["method"].unique(), key=method_sort_key)
    rank = {m: i for i, m in enumerate(ranked)}
    out = out.assign(_rank=out["method"].map(rank))
    out = out.sort_values(["model", "sample", "_rank"], kind="stable").drop(columns="_rank")
    return out.reset_index(drop=True)


def write_tsv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write `df` as a tab-separated table, atomically.

    The table goes to a temporary file beside `path` that is then renamed
    over it, so a killed job never leaves a truncated table that looks
    finished. Floats are written with 4 decimals; infinities as ``inf`` and
    missing values as ``NaN``.

    Returns
    -------
    Path
        `path`.
    """
    from fastscan.atomic import atomic_path

    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", newline="") as fh:
        df.to_csv(fh, sep="\t", index=False, float_format="%.4f", na_rep="NaN", lineterminator="\n")
    logger.info("wrote %s (%d rows)", target, len(df))
    return target

