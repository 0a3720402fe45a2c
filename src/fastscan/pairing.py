"""Pair a session's files into a sample sheet (``fastscan sheet FOLDER... --out samples.tsv``).

Every OIB/OIF/TIFF under the given folders is described from its header alone
(:func:`fastscan.io.read_header`; no pixel data is decoded, so files of any size are cheap).
A video-rate (LR) series and its high-resolution (HR) target are the same field of view
sampled twice: the HR file has exactly ``scale`` times the pixels per axis over the same
physical field. Two files of one folder are *candidates* when their sizes say so; the
metadata then decides whether they can be the same FOV:

* pixel size: when both record it, LR pixel size / HR pixel size must be ``scale`` (within
  2 %): the fields of view, size times pixel size, are then equal;
* zoom (Olympus ``ZoomValue``): equal within 1 % when both record it;
* stage position (OME ``Plane``/``StageLabel``): within ``position_tolerance`` of the field
  width when both record it;
* focus position (Olympus Z drive, OME ``PositionZ``): within ``focus_tolerance_um``;
* acquisition time: within ``session_gap_h`` hours when both record it.

A check whose field is missing from either file is skipped and the review says so (no
stage position in FV1000 OIB/OIF files, for instance). Among the compatible HR targets of
an LR series, the one with the same file name (role words such as ``lr``/``hr``/``fast``/
``slow`` removed) wins, else the one clearly closest in time (at most half the time gap of
the next). Anything else is ambiguous and reported, never guessed: an LR series with two
fitting targets, or a target that fits several series at different or unknown positions
(series at the same recorded position share it, and get the same split).

The sheet has the columns of :mod:`fastscan.sheets` and is validated by its reader before it
is put in place. Splits are proposed per sample in the order of
:func:`fastscan.sheets.fov_fraction` (the order the workflow's hash-based split uses): the
lowest fractions are held out for test, then validation, and at least one FOV of each is
proposed when there are enough FOVs (3 for a test FOV, 2 for a validation one), since the
hash alone may give a small sample none. Written explicitly, they win over the hash.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastscan.io import InputError, read_header

#: File name endings read as images; anything else in the folders is listed as skipped.
IMAGE_SUFFIXES = (".oib", ".oif", ".tif", ".tiff")
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
)
_ROLE = re.compile(r"(?:" + "|".join(ROLE_WORDS) + r")\d*", re.IGNORECASE)
#: Characters a path in the sheet must not hold: pandas reads ``#`` as the start of a comment.
_SHEET_BREAKING = re.compile(r"[#\t\r\n]")

PIXEL_RATIO_TOLERANCE = 0.02
ZOOM_TOLERANCE = 0.01


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
class Pair:
    lr: Entry
    hr: Entry
    sample: str = ""
    session: str = ""
    fov: str = ""
    split: str = ""
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lr_pixel_size_um: float | None = None
    hr_pixel_size_um: float | None = None


@dataclass
class Unpaired:
    entry: Entry
    status: str  # "unpaired", "unreadable" or "skipped"
    role: str
    reason: str


@dataclass
class Proposal:
    """Result of :func:`propose`: the pairs (sheet rows) and every file left out, with why."""

    pairs: list[Pair]
    unpaired: list[Unpaired]
    scale: int


# --------------------------------------------------------------------------------------------
# finding and describing files


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
    holds no OIB/OIF/TIFF at all.
    """
    if not folders:
        raise PairingError("no folder given: name the folder(s) holding the session's OIB/OIF/TIFF files")
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
            raise PairingError(f"{root}: holds no OIB, OIF or TIFF file ({len(found)} other file(s)); name the folder that holds the session's images")
        entries.extend(found)
    return entries


def describe(entries: Iterable[Entry]) -> tuple[list[Entry], list[Unpaired]]:
    """Read the header of every image file; the rest, and unreadable files, with the reason."""
    usable: list[Entry] = []
    left: list[Unpaired] = []
    for entry in entries:
        if not entry.path.name.lower().endswith(IMAGE_SUFFIXES):
            left.append(Unpaired(entry, "skipped", "-", "not an OIB, OIF or TIFF file"))
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


