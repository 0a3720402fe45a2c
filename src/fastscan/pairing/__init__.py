"""Pair a session's files into a sample sheet (``fastscan sheet FOLDER... --out samples.tsv``).

Every OIB/OIF/TIFF/NPY/PNG under the given folders is described from its header alone
(:func:`fastscan.io.read_header`; no pixel data is decoded, so files of any size are cheap);
a folder of PNG frames is one series, a glob (:mod:`~fastscan.pairing.entries`).
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

The package is split by concept, lower layers first (no module imports a later one):

- :mod:`~fastscan.pairing.entries`: finding the files and reading their headers into
  :class:`Entry` objects (:func:`find_files`, :func:`describe`), and :class:`PairingError`;
- :mod:`~fastscan.pairing.rules`: the pairing rules, :func:`pair_entries` (:class:`Pair`);
- :mod:`~fastscan.pairing.split`: FOV names and the proposed splits (:func:`propose_splits`);
- :mod:`~fastscan.pairing.proposal`: :func:`propose`, the driver (:class:`Proposal`);
- :mod:`~fastscan.pairing.review`: the sheet and the review as text (:func:`sheet_text`,
  :func:`review_rows`, :func:`review_text`, :data:`REVIEW_COLUMNS`);
- :mod:`~fastscan.pairing.write`: :func:`check_outputs` and :func:`write_sheet`, the files.
"""

from fastscan.pairing.entries import IMAGE_SUFFIXES, ROLE_WORDS, Entry, PairingError, Unpaired, describe, find_files, name_tokens, sanitise
from fastscan.pairing.proposal import Proposal, propose
from fastscan.pairing.review import REVIEW_COLUMNS, review_rows, review_text, review_tsv, sheet_text
from fastscan.pairing.rules import PIXEL_RATIO_TOLERANCE, ZOOM_TOLERANCE, Pair, pair_entries
from fastscan.pairing.split import propose_splits
from fastscan.pairing.write import check_outputs, write_sheet

__all__ = [
    "IMAGE_SUFFIXES",
    "PIXEL_RATIO_TOLERANCE",
    "REVIEW_COLUMNS",
    "ROLE_WORDS",
    "ZOOM_TOLERANCE",
    "Entry",
    "Pair",
    "PairingError",
    "Proposal",
    "Unpaired",
    "check_outputs",
    "describe",
    "find_files",
    "name_tokens",
    "pair_entries",
    "propose",
    "propose_splits",
    "review_rows",
    "review_text",
    "review_tsv",
    "sanitise",
    "sheet_text",
    "write_sheet",
]
