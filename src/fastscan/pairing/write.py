"""Writing the sample sheet and its review: refused paths, atomic writes, the sheet read back
by :func:`fastscan.sheets.load_samples` before it is put in place."""

from __future__ import annotations

import os
from pathlib import Path

from fastscan.pairing.entries import PairingError, role_of
from fastscan.pairing.proposal import Proposal
from fastscan.pairing.review import review_tsv, sheet_text


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


def _scale_hint(proposal: Proposal) -> str:
    """When nothing paired at ``--scale N`` but the files left out come in one size, the dataset
    is most likely a denoising one (noisy frames beside averages of the same size): say so."""
    left = [u.entry for u in proposal.unpaired if u.status == "unpaired" and u.entry.header]
    sizes = {e.size for e in left}
    # A series and something that can be its target: a single image, or a file named as one.
    target = any(e.header["frames"] == 1 or role_of(e) == "target" for e in left)
    series = any(e.header["frames"] > 1 or role_of(e) == "series" for e in left)
    if proposal.scale != 1 and len(sizes) == 1 and len(left) > 1 and target and series:
        ((y, x),) = sizes
        return f". Every file is {y}x{x}: for noisy frames and targets of one size (a denoising dataset) give --scale 1"
    return ""


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
        raise PairingError(f"no LR series could be paired with an HR target (see the review); no sheet written{_scale_hint(proposal)}")
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

    _write_refusing(out, text, force=force, check=check)
    if review is not None:
        _write_refusing(Path(review), review_tsv(proposal), force=force)
    return out