# --------------------------------------------------------------------------------------------
# pairing


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _seconds(dt: float) -> str:
    if dt < 120:
        return f"{dt:.0f} s"
    if dt < 7200:
        return f"{dt / 60:.0f} min"
    return f"{dt / 3600:.1f} h"


@dataclass
class _Check:
    ok: bool
    why: str = ""  # the first failed check, for the review
    evidence: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dt: float | None = None
    same_name: bool = False


def _check(lr: Entry, hr: Entry, *, scale: int, position_tolerance: float, focus_tolerance_um: float, session_gap_h: float) -> _Check:
    """Can ``hr`` be the HR target of ``lr``? Sizes are already known to be in ratio ``scale``."""
    c = _Check(ok=True)
    lh, hh = lr.header, hr.header
    assert lh is not None and hh is not None
    if lr.pixel and hr.pixel:
        ratios = [a / b for a, b in zip(lr.pixel, hr.pixel, strict=True)]
        if any(abs(r / scale - 1) > PIXEL_RATIO_TOLERANCE for r in ratios):
            fl, fh = lr.field_um, hr.field_um
            return _Check(
                False,
                f"another field: {_fmt(fh[1])} µm wide at {_fmt(hr.pixel[1])} µm/px, the series "  # type: ignore[index]
                f"{_fmt(fl[1])} µm at {_fmt(lr.pixel[1])} µm/px (a target has 1/{scale} of its pixel size)",
            )  # type: ignore[index]
        c.evidence.append(f"field {_fmt(lr.field_um[1])} µm")  # type: ignore[index]
    else:
        c.missing.append("pixel size")
    if lh["zoom"] is not None and hh["zoom"] is not None:
        if abs(lh["zoom"] / hh["zoom"] - 1) > ZOOM_TOLERANCE:
            return _Check(False, f"zoom {_fmt(hh['zoom'])}, the series {_fmt(lh['zoom'])}")
        c.evidence.append(f"zoom {_fmt(lh['zoom'])}")
    else:
        c.missing.append("zoom")
    if lh["stage_um"] is not None and hh["stage_um"] is not None:
        width = (lr.field_um or hr.field_um or (None, None))[1]
        distance = math.dist(lh["stage_um"], hh["stage_um"])
        limit = position_tolerance * width if width else 1.0
        if distance > limit:
            return _Check(False, f"stage position {_fmt(distance)} µm away (tolerance {_fmt(limit)} µm)")
        c.evidence.append(f"stage within {_fmt(distance)} µm")
    else:
        c.missing.append("stage position")
    if lh["focus_um"] is not None and hh["focus_um"] is not None:
        dz = abs(lh["focus_um"] - hh["focus_um"])
        if dz > focus_tolerance_um:
            return _Check(False, f"focus {_fmt(dz)} µm away (tolerance {_fmt(focus_tolerance_um)} µm)")
        c.evidence.append(f"focus within {_fmt(dz)} µm")
    t_lr, t_hr = lr.time, hr.time
    if t_lr is not None and t_hr is not None:
        try:
            c.dt = abs((t_hr - t_lr).total_seconds())
        except TypeError:  # one aware, one naive
            c.dt = None
    if c.dt is not None:
        if c.dt > session_gap_h * 3600:
            return _Check(False, f"acquired {_seconds(c.dt)} apart (more than {_fmt(session_gap_h)} h: another session)")
        c.evidence.append(f"Δt {_seconds(c.dt)}")
    else:
        c.missing.append("acquisition time")
    c.same_name = lr.key == hr.key
    if c.same_name:
        c.evidence.append("same name")
    return c


