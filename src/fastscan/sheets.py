"""Sample and slide sheets: loading, checks a JSON schema cannot express, and FOV splits.

This module is imported by the workflow at parse time, so it only needs pandas.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

SPLITS = ("train", "val", "test")

SAMPLE_COLUMNS = ("sample", "session", "fov", "lr", "hr")
SAMPLE_OPTIONAL = ("split", "channel", "lr_pixel_size_um", "hr_pixel_size_um")
SLIDE_COLUMNS = ("slide", "path")
SLIDE_OPTIONAL = ("model", "channel")

#: Characters allowed in sample, session, fov and slide names: they become path components.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


class SheetError(ValueError):
    """A sample or slide sheet is malformed; the message names the sheet and the row."""


def _read_tsv(path: str | os.PathLike, *, required: tuple, optional: tuple, dtypes: dict) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"sheet {path} does not exist")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, comment="#", keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SheetError(f"sheet {path} is not a readable tab-separated table: {exc}") from exc
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SheetError(f"sheet {path} lacks the column(s) {missing}; it has {list(df.columns)}")
    unknown = [c for c in df.columns if c not in required + optional]
    if unknown:
        raise SheetError(f"sheet {path} has unknown column(s) {unknown}; allowed: {list(required + optional)}")
    for col in df.columns:
        df[col] = df[col].str.strip()
    for col, kind in dtypes.items():
        if col not in df.columns:
            continue
        for i, value in df[col].items():
            if value == "":
                continue
            try:
                kind(value)
            except ValueError:
                raise SheetError(
                    f"sheet {path}, row {i + 2}: column {col!r} must be {kind.__name__}, got {value!r}"
                ) from None
    return df


def load_samples(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``samples.tsv``: one row per field of view.

    Returns a table with the optional columns filled (``split`` empty means "assign", ``channel``
    defaults to 0) and the index ``sample/session/fov``.
    """
    df = _read_tsv(
        path,
        required=SAMPLE_COLUMNS,
        optional=SAMPLE_OPTIONAL,
        dtypes={"channel": int, "lr_pixel_size_um": float, "hr_pixel_size_um": float},
    )
    for col in SAMPLE_OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    df["channel"] = [int(v) if v != "" else 0 for v in df["channel"]]
    for i, row in df.iterrows():
        for col in ("sample", "session", "fov", "lr", "hr"):
            if row[col] == "":
                raise SheetError(f"sheet {path}, row {i + 2}: column {col!r} is empty")
        if row["split"] not in ("",) + SPLITS:
            raise SheetError(f"sheet {path}, row {i + 2}: split must be one of {SPLITS} or empty, got {row['split']!r}")
    key = df["sample"] + "/" + df["session"] + "/" + df["fov"]
    dup = key[key.duplicated()]
    if len(dup):
        raise SheetError(f"sheet {path}: duplicate (sample, session, fov) {sorted(set(dup))}")
    df.index = key
    return df


def load_slides(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``slides.tsv``: one row per whole slide to restore (an empty sheet is allowed)."""
    df = _read_tsv(path, required=SLIDE_COLUMNS, optional=SLIDE_OPTIONAL, dtypes={"channel": int})
    for col in SLIDE_OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    df["channel"] = [int(v) if v != "" else 0 for v in df["channel"]]
    dup = df["slide"][df["slide"].duplicated()]
    if len(dup):
        raise SheetError(f"sheet {path}: duplicate slide name(s) {sorted(set(dup))}")
    for i, row in df.iterrows():
        if row["slide"] == "" or row["path"] == "":
            raise SheetError(f"sheet {path}, row {i + 2}: slide and path must not be empty")
    df.index = df["slide"]
    return df


def fov_fraction(sample: str, session: str, fov: str, *, seed: int) -> float:
    """A number in [0, 1) fixed by the FOV's identity and the seed.

    Splits come from this rather than from shuffling the whole sheet, so adding a row never moves
    another FOV to a different split (which would retrain everything and leak test data).
    """
    digest = hashlib.sha256(f"{seed}/{sample}/{session}/{fov}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(df: pd.DataFrame, *, seed: int, val_fraction: float, test_fraction: float) -> pd.Series:
    """Split by FOV, never by frame: an explicit ``split`` wins, the rest follow :func:`fov_fraction`."""
    if not 0 <= val_fraction + test_fraction < 1:
        raise SheetError(f"split fractions val={val_fraction} test={test_fraction} must sum to less than 1")
    out = {}
    for key, row in df.iterrows():
        if row.get("split", ""):
            out[key] = row["split"]
            continue
        u = fov_fraction(row["sample"], row["session"], row["fov"], seed=seed)
        out[key] = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
    return pd.Series(out, name="split")
