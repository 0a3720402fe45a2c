"""What a source path names: a glob of single-frame files, a Zarr store, or an OIB/OIF/TIFF/PNG/NPY file.

Telling these apart needs only the name and the first bytes, never a format library, so the
format readers, the slide reader and the restore steps share this one classification.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from pathlib import Path
from typing import Any

from fastscan.io.errors import InputError

PathLike = str | os.PathLike[str]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf2", ".tf8", ".svs", ".ndpi", ".scn")
_GLOB_CHARS = re.compile(r"[*?\[]")


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _is_glob(path: PathLike) -> bool:
    text = os.fspath(path)
    return bool(_GLOB_CHARS.search(text)) and not Path(text).exists()


def _glob_files(pattern: str) -> list[Path]:
    files = [Path(p) for p in _glob.glob(pattern) if Path(p).is_file()]
    if not files:
        raise InputError(f"{pattern}: no files match this pattern")
    return sorted(files, key=lambda p: _natural_key(os.fspath(p)))


def _detect_format(path: Path) -> str:
    """Return ``"oib"``, ``"oif"``, ``"tiff"``, ``"png"`` or ``"npy"`` from the name and the first bytes."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file (OIB/OIF/TIFF/PNG/NPY)")
    suffix = path.suffix.lower()
    if suffix == ".oif":
        return "oif"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head == _OLE_MAGIC:
        return "oib"
    if head == _PNG_MAGIC:
        return "png"
    if head[:6] == _NPY_MAGIC:
        return "npy"
    if suffix in (".oib", ".png", ".npy") or suffix in _TIFF_SUFFIXES:
        raise InputError(f"{path}: not a valid {suffix[1:].upper()} file (unexpected header bytes {head[:4]!r}); the file may be truncated or corrupt")
    raise InputError(f"{path}: unknown image format; supported are OIB, OIF, TIFF/OME-TIFF/ImageJ TIFF/SVS, PNG, NumPy .npy or a glob of single-frame files")


def _zarr_kind(path: Path) -> str | None:
    """``"v3"``/``"v2"`` when ``path`` is the root of a Zarr store, else None."""
    if (path / "zarr.json").is_file():
        return "v3"
    if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
        return "v2"
    return None