def _decide(options: list[tuple[Entry, _Check]], what: str) -> tuple[Entry | None, str]:
    """The one option that wins by name, else clearly by time; None and why when none does."""
    if len(options) == 1:
        return options[0][0], ""
    named = [o for o in options if o[1].same_name]
    if len(named) == 1:
        return named[0][0], f"chosen by name among {len(options)} {what}"
    pool = named or options
    if all(o[1].dt is not None for o in pool):
        ranked = sorted(pool, key=lambda o: o[1].dt)  # type: ignore[arg-type,return-value]
        first, second = ranked[0][1].dt, ranked[1][1].dt
        if second > 2 * first:  # type: ignore[operator]
            return ranked[0][0], f"closest in time among {len(pool)} {what} (next {_seconds(second)})"  # type: ignore[arg-type]
    names = ", ".join(o[0].path.name for o in pool)
    return None, f"ambiguous: {len(pool)} {what} fit ({names}) and neither name nor time tells them apart"


def _same_position(entries: Sequence[Entry], tolerance_um: float) -> bool:
    stages = [e.header["stage_um"] for e in entries]  # type: ignore[index]
    if any(s is None for s in stages):
        return False
    return all(math.dist(stages[0], s) <= tolerance_um for s in stages[1:])


def pair_entries(
    entries: Sequence[Entry],
    *,
    scale: int = 2,
    position_tolerance: float = 0.1,
    focus_tolerance_um: float = 2.0,
    session_gap_h: float = 12.0,
) -> tuple[list[Pair], list[Unpaired]]:
    """Pair LR series with HR targets among described files (see the module notes)."""
    by_folder: dict[Path, list[Entry]] = {}
    for e in entries:
        by_folder.setdefault(e.path.parent, []).append(e)
    options: dict[int, list[tuple[Entry, _Check]]] = {}
    refused: dict[int, list[str]] = {}
    has_lr: set[int] = set()
    for group in by_folder.values():
        for lr in group:
            for hr in group:
                if hr is lr or hr.size != (scale * lr.size[0], scale * lr.size[1]):
                    continue
                has_lr.add(id(hr))
                c = _check(lr, hr, scale=scale, position_tolerance=position_tolerance, focus_tolerance_um=focus_tolerance_um, session_gap_h=session_gap_h)
                if c.ok:
                    options.setdefault(id(lr), []).append((hr, c))
                else:
                    refused.setdefault(id(lr), []).append(f"{hr.path.name}: {c.why}")
                    refused.setdefault(id(hr), []).append(f"{lr.path.name}: {c.why}")
    # Each series picks its target, then each target keeps the series that fit it best.
    chosen: dict[int, tuple[Entry, _Check, str]] = {}
    why_not: dict[int, str] = {}
    for e in entries:
        if id(e) in options:
            hr, why = _decide(options[id(e)], "HR targets")
            if hr is None:
                why_not[id(e)] = why
            else:
                check = next(c for h, c in options[id(e)] if h is hr)
                chosen[id(e)] = (hr, check, why)
    takers: dict[int, list[Entry]] = {}
    for e in entries:
        if id(e) in chosen:
            takers.setdefault(id(chosen[id(e)][0]), []).append(e)
    pairs: list[Pair] = []
    for e in entries:
        if id(e) not in chosen:
            continue
        hr, check, why = chosen[id(e)]
        rivals = takers[id(hr)]
        notes = [why] if why else []
        if len(rivals) > 1:
            width = (e.field_um or hr.field_um or (None, 0.0))[1]
            if _same_position(rivals, position_tolerance * width if width else 1.0):
                notes.append(f"HR target shared by {len(rivals)} series at the same stage position; same split")
            else:
                winner, how = _decide([(r, chosen[id(r)][1]) for r in rivals], "LR series")
                if winner is not e:
                    others = ", ".join(r.path.name for r in rivals if r is not e)
                    why_not[id(e)] = f"its HR target {hr.path.name} also fits {others}, " + (
                        f"which {how.replace('chosen', 'wins')}" if winner is not None else "at different or unrecorded stage positions; " + how
                    )
                    continue
                notes.append(how.replace("chosen", "kept the HR target"))
        pair = Pair(e, hr, evidence=list(check.evidence), notes=notes)
        if check.missing:
            pair.notes.append("not in the files: " + ", ".join(check.missing))
        pairs.append(pair)
    # A file is one thing: a series that is also another series' target stays unpaired.
    used_as_hr = {id(p.hr) for p in pairs}
    kept = []
    for p in pairs:
        if id(p.lr) in used_as_hr:
            why_not[id(p.lr)] = f"is itself the HR target of another series, and fits {p.hr.path.name} as a series"
        else:
            kept.append(p)
    pairs = kept
    paired = {id(p.lr) for p in pairs} | {id(p.hr) for p in pairs}
    unpaired = []
    for e in entries:
        if id(e) in paired:
            continue
        role = "LR series" if id(e) in options or (id(e) in refused and id(e) not in has_lr) else ("HR target" if id(e) in has_lr else "?")
        if id(e) in why_not:
            reason = why_not[id(e)]
        elif id(e) in refused:
            partner = "HR target" if role == "LR series" else "LR series"
            reason = f"no {partner} fits: " + "; ".join(refused[id(e)])
        elif id(e) in has_lr:
            reason = "its LR series were paired with other targets"
        else:
            y, x = e.size
            frames = e.header["frames"]  # type: ignore[index]
            reason = (
                f"{frames} frame{'s' if frames != 1 else ''} of {y}x{x}; no file of its folder is {scale}x that size "
                f"({scale * y}x{scale * x}) or 1/{scale} of it ({y / scale:g}x{x / scale:g}): no partner"
            )
        unpaired.append(Unpaired(e, "unpaired", role, reason))
    return pairs, unpaired


