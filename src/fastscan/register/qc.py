"""Registration QC tables: the column order, and writing, reading and gathering the per-FOV rows.

Separate from the driver because the workflow's gather step and the dataset builder read these
tables without registering anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fastscan.atomic import atomic_path

#: Column order of the registration QC tables (per FOV and gathered).
QC_COLUMNS: tuple[str, ...] = (
    "sample",
    "session",
    "fov",
    "frames",
    "ncc",
    "line_phase_px",
    "field_fraction",
    "hr_shift_dy",
    "hr_shift_dx",
    "drift_rms_px",
    "residual_drift_px",
    "passed",
    # LR intensity per unit of HR intensity (register.fov._intensity_relation); one value across the
    # training FOVs is what the dataset's normalisation assumes.
    "lr_per_hr",
    # Photon calibration of the raw series (fastscan.photons); NaN where not measurable.
    "gain_adu_per_photon",
    "offset_adu",
    "read_noise_adu",
    "photons_at_median",
    # The binned mean-variance curve, "mean:variance;..." (ADU, ADU^2), for the report's plot.
    "photon_curve",
)


def _qc_frame(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        table = rows.copy()
    elif isinstance(rows, Mapping):
        table = pd.DataFrame([dict(rows)])
    else:
        table = pd.DataFrame([dict(r) for r in rows])
    for col in QC_COLUMNS:
        if col not in table.columns:
            table[col] = pd.Series(dtype=object)
    extra = [c for c in table.columns if c not in QC_COLUMNS]
    return table[list(QC_COLUMNS) + extra]


def _write_tsv_atomic(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def write_qc(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], path: str | Path) -> Path:
    """Write registration QC rows as a tab-separated table.

    Parameters
    ----------
    rows : dict or list of dict
        One dict per FOV, as returned by :func:`register_fov`. Columns follow
        :data:`QC_COLUMNS`; unknown keys are appended after them.
    path : str or Path
        Output TSV, written atomically.

    Returns
    -------
    path : Path
    """
    path = Path(path)
    _write_tsv_atomic(_qc_frame(rows), path)
    return path


_QC_TEXT = ("sample", "session", "fov", "passed")


def read_qc(path: str | Path) -> pd.DataFrame:
    """Read a registration QC table written by :func:`write_qc` or :func:`gather_qc`.

    Identifiers stay strings (``"001"`` is not the number 1) and ``passed`` is boolean.
    """
    table = pd.read_csv(
        path,
        sep="\t",
        dtype={"sample": str, "session": str, "fov": str},
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in QC_COLUMNS if c not in _QC_TEXT},
    )
    if "passed" in table.columns:
        table["passed"] = table["passed"].map(lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1")).astype(bool)
    return table


def gather_qc(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate per-FOV QC tables into one, sorted by sample, session and fov.

    Parameters
    ----------
    paths : list of str or Path
        Per-FOV tables written by :func:`write_qc`.
    out : str or Path
        Output TSV, written atomically.

    Returns
    -------
    table : pandas.DataFrame
        The gathered table (identifiers sorted as strings, stable for ties).
    """
    tables = [read_qc(p) for p in paths]
    table = _qc_frame(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    table = table.sort_values(["sample", "session", "fov"], kind="mergesort").reset_index(drop=True)
    _write_tsv_atomic(table, Path(out))
    return table
