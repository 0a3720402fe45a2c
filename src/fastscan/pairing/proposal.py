"""The driver of ``fastscan sheet``'s proposal, :func:`propose`: find, describe and pair the
files, name the FOVs and propose splits."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fastscan.pairing.entries import PairingError, Unpaired, describe, find_files, pairing_folder
from fastscan.pairing.rules import Pair, _fill_pixel_sizes, pair_entries
from fastscan.pairing.split import _name_pairs, propose_splits


@dataclass
class Proposal:
    """Result of :func:`propose`: the pairs (sheet rows) and every file left out, with why."""

    pairs: list[Pair]
    unpaired: list[Unpaired]
    scale: int


def _point_at_unreadable_neighbours(unpaired: list[Unpaired], left: list[Unpaired]) -> None:
    """A file left without partner in a folder where another file could not be read (a series
    with one unlike frame, a corrupt TIFF) has most likely lost its partner to that: say so
    beside the generic reason, so that the review leads to the file to fix."""
    unreadable: dict[tuple, list[str]] = {}
    for u in left:
        if u.status == "unreadable":
            unreadable.setdefault(pairing_folder(u.entry), []).append(u.entry.shown())
    for u in unpaired:
        near = unreadable.get(pairing_folder(u.entry))
        if u.status == "unpaired" and near:
            named = ", ".join(near[:3]) + (f" and {len(near) - 3} more" if len(near) > 3 else "")
            u.reason += f"; {named} beside it (its folder, or the matching one of another role) could not be read (listed here too) and may be its partner"


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
    lr_pixel_size_um: float | None = None,
    test: Sequence[str] = (),
) -> Proposal:
    """Find, describe and pair the files under ``folders``; name the FOVs and propose splits.

    ``sample`` names every pair's sample; None takes each folder's name. ``split=False`` leaves
    the split column empty (the workflow then assigns splits by hash). ``lr_pixel_size_um`` is
    written for pairs of which neither file records a pixel size (the HR's is it / ``scale``).
    ``test`` holds glob patterns of the FOVs to hold out as the test split (a public dataset's
    own test FOVs; see :func:`~fastscan.pairing.split.propose_splits`).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise PairingError(f"scale must be a positive integer (HR pixels per LR pixel; 1 for denoising pairs), got {scale!r}")
    checked = [("position tolerance", position_tolerance), ("focus tolerance", focus_tolerance_um), ("session gap", session_gap_h)]
    if lr_pixel_size_um is not None:
        checked.append(("LR pixel size", lr_pixel_size_um))
    for name, value in checked:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise PairingError(f"{name} must be a positive number, got {value!r}")
    if sample is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", sample):
        raise PairingError(f"sample name {sample!r}: names may only hold letters, digits and _.- and must start with a letter or digit")
    if test and not split:
        raise PairingError("--test sets the test split, which --no-split leaves to the workflow's hash: give one of them")
    usable, left = describe(find_files(folders))
    pairs, unpaired = pair_entries(
        usable, scale=scale, position_tolerance=position_tolerance, focus_tolerance_um=focus_tolerance_um, session_gap_h=session_gap_h
    )
    _point_at_unreadable_neighbours(unpaired, left)
    _name_pairs(pairs, sample)
    _fill_pixel_sizes(pairs, scale, lr_pixel_size_um)
    if split and pairs:  # no pairs: the review and write_sheet say so, not a --test that matched nothing
        propose_splits(pairs, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, test=test)
    else:
        for p in pairs:
            p.notes.append("split left to the workflow's hash")
    pairs.sort(key=lambda p: (p.sample, p.session, p.fov))
    return Proposal(pairs, unpaired + left, scale)