# --------------------------------------------------------------------------------------------
# names, pixel sizes, splits


def _name_pairs(pairs: list[Pair], sample: str | None) -> None:
    taken: set[tuple[str, str, str]] = set()
    for p in pairs:
        root = p.lr.root
        p.sample = sanitise(sample, "sample") if sample else sanitise(root.name, "sample")
        rel = p.lr.path.parent.relative_to(root).parts
        p.session = sanitise("-".join(rel), "session") if rel else sanitise(root.name, "session")
        base = sanitise("_".join(name_tokens(p.lr.path)), "fov")
        fov, n = base, 1
        while (p.sample, p.session, fov) in taken:
            n += 1
            fov = f"{base}-{n}"
        taken.add((p.sample, p.session, fov))
        p.fov = fov


def _fill_pixel_sizes(pairs: list[Pair], scale: int) -> None:
    """A pixel size one file lacks follows from its partner's; neither: the user must say."""
    for p in pairs:
        lr, hr = p.lr.pixel, p.hr.pixel
        if lr and not hr:
            p.hr_pixel_size_um = lr[1] / scale
            p.notes.append(f"HR pixel size not in the file: written as {_fmt(p.hr_pixel_size_um)} µm (LR / {scale})")
        elif hr and not lr:
            p.lr_pixel_size_um = hr[1] * scale
            p.notes.append(f"LR pixel size not in the file: written as {_fmt(p.lr_pixel_size_um)} µm (HR x {scale})")
        elif not lr and not hr:
            p.notes.append("neither file records its pixel size: fill lr_pixel_size_um and hr_pixel_size_um")
        channels = (p.lr.header["channels"], p.hr.header["channels"])  # type: ignore[index]
        if channels[0] != channels[1]:
            p.notes.append(f"channel counts differ (LR {channels[0]}, HR {channels[1]}): fill the channel column, or ingestion stops")


