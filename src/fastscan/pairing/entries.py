"""Finding a session's files and reading their headers into :class:`Entry` objects.

Headers only (:func:`fastscan.io.read_header`): no pixel data is decoded. Files that cannot be
used are kept as :class:`Unpaired`, with the reason, for the review.

A folder of PNG frames is one series: public denoising datasets (FMD: ``raw/1/*.png``, 50
noisy frames, beside ``gt/1/avg50.png``) store one frame per file, and the sheet names the
series as a glob of them. Folders of PNGs whose file names recur in a sibling folder
(``noisy/fov1.png`` beside ``clean/fov1.png``) are single-frame pairs instead, and stay files;
so does a PNG named as a target (``avg.png`` beside its frames, ``gt.png`` beside ``low.png``). Folders named by a role word (``raw``, ``gt``, ``lr``, ``hr``...) are left out of
the folder a file is paired in (:func:`pairing_folder`), so ``raw/1`` and ``gt/1`` are one.
"""

from __future__ import annotations

import fnmatch
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
IMAGE_SUFFIXES = (".oib", ".oif", ".tif", ".tiff", ".npy", ".png")
#: Characters a folder of frames must not hold: its glob would match other files, or none.
_GLOB_BREAKING = re.compile(r"[*?\[\]]")
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
#: Role words that say which side of a pair a file is: used when sizes and frame counts cannot
#: (denoising pairs at scale 1: ``low/x.tif`` with ``GT/x.tif``), and the folder names left out
#: of the folder a file is paired in. Modality words (``sim``, ``wf``) are not among them: a
#: folder of simulated data is often called ``sim``.
_SERIES_WORDS = re.compile(r"(?:lr|lores|lowres|low|fast|video|videorate|resonant|raw|noisy|series|movie|frames)\d*", re.IGNORECASE)
_TARGET_WORDS = re.compile(r"(?:hr|hires|highres|high|slow|target|reference|ref|avg|average|averaged|mean|gt|clean)\d*", re.IGNORECASE)


def _role_folder(name: str) -> bool:
    return bool(_SERIES_WORDS.fullmatch(name) or _TARGET_WORDS.fullmatch(name))


#: Characters a path in the sheet must not hold: pandas reads ``#`` as the start of a comment.
_SHEET_BREAKING = re.compile(r"[#\t\r\n]")


class PairingError(InputError):
    """The folders or options of a pairing run cannot be used; the message says why."""


@dataclass
class Entry:
    """One file found in the folders, with its header or the reason it cannot be used; or a
    folder of PNG frames, whose ``path`` is their glob ``folder/frame*.png`` and ``frames`` its files."""

    path: Path
    root: Path
    header: dict[str, Any] | None = None
    reason: str | None = None
    frames: list[Entry] | None = None

    @property
    def is_glob(self) -> bool:
        return self.frames is not None

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
        return "_".join(t.lower() for t in self.place()[0])

    def place(self) -> tuple[list[str], tuple[str, ...]]:
        """The words naming this entry's FOV, and the folders below the root naming its session.

        Folders named by a role word (``raw``, ``gt``...) are left out. A file's FOV is its name
        (:func:`name_tokens`); a folder of frames is named by itself, or by the nearest folder
        above it that is not a role word (``fov1/raw/*.png``), and its session lies above that.
        """
        if not self.is_glob:
            return name_tokens(self.path), pairing_folder(self)[1]
        parts = self.path.parent.relative_to(self.root).parts
        named = [i for i, p in enumerate(parts) if not _role_folder(p)]
        if not named:
            return name_tokens(self.path.parent), ()
        return name_tokens(Path(parts[named[-1]])), tuple(parts[i] for i in named[:-1])

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


def _words(text: str) -> list[str]:
    """The runs of letters and digits of a name."""
    return [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]


def name_tokens(path: Path) -> list[str]:
    """The words of a file name that name its field of view (role words removed)."""
    words = _words(_stem(path))
    kept = [w for w in words if not _ROLE.fullmatch(w)]
    return kept or words


def pairing_folder(entry: Entry) -> tuple[Path, tuple[str, ...]]:
    """The folder an entry is paired in: its root and the subfolders below it, without those
    named by a role word (``raw/1`` and ``gt/1`` are both ``1``). A folder of frames is the
    series itself, so its own name counts as the file name would."""
    folder = entry.path.parent
    return entry.root, tuple(p for p in folder.relative_to(entry.root).parts if not _role_folder(p))


def role_of(entry: Entry) -> str | None:
    """``"series"`` or ``"target"`` when the words of an entry's path below its root (folders
    and file name) name one role only, else None."""
    words = [w for part in entry.path.relative_to(entry.root).parts for w in _words(part)]
    series = any(_SERIES_WORDS.fullmatch(w) for w in words)
    target = any(_TARGET_WORDS.fullmatch(w) for w in words)
    return "series" if series and not target else "target" if target and not series else None


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
            raise PairingError(
                f"{root}: holds no OIB, OIF, TIFF, NPY or PNG file ({len(found)} other file(s)); name the folder that holds the session's images"
            )
        entries.extend(found)
    return entries


