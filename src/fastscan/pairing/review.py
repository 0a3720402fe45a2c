"""The sample sheet and the review of a :class:`~fastscan.pairing.proposal.Proposal` as text:
the sheet's rows, the review's rows (:data:`REVIEW_COLUMNS`), its TSV and its terminal table."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastscan.pairing.proposal import Proposal


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
        head = ("sample/session/fov", "split", "LR series", "HR target", "evidence / notes")
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
        f"{len(proposal.pairs)} pair(s){f' ({shown})' if proposal.pairs else ''}; {counts['unpaired']} image(s) unpaired, "
        f"{counts['unreadable']} unreadable, {counts['skipped']} other file(s) skipped"
    )
    return "\n".join(out) + "\n"


def review_tsv(proposal: Proposal) -> str:
    """The review as TSV: :data:`REVIEW_COLUMNS`, one row per pair and per file left out."""
    rows = review_rows(proposal)
    lines = ["\t".join(REVIEW_COLUMNS)] + ["\t".join(re.sub(r"[\t\r\n]", " ", r[c]) for c in REVIEW_COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"
