"""Sample and slide sheets: loading, checks a JSON schema cannot express, and FOV splits.

This module is imported by the workflow at parse time, so it only needs pandas.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import pandas as pd

SPLITS = ("train", "val", "test")

SAMPLE_COLUMNS = ("sample", "session", "fov", "lr", "hr")
SAMPLE_OPTIONAL = ("split", "channel", "lr_pixel_size_um", "hr_pixel_size_um", "restore")
SLIDE_COLUMNS = ("slide", "path")
SLIDE_OPTIONAL = ("model", "channel")

#: Characters allowed in sample, session, fov and slide names: they become path components.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_NAME = re.compile(NAME_PATTERN)


class SheetError(ValueError):
    """A sample or slide sheet is malformed; the message names the sheet and the row."""


def _line_numbers(path: Path, n_rows: int) -> list[int]:
    """Line of the file each data row comes from, so messages point where an editor does.

    pandas skips comment and blank lines; when the count does not add up (a layout it reads
    differently), the row number plus the header line is the fallback.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    content = [i for i, line in enumerate(lines, start=1) if line.strip() and not line.startswith("#")]
    if len(content) == n_rows + 1:
        return content[1:]
    return [i + 2 for i in range(n_rows)]


#: How to turn a sheet saved in a legacy encoding into UTF-8 with the usual tools.
_SAVE_AS_UTF8 = (
    "save it as UTF-8: in LibreOffice, Save As > 'Text CSV' with character set 'Unicode (UTF-8)' and field "
    "delimiter {Tab}; in Excel, Save As > 'Text (Tab delimited)' and then convert it, e.g. "
    "iconv -f windows-1252 -t utf-8 old.tsv > new.tsv (or re-save it as UTF-8 in a text editor)"
)


def _check_utf8(path: Path) -> None:
    """Refuse a sheet that is not UTF-8, pointing at the first offending byte.

    Spreadsheet programs save text in the computer's legacy encoding (Windows-1252, Latin-1) or
    in UTF-16 unless told otherwise; pandas then fails with a byte offset into its read buffer,
    which names neither the line nor the remedy.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SheetError(f"sheet {path} cannot be read: {exc}") from exc
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise SheetError(f"sheet {path} is UTF-16 text (Excel's 'Unicode Text'), not UTF-8; {_SAVE_AS_UTF8}") from None
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = bytes([data[exc.start]])
        char = byte.decode("cp1252", errors="ignore") or byte.decode("latin-1")
        raise SheetError(
            f"sheet {path} is not UTF-8 text: line {line}, byte {column} of the line is 0x{byte.hex()} "
            f"({char!r} in Latin-1/Windows-1252, the legacy encodings it was probably saved in); {_SAVE_AS_UTF8}"
        ) from None


def _read_tsv(path: str | os.PathLike, *, required: tuple, optional: tuple, dtypes: dict) -> pd.DataFrame:
    """Read a sheet; its index is the line number of each row in the file."""
    path = Path(path)
    if path.is_dir():
        raise SheetError(f"sheet {path} is a directory, not a tab-separated file")
    if not path.is_file():
        raise SheetError(f"sheet {path} does not exist")
    _check_utf8(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, comment="#", keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise SheetError(f"sheet {path} is empty: it needs a header line with the columns {list(required)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise SheetError(f"sheet {path} is not a readable tab-separated table: {str(exc).strip()}") from exc
    df.index = _line_numbers(path, len(df))
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
                number = kind(value)
            except ValueError:
                raise SheetError(f"sheet {path}, row {i}: column {col!r} must be {kind.__name__}, got {value!r}") from None
            if col == "channel" and number < 0:
                raise SheetError(f"sheet {path}, row {i}: column 'channel' must be 0 or more, got {value!r}")
            if kind is float and not (math.isfinite(number) and number > 0):
                raise SheetError(f"sheet {path}, row {i}: column {col!r} must be a positive number, got {value!r}")
    return df


def _check_names(df: pd.DataFrame, path: str | os.PathLike, columns: tuple) -> None:
    """Names become path components and wildcards: refuse what would break either."""
    for i, row in df.iterrows():
        for col in columns:
            value = row[col]
            if value == "":
                raise SheetError(f"sheet {path}, row {i}: column {col!r} is empty")
            if not _NAME.fullmatch(value):
                raise SheetError(
                    f"sheet {path}, row {i}: column {col!r} is {value!r}; names may only hold letters, digits and _.- and must start with a letter or digit"
                )


def _duplicates(keys: pd.Series) -> str:
    """``'key' (rows 2, 5)`` for every key that occurs more than once."""
    dup = keys[keys.duplicated(keep=False)]
    groups = dup.groupby(dup, sort=True)
    return ", ".join(f"{key!r} (rows {', '.join(str(i) for i in rows.index)})" for key, rows in groups)


def load_samples(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``samples.tsv``: one row per field of view.

    Returns a table with the optional columns filled (``split`` empty means "assign", ``channel``
    defaults to 0) and the index ``sample/session/fov``. A row with an empty ``hr`` (a new session
    without target) or ``restore`` set to ``yes`` is a series to restore. ``channel_given`` says
    whether the sheet named the channel: ingestion refuses to guess one for an LR/HR pair whose
    files have different channel counts (an RGB target with a grayscale series).
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
    df["channel_given"] = [v != "" for v in df["channel"]]
    df["channel"] = [int(v) if v != "" else 0 for v in df["channel"]]
    _check_names(df, path, ("sample", "session", "fov"))
    for i, row in df.iterrows():
        if row["lr"] == "":
            raise SheetError(f"sheet {path}, row {i}: column 'lr' is empty")
        if row["hr"] == "" and row["split"] != "":
            raise SheetError(f"sheet {path}, row {i}: split is {row['split']!r} but the row has no HR target (empty hr: restored only)")
        if row["restore"] not in ("", "yes", "no"):
            raise SheetError(f"sheet {path}, row {i}: restore must be yes, no or empty, got {row['restore']!r}")
        if row["split"] not in ("",) + SPLITS:
            raise SheetError(f"sheet {path}, row {i}: split must be one of {SPLITS} or empty, got {row['split']!r}")
    key = df["sample"] + "/" + df["session"] + "/" + df["fov"]
    if key.duplicated().any():
        raise SheetError(f"sheet {path}: duplicate (sample, session, fov) {_duplicates(key)}")
    df.index = key
    return df


def load_slides(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``slides.tsv``: one row per whole slide to restore (an empty sheet is allowed)."""
    df = _read_tsv(path, required=SLIDE_COLUMNS, optional=SLIDE_OPTIONAL, dtypes={})
    for col in SLIDE_OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    channels = []
    for i, value in df["channel"].items():
        # An index, a comma-separated list of indices, or "all" (each restored as its own plane).
        if not re.fullmatch(r"|all|[0-9]+(,[0-9]+)*", value):
            raise SheetError(f"sheet {path}, row {i}: column 'channel' must be an index, a list like 0,2 or all, got {value!r}")
        channels.append(int(value) if value.isdigit() else (value or 0))
    df["channel"] = pd.Series(channels, index=df.index, dtype=object)
    _check_names(df, path, ("slide",))
    for i, row in df.iterrows():
        if row["path"] == "":
            raise SheetError(f"sheet {path}, row {i}: column 'path' is empty")
    if df["slide"].duplicated().any():
        raise SheetError(f"sheet {path}: duplicate slide name(s) {_duplicates(df['slide'])}")
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