def _frame_folders(entries: Sequence[Entry]) -> list[Entry]:
    """The folders of two or more PNG frames that are series (see the module notes), as glob
    entries whose ``frames`` are the PNG entries the glob matches.

    A PNG named by a target word (``avg50.png``, ``gt.png``) is no frame: it stays its own file,
    and the glob is narrowed to the frames' common name start (``frame*.png``) so that it does
    not match it; where no such glob exists, every PNG of the folder stays its own file.
    """
    pngs: dict[Path, list[Entry]] = {}
    for e in entries:
        if e.path.suffix.lower() == ".png":
            pngs.setdefault(e.path.parent, []).append(e)
    names = {folder: {_stem(e.path).lower() for e in group} for folder, group in pngs.items()}
    # Folders that pair with each other (raw/1 and gt/1), found once.
    where = {folder: pairing_folder(group[0]) for folder, group in pngs.items()}
    siblings: dict[tuple[Path, tuple[str, ...]], list[Path]] = {}
    for folder in pngs:
        siblings.setdefault(where[folder], []).append(folder)
    globs = []
    for folder, group in pngs.items():
        frames = [e for e in group if not any(_TARGET_WORDS.fullmatch(w) for w in _words(_stem(e.path)))]
        if len(frames) < 2:
            continue
        if any(other != folder and names[other] & names[folder] for other in siblings[where[folder]]):
            continue  # the same names in a sibling folder: single-frame pairs, file by file
        suffix = frames[0].path.suffix
        # The frames' common name start, without the frame number's leading digits.
        pattern = os.path.commonprefix([e.path.name for e in frames]).rstrip("0123456789") + "*" + suffix
        kept = {id(e) for e in frames}
        if any(fnmatch.fnmatchcase(e.path.name, pattern) for e in group if id(e) not in kept):
            continue
        globs.append(Entry(folder / pattern, group[0].root, frames=frames))
    return globs


def _describe_frames(entry: Entry) -> None:
    """The header of a folder of frames: its first frame's, with the frames counted, once every
    frame has been read and found of the same size, type and channels."""
    frames = entry.frames or []
    folder = entry.path.parent
    if _GLOB_BREAKING.search(os.fspath(folder)) or _GLOB_BREAKING.search(entry.path.name[: entry.path.name.index("*")]):
        entry.reason = f"{folder}: the folder's or the frames' names hold one of *?[] and the frames cannot be named by a glob; rename them"
        return
    if len({e.path.suffix for e in frames}) > 1:
        entry.reason = f"{folder}: its PNG names end in both .png and .PNG, which one glob cannot match; rename them alike"
        return
    first = frames[0].header
    assert first is not None
    for e in frames[1:]:
        h = e.header
        assert h is not None
        if (h["size_yx"], h["dtype"], h["channels"]) != (first["size_yx"], first["dtype"], first["channels"]):
            entry.reason = (
                f"{folder}: {len(frames)} PNG frames, not all alike: {frames[0].path.name} is {first['size_yx'][0]}x{first['size_yx'][1]} "
                f"{first['dtype']} with {first['channels']} channel(s), {e.path.name} {h['size_yx'][0]}x{h['size_yx'][1]} {h['dtype']} "
                f"with {h['channels']}; a series is a folder of equal frames"
            )
            return
    entry.header = {**first, "path": os.fspath(entry.path), "format": "glob", "frames": sum(e.header["frames"] for e in frames)}  # type: ignore[index]


def _read_entry(entry: Entry) -> str | None:
    """Read an entry's header; the reason it cannot be used, or None."""
    bad = _SHEET_BREAKING.search(os.fspath(entry.path))
    if bad or entry.path.name != entry.path.name.strip():
        what = {"#": "'#' (the sample sheet reads it as the start of a comment)"}.get(bad.group() if bad else "", "a tab, line break or leading/trailing space")
        return f"its path holds {what}; rename it"
    try:
        entry.header = read_header(entry.path)
    except InputError as exc:
        entry.reason = str(exc)
    except Exception as exc:  # one bad file must not stop the review of the others
        entry.reason = f"{entry.path}: cannot be read ({type(exc).__name__}: {exc})"
    return None if entry.header is not None else (entry.reason or "cannot be read")


def describe(entries: Iterable[Entry]) -> tuple[list[Entry], list[Unpaired]]:
    """Read the header of every image file, and join folders of PNG frames into series; the rest,
    and unreadable files, with the reason."""
    entries = list(entries)
    usable: list[Entry] = []
    left: list[Unpaired] = []
    for entry in entries:
        if not entry.path.name.lower().endswith(IMAGE_SUFFIXES):
            left.append(Unpaired(entry, "skipped", "-", "not an OIB, OIF, TIFF, NPY or PNG file"))
            continue
        why = _read_entry(entry)
        if why is None:
            usable.append(entry)
        else:
            left.append(Unpaired(entry, "unreadable", "?", why))
    for series in _frame_folders(entries):
        frames = series.frames or []
        broken = [e for e in frames if e.header is None]
        if broken:
            # The unreadable frames are already listed with their reasons; the readable ones
            # are no series without them.
            names = ", ".join(e.path.name for e in broken[:3]) + (" ..." if len(broken) > 3 else "")
            series.reason = f"{series.path.parent}: {len(broken)} of its {len(frames)} PNG frames cannot be read ({names}); the series is left out"
        else:
            _describe_frames(series)
        in_series = {id(e) for e in frames}
        usable = [e for e in usable if id(e) not in in_series]
        if series.header is None:
            left.append(Unpaired(series, "unreadable", "?", series.reason or "cannot be read"))
        else:
            usable.append(series)
    return usable, left
