"""Image-quality metrics of restored frames against the HR target.

All metrics are computed on the normalised HR scale: intensities mapped by the
training split's percentiles so that ``low -> 0`` and ``high -> 1`` (see
``docs/architecture.md``). ``data_range`` is therefore 1 and is always passed
explicitly, because scikit-image otherwise guesses it from the dtype (and a
float guess of 2, for [-1, 1], shifts PSNR by 6 dB).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skimage import metrics as skm

from fastscan.baselines import BASELINE_ORDERS, finetune_pairs, method_label, method_sort_key, upsample

__all__ = [
    "ABLATION_COLUMNS",
    "GENERALISATION_COLUMNS",
    "METRIC_COLUMNS",
    "SSIM_WIN_SIZE",
    "SUMMARY_COLUMNS",
    "ablation_table",
    "evaluate_many",
    "evaluate_restored",
    "generalisation_table",
    "model_pairs",
    "nrmse",
    "psnr",
    "read_metrics_tsv",
    "read_optional_metrics",
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
    "pairs",
)

#: Side of the square SSIM window (uniform weights), as in Wang et al. (2004)
#: with the uniform-window implementation of scikit-image.
SSIM_WIN_SIZE: int = 7

_STAT_COLUMNS: tuple[str, ...] = (
    "n",
    "psnr_mean",
    "psnr_sd",
    "psnr_n",
    "ssim_mean",
    "ssim_sd",
    "nrmse_mean",
    "nrmse_sd",
)

#: Columns of the summary table (Table II), in order.
SUMMARY_COLUMNS: tuple[str, ...] = ("model", "sample", "method", "label", "pairs", *_STAT_COLUMNS)

#: Columns of :func:`summarise_methods`: Table II's statistics of one model over all its samples.
METHOD_SUMMARY_COLUMNS: tuple[str, ...] = ("method", "label", "pairs", *_STAT_COLUMNS)

#: Columns of the data-size ablation table (Table III), in order; ``ablation`` names the
#: ``results/ablation/{ablation}/metrics.tsv`` a row comes from.
ABLATION_COLUMNS: tuple[str, ...] = ("ablation", "sample", "method", "label", "pairs", *_STAT_COLUMNS)

#: Columns of the generalisation table (Table IV), in order; ``finetune`` names the
#: ``results/finetune/{finetune}/metrics.tsv`` a row comes from.
GENERALISATION_COLUMNS: tuple[str, ...] = ("finetune", "sample", "method", "label", "pairs", *_STAT_COLUMNS)

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


def model_record(model_dir: str | Path, *, consequence: str) -> dict | None:
    """A model's ``model.json`` for a table that reports on the model, or None with a warning.

    Lenient, unlike :func:`fastscan.models.read_model_json`, which checks the file before a model
    is used: restoring with the model has already done that, and a record that cannot be read
    when the tables are written costs a cell or a line (``consequence``, said in the warning),
    not the metrics or the report.
    """
    path = Path(model_dir) / "model.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        logger.warning("%s not found: %s", path, consequence)
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s unreadable (%s): %s", path, exc, consequence)
        return None
    if not isinstance(meta, dict):
        logger.warning("%s holds no JSON object: %s", path, consequence)
        return None
    return meta


def model_pairs(model_dir: str | Path) -> int | None:
    """Number of training tile pairs behind a trained model, from its ``model.json``.

    Parameters
    ----------
    model_dir : str or Path
        Model directory holding ``model.json``.

    Returns
    -------
    int or None
        ``dataset.tiles_train`` when present, else ``dataset.counts.train`` (the
        training tiles the dataset store counted; each tile is one LR/HR pair);
        ``None`` when the file or both keys are missing, with a warning, so a
        metrics table can still be written for a model whose provenance is gone.
    """
    path = Path(model_dir) / "model.json"
    meta = model_record(model_dir, consequence="number of training pairs unknown")
    if meta is None:
        return None
    dataset = meta.get("dataset")
    if not isinstance(dataset, Mapping):
        logger.warning("%s has no 'dataset' entry: number of training pairs unknown", path)
        return None
    value = dataset.get("tiles_train")
    if value is None and isinstance(dataset.get("counts"), Mapping):
        value = dataset["counts"].get("train")
    if value is None:
        logger.warning("%s has neither dataset.tiles_train nor dataset.counts.train", path)
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        logger.warning("%s: dataset.tiles_train %r is not an integer", path, value)
        return None


def _method_pairs(
    learned: Sequence[str],
    models: Mapping[str, Any],
    override: Mapping[str, int | None] | None,
    root: Path,
) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for method in learned:
        if override is not None and method in override:
            out[method] = None if override[method] is None else int(override[method])
            continue
        value: int | None = None
        if method in models:
            model_dir = Path(str(models[method]))
            value = model_pairs(model_dir if model_dir.is_absolute() else root / model_dir)
        if value is None:
            # A fine-tuned method carries its number of pairs in its name.
            value = finetune_pairs(method)
        out[method] = value
    return out


def evaluate_restored(
    restored: str | Path,
    *,
    model: str,
    sample: str,
    session: str,
    fov: str,
    pairs: Mapping[str, int | None] | None = None,
    root: str | Path | None = None,
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
    pairs : mapping, optional
        Method -> number of training pairs, overriding what is read from the
        models' ``model.json``.
    root : str or Path, optional
        Directory that relative model paths in ``fastscan.models`` are resolved
        against (the working directory of the run that wrote the store);
        default the current directory.

    Returns
    -------
    pandas.DataFrame
        One row per (frame, method) with columns :data:`METRIC_COLUMNS`. The
        bilinear and bicubic baselines are computed from ``lr`` with
        :func:`fastscan.baselines.upsample` (at scale 1 only ``bilinear``: the
        frame itself); methods appear in
        :data:`fastscan.baselines.METHODS` order, unknown names after.
        ``pairs`` is the number of training tile pairs of the model behind a
        learned method (:func:`model_pairs` of its directory in
        ``fastscan.models``; for ``finetune_{N}`` without a readable
        ``model.json``, ``N``); missing for the baselines, the classical
        cascade and models whose ``model.json`` cannot be read.

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
        raise ValueError(f"{store}: stored methods {clash} collide with baselines computed from 'lr'; rename them")
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
        raise ValueError(f"{store}: 'lr' {lr.shape} upsampled by scale {scale} does not match 'hr' {hr.shape}")
    for name in learned:
        shape = tuple(group[name].shape)
        if shape != (n_frames, *hr.shape):
            raise ValueError(f"{store}: array {name!r} has shape {shape}, expected {(n_frames, *hr.shape)} from 'lr' {lr.shape} and 'hr' {hr.shape}")
    frames = [int(f) for f in attrs.get("frames", range(n_frames))]
    if len(frames) != n_frames:
        raise ValueError(f"{store}: fastscan.frames lists {len(frames)} frames but 'lr' has {n_frames}")

    # At scale 1 (denoising) there is nothing to upsample: every spline order returns the frame
    # itself, and one row of it ("bilinear") says all a second identical row would.
    baselines = [m for m, order in BASELINE_ORDERS.items() if scale > 1 or order == 1]
    methods = sorted([*baselines, *learned], key=method_sort_key)
    models = attrs.get("models") if isinstance(attrs.get("models"), Mapping) else {}
    base = Path(root) if root is not None else Path(os.getcwd())
    method_pairs = _method_pairs(learned, models, pairs, base)
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
                    "pairs": method_pairs.get(method),
                }
            )
    logger.info("%s: scored %d frames x %d methods (%s)", store, n_frames, len(methods), ", ".join(methods))
    return _typed(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)))


def evaluate_many(stores: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Concatenate :func:`evaluate_restored` over several restored stores.

    Parameters
    ----------
    stores : iterable of mapping
        Each with keys ``restored``, ``model``, ``sample``, ``session``, ``fov``
        and optionally ``pairs`` (see :func:`evaluate_restored`).

    Returns
    -------
    pandas.DataFrame
        The per-image table (:data:`METRIC_COLUMNS`), possibly empty.
    """
    tables = [
        evaluate_restored(
            s["restored"],
            model=str(s["model"]),
            sample=str(s["sample"]),
            session=str(s["session"]),
            fov=str(s["fov"]),
            pairs=s.get("pairs"),
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
    # Nullable integers: a count stays a count, and "unknown" stays distinguishable from 0.
    if "pairs" not in df.columns:
        df["pairs"] = pd.NA
    df["pairs"] = pd.to_numeric(df["pairs"], errors="coerce").astype("Int64")
    return df


_NA_SPELLINGS: tuple[str, ...] = ("NaN", "")
# Files written by other tools may spell a missing count as NA; identifiers keep "NA" as a name.
_PAIRS_NA_SPELLINGS: tuple[str, ...] = ("NaN", "", "NA", "nan", "<NA>", "None")


def read_metrics_tsv(path: str | Path) -> pd.DataFrame:
    """Read a per-image metrics table written by :func:`write_tsv`.

    Identifier columns are read as strings (``fov`` ``"001"`` stays ``"001"``)
    and ``inf`` as infinity. ``pairs`` may be absent (tables written before it
    existed): it is then missing for every row.

    Raises
    ------
    ValueError
        If a column of :data:`METRIC_COLUMNS` other than ``pairs`` is missing,
        or ``pairs`` holds something other than whole numbers; the message
        names the file.
    """
    df = pd.read_csv(
        path,
        sep="\t",
        dtype={c: str for c in (*_ID_COLUMNS, "method")},
        # Only the spellings write_tsv uses mean missing: a sample called "NA" stays "NA".
        keep_default_na=False,
        na_values={c: list(_PAIRS_NA_SPELLINGS if c == "pairs" else _NA_SPELLINGS) for c in METRIC_COLUMNS},
    )
    missing = [c for c in METRIC_COLUMNS if c not in df.columns and c != "pairs"]
    if missing:
        raise ValueError(f"{path}: missing metrics columns {missing}")
    if "pairs" in df.columns:
        raw = df["pairs"]
        numeric = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & ~(numeric.notna() & (numeric == numeric.round()))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: row {row + 2}: 'pairs' must be a whole number of training pairs or empty, got {raw.iloc[row]!r}")
    return _typed(df)


def read_optional_metrics(paths: Sequence[str | Path], *, key: str) -> pd.DataFrame:
    """Concatenate the per-image tables that exist among `paths`.

    The ablation and fine-tuning metrics are produced only by opt-in targets,
    so a missing file is skipped with a log message rather than an error.

    Parameters
    ----------
    paths : sequence of str or Path
        ``results/{ablation,finetune}/{name}/metrics.tsv``.
    key : str
        Name of a column added to the result holding ``{name}``, the folder
        each table comes from.

    Returns
    -------
    pandas.DataFrame
        :data:`METRIC_COLUMNS` plus `key`; empty when no file exists.
    """
    tables = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            logger.info("%s does not exist (its opt-in target was not run): left out", path)
            continue
        df = read_metrics_tsv(path)
        df.insert(0, key, path.parent.name)
        tables.append(df)
    if not tables:
        empty = _typed(pd.DataFrame(columns=list(METRIC_COLUMNS)))
        empty.insert(0, key, pd.Series(dtype=str))
        return empty
    return pd.concat(tables, ignore_index=True)


def _finite_stats(values: pd.Series) -> tuple[float, float, int]:
    v = values.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if v.size else math.nan
    # Sample standard deviation; undefined for a single image.
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return mean, sd, int(v.size)


def _single_pairs(values: pd.Series, where: str) -> Any:
    known = pd.unique(values.dropna())
    if len(known) == 1:
        return int(known[0])
    if len(known) > 1:
        logger.warning("%s: rows disagree on the number of training pairs %s; left empty", where, sorted(known))
    return pd.NA


def _summarise_by(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Mean and SD of each metric per group of `keys`, methods in display order.

    ``keys`` must end with ``method`` or with ``method, pairs``; a ``pairs``
    column of the output not in `keys` holds the single number of pairs of the
    group (empty if unknown or not unique).
    """
    needed = [*keys, "psnr", "ssim", "nrmse"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"metrics table lacks columns {missing}")
    rows: list[dict[str, Any]] = []
    # dropna=False keeps the baselines, whose number of pairs is missing, in the ablation table.
    for values, group in df.groupby(list(keys), sort=False, dropna=False):
        ident = dict(zip(keys, values, strict=True))
        where = "/".join(str(v) for v in values)
        n = len(group)
        row: dict[str, Any] = {**ident, "label": method_label(str(ident["method"])), "n": n}
        if "pairs" not in keys:
            row["pairs"] = _single_pairs(group["pairs"], where) if "pairs" in group.columns else pd.NA
        for metric in ("psnr", "ssim", "nrmse"):
            mean, sd, kept = _finite_stats(group[metric])
            if kept < n:
                logger.warning("%s: %d of %d %s values are not finite and are left out of the summary", where, n - kept, n, metric)
            row[f"{metric}_mean"] = mean
            row[f"{metric}_sd"] = sd
            if metric == "psnr":
                row["psnr_n"] = kept
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(columns))
    out["pairs"] = pd.to_numeric(out["pairs"], errors="coerce").astype("Int64")
    if out.empty:
        return out
    ranked = sorted(out["method"].unique(), key=method_sort_key)
    rank = {m: i for i, m in enumerate(ranked)}
    order = [k for k in keys if k not in ("method", "pairs")]
    out = out.assign(_rank=out["method"].map(rank))
    # Baselines (no pairs) first within a method-independent block; learned methods by size.
    out = out.sort_values([*order, "_rank", "pairs"], kind="stable", na_position="first").drop(columns="_rank")
    return out.reset_index(drop=True)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Table II: per (model, sample, method) mean and SD of PSNR, SSIM and NRMSE.

    Parameters
    ----------
    df : pandas.DataFrame
        Per-image table from :func:`evaluate_restored` (columns
        :data:`METRIC_COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUMMARY_COLUMNS` (``model, sample, method, label,
        pairs, n, psnr_mean, psnr_sd, psnr_n, ssim_mean, ssim_sd, nrmse_mean,
        nrmse_sd``), one row per (model, sample, method) present, methods in
        :data:`fastscan.baselines.METHODS` order. ``n`` counts images;
        ``psnr_n`` counts the finite PSNR values the PSNR statistics use.
        SD is the sample standard deviation (``ddof=1``; NaN for one image).
        ``pairs`` is the number of training pairs of the method's model (empty
        for baselines, or when the rows disagree).

    Warns
    -----
    Logs a warning when non-finite values (PSNR of an exact reconstruction)
    are left out of the statistics.
    """
    return _summarise_by(df, ("model", "sample", "method"), SUMMARY_COLUMNS)


def summarise_methods(df: pd.DataFrame) -> pd.DataFrame:
    """Per-method mean and SD over all rows of `df`, whatever their sample.

    What a model's own documents show (``fastscan info``, the exported package's README): one
    model's rows, all its held-out images together. The statistics are :func:`summarise`'s, so
    an exact reconstruction's infinite PSNR is left out here as it is in the report.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`METHOD_SUMMARY_COLUMNS`, one row per method, in display order.
    """
    return _summarise_by(df, ("method",), METHOD_SUMMARY_COLUMNS)


def _dedupe_baselines(df: pd.DataFrame, key: str) -> pd.DataFrame:
    # A baseline does not depend on the training set: evaluated once per ablation size, it
    # would otherwise be counted once per size and inflate n.
    ident = [key, "sample", "session", "fov", "frame", "method"]
    no_pairs = df["pairs"].isna()
    return pd.concat([df[~no_pairs], df[no_pairs].drop_duplicates(subset=ident)], ignore_index=True)


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table III: metrics against the number of training pairs.

    Parameters
    ----------
    df : pandas.DataFrame
        Per-image tables of the data-size ablation with an ``ablation`` column
        (:func:`read_optional_metrics` with ``key="ablation"``): learned
        methods (``mse``, ``gan``) with ``pairs`` set, baselines without.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ABLATION_COLUMNS`, one row per (ablation, sample,
        method, pairs); baselines appear once per (ablation, sample) with an
        empty ``pairs``, each test frame counted once even if it was scored
        for every training-set size.
    """
    if "ablation" not in df.columns:
        raise ValueError("ablation_table: metrics table lacks the 'ablation' column")
    if df.empty:
        return pd.DataFrame(columns=list(ABLATION_COLUMNS))
    learned_unknown = df[df["pairs"].isna() & ~df["method"].isin(list(BASELINE_ORDERS) + ["classical"])]
    if len(learned_unknown):
        logger.warning(
            "ablation: %d rows of learned methods %s have no number of training pairs",
            len(learned_unknown),
            sorted(learned_unknown["method"].unique()),
        )
    return _summarise_by(_dedupe_baselines(df, "ablation"), ("ablation", "sample", "method", "pairs"), ABLATION_COLUMNS)


def generalisation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table IV: the source model as is and fine-tuned, on another sample.

    Parameters
    ----------
    df : pandas.DataFrame
        Per-image tables of the fine-tuning runs with a ``finetune`` column
        (:func:`read_optional_metrics` with ``key="finetune"``); methods
        ``bilinear``, ``bicubic``, ``classical``, ``gan`` (the source model
        applied as is) and ``finetune_{N}`` (fine-tuned with ``N`` pairs of
        the new sample).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`GENERALISATION_COLUMNS`, one row per (finetune, sample,
        method); fine-tuned methods by increasing ``N``.
    """
    if "finetune" not in df.columns:
        raise ValueError("generalisation_table: metrics table lacks the 'finetune' column")
    if df.empty:
        return pd.DataFrame(columns=list(GENERALISATION_COLUMNS))
    return _summarise_by(df, ("finetune", "sample", "method"), GENERALISATION_COLUMNS)


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
