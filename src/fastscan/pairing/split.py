"""Naming the pairs (sample, session, FOV) and proposing their splits, per sample, in the order
of :func:`fastscan.sheets.fov_fraction` (see :mod:`fastscan.pairing`)."""

from __future__ import annotations

import re

from fastscan.pairing.entries import PairingError, sanitise
from fastscan.pairing.rules import Pair


def _name_pairs(pairs: list[Pair], sample: str | None) -> None:
    """Name each pair's sample (``sample``, else its folder's name), session (its subfolders) and
    FOV (its file name, or its folder of frames, without role words; ``-2``, ``-3``... where that
    name is taken); see :meth:`Entry.place`."""
    taken: set[tuple[str, str, str]] = set()
    for p in pairs:
        root = p.lr.root
        p.sample = sanitise(sample, "sample") if sample else sanitise(root.name, "sample")
        words, rel = p.lr.place()
        p.session = sanitise("-".join(rel), "session") if rel else sanitise(root.name, "session")
        base = sanitise("_".join(words), "fov")
        fov, n = base, 1
        while (p.sample, p.session, fov) in taken:
            n += 1
            fov = f"{base}-{n}"
        taken.add((p.sample, p.session, fov))
        p.fov = fov


#: A name token that only says which channel a file holds: W2S's ``wf_channel0``, ``fov1_ch2``,
#: and Fiji's split channels ``C1-fov1``.
_CHANNEL_TOKEN = re.compile(r"(?:channel|chan|ch)\d+", re.IGNORECASE)
_FIJI_CHANNEL = re.compile(r"C\d+")


def _without_channel(fov: str) -> str:
    tokens = [t for t in re.split(r"[_.-]+", fov) if t]
    if len(tokens) > 1 and _FIJI_CHANNEL.fullmatch(tokens[0]):
        tokens = tokens[1:]
    return "_".join(t for t in tokens if not _CHANNEL_TOKEN.fullmatch(t))


def _same_fov(pairs: list[Pair]) -> dict[int, object]:
    """Per pair (by ``id``), a label shared by the pairs of one FOV: those with one HR target, or
    of one sample and session whose FOV names agree once channel tokens are removed."""
    parent: dict[object, object] = {}

    def find(x: object) -> object:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for p in pairs:
        a, b = find(("hr", id(p.hr))), find(("fov", p.sample, p.session, _without_channel(p.fov)))
        parent[a] = b
    return {id(p): find(("hr", id(p.hr))) for p in pairs}


def propose_splits(pairs: list[Pair], *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> None:
    """Set each pair's split, per sample, in the order of :func:`fastscan.sheets.fov_fraction`.

    Pairs of one FOV get one split: those that share an HR target, and the channels of one FOV
    saved as files of their own (:func:`_same_fov`), so that no held-out FOV was trained on in
    another channel.
    """
    from fastscan.sheets import fov_fraction

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PairingError(f"split fractions val={val_fraction} test={test_fraction} must be in [0, 1) and sum to less than 1")
    samples: dict[str, dict[object, list[Pair]]] = {}
    fov_of = _same_fov(pairs)
    for p in pairs:
        samples.setdefault(p.sample, {}).setdefault(fov_of[id(p)], []).append(p)
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
