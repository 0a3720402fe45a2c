"""Finding a session's files and reading their headers into :class:`Entry` objects.

Headers only (:func:`fastscan.io.read_header`): no pixel data is decoded. Files that cannot be
used are kept as :class:`Unpaired`, with the reason, for the review.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastscan.io import InputError, read_header

#: File name endings read as images; anything else in the folders is listed as skipped. NumPy
#: arrays count: datasets such as W2S keep each series as one ``.npy`` of ``(T, Y, X)``.
IMAGE_SUFFIXES = (".oib", ".oif", ".tif", ".tiff", ".npy")
#: Why PNG files are skipped: each holds one frame, and a sheet row names one file per series
#: (or a glob, which the pairing rules cannot propose).
_PNG_SKIPPED = "a PNG frame: the sheet pairs whole files; write a glob of the frames (e.g. raw/1/*.png) into the sheet's lr column by hand"
#: Words that name a file's role rather than its field of view; removed from names to match
#: an LR series with its HR target (``fov3_fast.tif`` with ``fov3_slow.tif``). A trailing number
#: is removed with them (``hr512``, ``x2``).
ROLE_WORDS = (
    "lr",
    "hr",
    "lores",
    "hires",
    "lowres",
    "highres",
    "low",
    "high",
    "res",
    "fast",
    "slow",
    "video",
    "videorate",
    "rate",
    "resonant",
    "galvo",
    "bidir",
    "unidir",
    "roundtrip",
    "oneway",
    "series",
    "movie",
    "frames",
    "target",
    "reference",
    "ref",
    "avg",
    "average",
    "averaged",
    "mean",
    "stack",
    "x",
    "ome",
    # The modality or the state of a public dataset's files: W2S's wf_channel0.npy (widefield)
    # beside sim_channel0.npy (the SIM target); raw/noisy frames beside gt/clean averages.
    "wf",
    "widefield",
    "sim",
    "raw",
    "noisy",
    "gt",
    "clean",
)
_ROLE = re.compile(r"(?:" + "|".join(ROLE_WORDS) + r")\d*", re.IGNORECASE)
#: Characters a path in the sheet must not hold: pandas reads ``#`` as the start of a comment.
_SHEET_BREAKING = re.compile(r"[#\t\r\n]")


class PairingError(InputError):
    """The folders or options of a pairing run cannot be used; the message says why."""


@dataclass
class Entry:
    """One file found in the folders, with its header or the reason it cannot be used."""

    path: Path
    root: Path
    header: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.header["size_yx"])  # type: ignore[index,return-value]

    @property
    def pixel(self) -> list[float] | None:
        return self.header.get("pixel_size_um") if self.header else None

    @property
    def field_um(self) -> tuple[float, float] | None:
        px = self.pixel
        return (self.size[0] * px[0], self.size[1] * px[1]) if px else None

    @property
    def time(self) -> datetime | None:
        text = self.header.get("acquired") if self.header else None
        if not text:
            return None
        when = datetime.fromisoformat(text)
        return when.replace(tzinfo=None) if when.tzinfo is None else when

    @property
    def key(self) -> str:
        return "_".join(t.lower() for t in name_tokens(self.path))

    def shown(self) -> str:
        try:
            return os.fspath(self.path.relative_to(self.root.parent))
        except ValueError:
            return os.fspath(self.path)


@dataclass
class Unpaired:
    entry: Entry
    status: str  # "unpaired", "unreadable" or "skipped"
    role: str
    reason: str


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def name_tokens(path: Path) -> list[str]:
    """The words of a file name that name its field of view (role words removed)."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", _stem(path)) if w]
    kept = [w for w in words if not _ROLE.fullmatch(w)]
    return kept or words


def sanitise(text: str, fallback: str) -> str:
    """A name :mod:`fastscan.sheets` accepts: letters, digits and ``_.-``, starting with one of
    the first two."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")
    name = re.sub(r"_+", "_", name)
    return name if name else fallback


def find_files(folders: Sequence[str | os.PathLike]) -> list[Entry]:
    """Every file under ``folders`` (recursively), image or not, in a stable order.

    Hidden files and the data folders of OIF files (``*.oif.files``, read through their OIF)
    are left out. Raises :class:`PairingError` for a folder that does not exist, is a file, or
    holds no OIB/OIF/TIFF/NPY at all.
    """
    if not folders:
        raise PairingError("no folder given: name the folder(s) holding the session's OIB/OIF/TIFF/NPY files")
    entries: list[Entry] = []
    seen: set[Path] = set()
    for folder in folders:
        root = Path(folder)
        if not root.exists():
            raise PairingError(f"{root}: folder not found")
        if not root.is_dir():
            raise PairingError(f"{root}: is a file, not a folder; name the folder that holds it")
        root = root.resolve()
        found = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).parts
            if any(p.startswith(".") for p in rel) or any(p.lower().endswith(".oif.files") for p in rel[:-1]):
                continue
            if path.is_file():
                if path.resolve() in seen:
                    continue
                seen.add(path.resolve())
                found.append(Entry(path, root))
        if not any(e.path.name.lower().endswith(IMAGE_SUFFIXES) for e in found):
            pngs = sum(e.path.name.lower().endswith(".png") for e in found)
            hint = (
                f"; its {pngs} PNG file(s) are not paired by the sheet: write globs of the frames (e.g. raw/1/*.png) into samples.tsv by hand" if pngs else ""
            )
            raise PairingError(
                f"{root}: holds no OIB, OIF, TIFF or NPY file ({len(found)} other file(s)); name the folder that holds the session's images{hint}"
            )
        entries.extend(found)
    return entries


def describe(entries: Iterable[Entry]) -> tuple[list[Entry], list[Unpaired]]:
    """Read the header of every image file; the rest, and unreadable files, with the reason."""
    usable: list[Entry] = []
    left: list[Unpaired] = []
    for entry in entries:
        if entry.path.name.lower().endswith(".png"):
            left.append(Unpaired(entry, "skipped", "-", _PNG_SKIPPED))
            continue
        if not entry.path.name.lower().endswith(IMAGE_SUFFIXES):
            left.append(Unpaired(entry, "skipped", "-", "not an OIB, OIF, TIFF or NPY file"))
            continue
        bad = _SHEET_BREAKING.search(os.fspath(entry.path))
        if bad or entry.path.name != entry.path.name.strip():
            what = {"#": "'#' (the sample sheet reads it as the start of a comment)"}.get(
                bad.group() if bad else "", "a tab, line break or leading/trailing space"
            )
            left.append(Unpaired(entry, "unreadable", "?", f"its path holds {what}; rename it"))
            continue
        try:
            entry.header = read_header(entry.path)
        except InputError as exc:
            entry.reason = str(exc)
        except Exception as exc:  # one bad file must not stop the review of the others
            entry.reason = f"{entry.path}: cannot be read ({type(exc).__name__}: {exc})"
        if entry.header is None:
            left.append(Unpaired(entry, "unreadable", "?", entry.reason or "cannot be read"))
        else:
            usable.append(entry)
    return usable, left