def propose_splits(pairs: list[Pair], *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> None:
    """Set each pair's split, per sample, in the order of :func:`fastscan.sheets.fov_fraction`.

    Pairs that share an HR target are one FOV and get one split.
    """
    from fastscan.sheets import fov_fraction

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PairingError(f"split fractions val={val_fraction} test={test_fraction} must be in [0, 1) and sum to less than 1")
    samples: dict[str, dict[int, list[Pair]]] = {}
    for p in pairs:
        samples.setdefault(p.sample, {}).setdefault(id(p.hr), []).append(p)
    for groups in samples.values():
        fovs = sorted(groups.values(), key=lambda g: fov_fraction(g[0].sample, g[0].session, g[0].fov, seed=seed))
        n = len(fovs)
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 2 else 0
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        for i, group in enumerate(fovs):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for p in group:
                p.split = split


def propose(
    folders: Sequence[str | os.PathLike],
    *,
    scale: int = 2,
    sample: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split: bool = True,
    position_tolerance: float = 0.1,
    focus_tolerance_um: float = 2.0,
    session_gap_h: float = 12.0,
) -> Proposal:
    """Find, describe and pair the files under ``folders``; name the FOVs and propose splits.

    ``sample`` names every pair's sample; None takes each folder's name. ``split=False`` leaves
    the split column empty (the workflow then assigns splits by hash).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise PairingError(f"scale must be an integer of 2 or more (HR pixels per LR pixel), got {scale!r}")
    for name, value in (("position tolerance", position_tolerance), ("focus tolerance", focus_tolerance_um), ("session gap", session_gap_h)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise PairingError(f"{name} must be a positive number, got {value!r}")
    if sample is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", sample):
        raise PairingError(f"sample name {sample!r}: names may only hold letters, digits and _.- and must start with a letter or digit")
    usable, left = describe(find_files(folders))
    pairs, unpaired = pair_entries(
        usable, scale=scale, position_tolerance=position_tolerance, focus_tolerance_um=focus_tolerance_um, session_gap_h=session_gap_h
    )
    _name_pairs(pairs, sample)
    _fill_pixel_sizes(pairs, scale)
    if split:
        propose_splits(pairs, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    else:
        for p in pairs:
            p.notes.append("split left to the workflow's hash")
    pairs.sort(key=lambda p: (p.sample, p.session, p.fov))
    return Proposal(pairs, unpaired + left, scale)


# --------------------------------------------------------------------------------------------
# writing


def _sheet_path(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return os.fspath(path.resolve())
    return os.path.relpath(path.resolve(), relative_to.resolve())


def sheet_text(proposal: Proposal, *, relative_to: str | os.PathLike | None = None) -> str:
    """The sample sheet: the columns of :mod:`fastscan.sheets`, one row per pair."""
    from fastscan.sheets import SAMPLE_COLUMNS, SAMPLE_OPTIONAL

    base = Path(relative_to) if relative_to is not None else None
    columns = SAMPLE_COLUMNS + SAMPLE_OPTIONAL
    lines = ["\t".join(columns)]
    for p in proposal.pairs:
        row = {
            "sample": p.sample,
            "session": p.session,
            "fov": p.fov,
            "lr": _sheet_path(p.lr.path, base),
            "hr": _sheet_path(p.hr.path, base),
            "split": p.split,
            "lr_pixel_size_um": f"{p.lr_pixel_size_um:.6g}" if p.lr_pixel_size_um else "",
            "hr_pixel_size_um": f"{p.hr_pixel_size_um:.6g}" if p.hr_pixel_size_um else "",
        }
        lines.append("\t".join(row.get(c, "") for c in columns))
    return "\n".join(lines) + "\n"


REVIEW_COLUMNS = ("status", "sample", "session", "fov", "split", "role", "file", "partner", "evidence", "notes")


def review_rows(proposal: Proposal) -> list[dict[str, str]]:
    """One row per pair and per file left out, in the order of :data:`REVIEW_COLUMNS`."""
    rows = []
    for p in proposal.pairs:
        rows.append(
            {
                "status": "paired",
                "sample": p.sample,
                "session": p.session,
                "fov": p.fov,
                "split": p.split,
                "role": "LR series",
                "file": p.lr.shown(),
                "partner": p.hr.shown(),
                "evidence": "; ".join(p.evidence) or "sizes only",
                "notes": "; ".join(p.notes),
            }
        )
    order = {"unpaired": 0, "unreadable": 1, "skipped": 2}
    for u in sorted(proposal.unpaired, key=lambda u: (order[u.status], os.fspath(u.entry.path))):
        rows.append(
            {
                "status": u.status,
                "sample": "",
                "session": "",
                "fov": "",
                "split": "",
                "role": u.role,
                "file": u.entry.shown(),
                "partner": "",
                "evidence": "",
                "notes": u.reason,
            }
        )
    return rows


def review_text(proposal: Proposal) -> str:
    """The review as a table for the terminal, with a summary line."""
    rows = review_rows(proposal)
    out = []
    if proposal.pairs:
        head = ("fov", "split", "LR series", "HR target", "evidence / notes")
        table = [
            (f"{p['sample']}/{p['session']}/{p['fov']}", p["split"] or "-", p["file"], p["partner"], "; ".join(x for x in (p["evidence"], p["notes"]) if x))
            for p in rows
            if p["status"] == "paired"
        ]
        widths = [max(len(r[i]) for r in [head, *table]) for i in range(4)]
        out.append("Paired:")
        for r in [head, *table]:
            out.append("  " + "  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    left = [r for r in rows if r["status"] != "paired"]
    if left:
        out.append("Not in the sheet:")
        width = max(len(r["file"]) for r in left)
        for r in left:
            out.append(f"  {r['status']:<10}  {r['role']:<9}  {r['file'].ljust(width)}  {r['notes']}")
    splits = {s: sum(p.split == s for p in proposal.pairs) for s in ("train", "val", "test")}
    counts = {s: sum(u.status == s for u in proposal.unpaired) for s in ("unpaired", "unreadable", "skipped")}
    shown = f"train {splits['train']}, val {splits['val']}, test {splits['test']}" if sum(splits.values()) else "split by the workflow's hash"
    out.append(
        f"{len(proposal.pairs)} pair(s) ({shown}); {counts['unpaired']} image(s) unpaired, "
        f"{counts['unreadable']} unreadable, {counts['skipped']} other file(s) skipped"
    )
    return "\n".join(out) + "\n"


def check_outputs(out: str | os.PathLike, review: str | os.PathLike | None = None, *, force: bool = False) -> None:
    """Refuse a sheet or review path that is a folder, exists (unless ``force``), or is one path
    for both; called before the folders are read, and again before writing."""
    out = Path(out)
    if review is not None and Path(review).resolve() == out.resolve():
        raise PairingError(f"{out}: the sheet and the review must be different files")
    for path in (out, Path(review) if review is not None else None):
        if path is None:
            continue
        if path.is_dir():
            raise PairingError(f"{path}: is a folder; give the path of the file to write")
        if (path.exists() or path.is_symlink()) and not force:
            raise PairingError(f"{path}: exists; pass --force to replace it")


def _write_refusing(path: Path, text: str, *, force: bool, check=None) -> None:
    from fastscan.atomic import atomic_path

    check_outputs(path, force=force)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        if check is not None:
            check(tmp)


def write_sheet(
    proposal: Proposal,
    out: str | os.PathLike,
    *,
    review: str | os.PathLike | None = None,
    relative_to: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write the sample sheet (and the review as TSV) atomically, after reading it back.

    Refuses an existing file unless ``force``, and a proposal without pairs. The sheet is read
    with :func:`fastscan.sheets.load_samples` before it is put in place, so a sheet that the
    workflow would refuse is never written.
    """
    from fastscan.sheets import SheetError, load_samples

    out = Path(out)
    if not proposal.pairs:
        raise PairingError("no LR series could be paired with an HR target (see the review); no sheet written")
    check_outputs(out, review, force=force)
    if relative_to is not None and not Path(relative_to).is_dir():
        raise PairingError(f"{relative_to}: not a folder (paths in the sheet are written relative to it)")
    text = sheet_text(proposal, relative_to=relative_to)

    def check(tmp: Path) -> None:
        try:
            table = load_samples(tmp)
        except SheetError as exc:  # a bug here, not the user's: say what was refused
            raise PairingError(f"the sheet written for {out} does not pass the sample-sheet checks: {exc}") from exc
        if len(table) != len(proposal.pairs):
            raise PairingError(f"the sheet written for {out} reads back {len(table)} rows, not {len(proposal.pairs)}")

    if review is not None:
        rows = review_rows(proposal)
        lines = ["\t".join(REVIEW_COLUMNS)] + ["\t".join(re.sub(r"[\t\r\n]", " ", r[c]) for c in REVIEW_COLUMNS) for r in rows]
    _write_refusing(out, text, force=force, check=check)
    if review is not None:
        _write_refusing(Path(review), "\n".join(lines) + "\n", force=force)
    return out
