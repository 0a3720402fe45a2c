"""The pairing rules: which HR target belongs to which LR series (see :mod:`fastscan.pairing`).

Candidates by size, then the metadata checks (pixel size, zoom, stage, focus, time), the choice
among several fitting files (by name, else clearly by time), and the reasons for every file left
unpaired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastscan.pairing.entries import Entry, Unpaired, pairing_folder, role_of

PIXEL_RATIO_TOLERANCE = 0.02
ZOOM_TOLERANCE = 0.01


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


def _series_before_target(lr: Entry, hr: Entry) -> bool:
    """At scale 1: can ``lr`` be the series of target ``hr``, by frames, else by role words?"""
    lr_frames, hr_frames = lr.header["frames"], hr.header["frames"]  # type: ignore[index]
    if lr_frames != hr_frames:
        return lr_frames > hr_frames
    return role_of(lr) == "series" and role_of(hr) == "target"


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


@dataclass
class _Candidates:
    """Per entry (by ``id``): the HR targets that fit an LR series with their checks, why the
    other files of its size refused it, and which entries are the target size of some series."""

    options: dict[int, list[tuple[Entry, _Check]]] = field(default_factory=dict)
    refused: dict[int, list[str]] = field(default_factory=dict)
    has_lr: set[int] = field(default_factory=set)


def pair_entries(
    entries: Sequence[Entry],
    *,
    scale: int = 2,
    position_tolerance: float = 0.1,
    focus_tolerance_um: float = 2.0,
    session_gap_h: float = 12.0,
) -> tuple[list[Pair], list[Unpaired]]:
    """Pair LR series with HR targets among described files (see the module notes)."""
    found = _candidates(entries, scale=scale, position_tolerance=position_tolerance, focus_tolerance_um=focus_tolerance_um, session_gap_h=session_gap_h)
    # Each series picks its target, then each target keeps the series that fit it best.
    chosen, why_not = _choose_targets(entries, found.options)
    pairs = _keep_best_series(entries, chosen, why_not, position_tolerance=position_tolerance)
    pairs = _without_chains(pairs, why_not)
    return pairs, _unpaired(entries, pairs, found, why_not, scale=scale)


def _candidates(entries: Sequence[Entry], *, scale: int, position_tolerance: float, focus_tolerance_um: float, session_gap_h: float) -> _Candidates:
    """Check every pair of files of one folder whose sizes are in ratio ``scale``.

    At ``scale`` 1 (denoising) sizes cannot tell the series from the target: the series is the
    file with more frames, or, at equal frames, the one whose path names it so (``raw``,
    ``noisy``, ``lr``... against ``gt``, ``avg``, ``hr``...; :func:`role_of`).
    """
    by_folder: dict[tuple[Path, tuple[str, ...]], list[Entry]] = {}
    for e in entries:
        by_folder.setdefault(pairing_folder(e), []).append(e)
    found = _Candidates()
    options, refused, has_lr = found.options, found.refused, found.has_lr
    for group in by_folder.values():
        for lr in group:
            for hr in group:
                if hr is lr or hr.size != (scale * lr.size[0], scale * lr.size[1]):
                    continue
                if scale == 1 and not _series_before_target(lr, hr):
                    continue
                has_lr.add(id(hr))
                c = _check(lr, hr, scale=scale, position_tolerance=position_tolerance, focus_tolerance_um=focus_tolerance_um, session_gap_h=session_gap_h)
                if c.ok:
                    options.setdefault(id(lr), []).append((hr, c))
                else:
                    refused.setdefault(id(lr), []).append(f"{hr.path.name}: {c.why}")
                    refused.setdefault(id(hr), []).append(f"{lr.path.name}: {c.why}")
    return found


def _choose_targets(entries: Sequence[Entry], options: dict[int, list[tuple[Entry, _Check]]]) -> tuple[dict[int, tuple[Entry, _Check, str]], dict[int, str]]:
    """Each series' own choice among its fitting targets; why not, for those that cannot choose."""
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
    return chosen, why_not


def _keep_best_series(
    entries: Sequence[Entry], chosen: dict[int, tuple[Entry, _Check, str]], why_not: dict[int, str], *, position_tolerance: float
) -> list[Pair]:
    """The pairs, where a target chosen by several series keeps the one that fits it best (or all
    of them, at the same stage position); the others get their reason in ``why_not``."""
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
    return pairs


def _without_chains(pairs: list[Pair], why_not: dict[int, str]) -> list[Pair]:
    """The pairs whose series is no other pair's target; the reason for the others in ``why_not``."""
    # A file is one thing: a series that is also another series' target stays unpaired.
    used_as_hr = {id(p.hr) for p in pairs}
    kept = []
    for p in pairs:
        if id(p.lr) in used_as_hr:
            why_not[id(p.lr)] = f"is itself the HR target of another series, and fits {p.hr.path.name} as a series"
        else:
            kept.append(p)
    return kept


def _unpaired(entries: Sequence[Entry], pairs: list[Pair], found: _Candidates, why_not: dict[int, str], *, scale: int) -> list[Unpaired]:
    """Every entry in no pair, with its role and why."""
    options, refused, has_lr = found.options, found.refused, found.has_lr
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
            counted = f"{frames} frame{'s' if frames != 1 else ''} of {y}x{x}"
            if scale == 1:
                reason = (
                    f"{counted}; no other file of its folder is that size with fewer frames, or, at equal frames, named as its "
                    "target (gt, avg, clean, hr...) while it is named as a series (raw, noisy, lr...): no partner"
                )
            else:
                reason = (
                    f"{counted}; no file of its folder is {scale}x that size ({scale * y}x{scale * x}) or 1/{scale} of it "
                    f"({y / scale:g}x{x / scale:g}): no partner"
                )
        unpaired.append(Unpaired(e, "unpaired", role, reason))
    return unpaired


def _fill_pixel_sizes(pairs: list[Pair], scale: int, lr_pixel_size_um: float | None = None) -> None:
    """A pixel size one file lacks follows from its partner's; neither: ``lr_pixel_size_um`` (the
    user's, for files that record none, such as arrays), else the user must fill the sheet."""
    for p in pairs:
        lr, hr = p.lr.pixel, p.hr.pixel
        if lr and not hr:
            p.hr_pixel_size_um = lr[1] / scale
            p.notes.append(f"HR pixel size not in the file: written as {_fmt(p.hr_pixel_size_um)} µm (LR / {scale})")
        elif hr and not lr:
            p.lr_pixel_size_um = hr[1] * scale
            p.notes.append(f"LR pixel size not in the file: written as {_fmt(p.lr_pixel_size_um)} µm (HR x {scale})")
        elif not lr and not hr and lr_pixel_size_um:
            p.lr_pixel_size_um, p.hr_pixel_size_um = lr_pixel_size_um, lr_pixel_size_um / scale
            p.notes.append(f"neither file records its pixel size: written as given, LR {_fmt(lr_pixel_size_um)} µm, HR {_fmt(p.hr_pixel_size_um)} µm")
        elif not lr and not hr:
            p.notes.append("neither file records its pixel size: fill lr_pixel_size_um and hr_pixel_size_um (or give --lr-pixel-size)")
        channels = (p.lr.header["channels"], p.hr.header["channels"])  # type: ignore[index]
        if channels[0] != channels[1]:
            p.notes.append(f"channel counts differ (LR {channels[0]}, HR {channels[1]}): fill the channel column, or ingestion stops")
