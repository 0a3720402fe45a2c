"""Naming the pairs (sample, session, FOV) and proposing their splits, per sample, in the order
of :func:`fastscan.sheets.fov_fraction` (see :mod:`fastscan.pairing`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase

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


def _relative(entry) -> str:
    """An entry's path below the folder it was found in, with ``/`` (what ``--test`` matches)."""
    return entry.path.relative_to(entry.root).as_posix()


def _matches(pairs: list[Pair], patterns: Sequence[str]) -> dict[int, list[str]]:
    """Per pair (by ``id``), the patterns its LR or HR path (below its folder) matches, in order."""
    return {id(p): [pat for pat in patterns if any(fnmatchcase(_relative(e), pat) for e in (p.lr, p.hr))] for p in pairs}


def propose_splits(
    pairs: list[Pair],
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    test: Sequence[str] = (),
) -> None:
    """Set each pair's split, per sample, in the order of :func:`fastscan.sheets.fov_fraction`.

    Pairs of one FOV get one split: those that share an HR target, and the channels of one FOV
    saved as files of their own (:func:`_same_fov`), so that no held-out FOV was trained on in
    another channel.

    ``test`` holds glob patterns (``fnmatch``: ``*`` also crosses ``/``) matched against each
    pair's LR and HR paths below the folder they were found in: a public dataset's own test
    FOVs (FMD's ``*/19/*``, W2S's ``Image08[1-9]/*``). The FOVs they match are the test split and
    ``test_fraction`` is not used; the others are split into train and val. A pattern that
    matches no pair is refused: a typo would otherwise leave the test split empty.
    """
    from fastscan.sheets import fov_fraction

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PairingError(f"split fractions val={val_fraction} test={test_fraction} must be in [0, 1) and sum to less than 1")
    patterns = list(test)
    hits = _matches(pairs, patterns)
    unmatched = [pat for pat in patterns if not any(pat in h for h in hits.values())]
    if unmatched:
        raise PairingError(
            f"--test {', '.join(repr(u) for u in unmatched)} matched no paired file; patterns are matched against the paths below the "
            "folders given, e.g. 'raw/19/*' or '*/19/*' for a folder raw/19/"
        )
    samples: dict[str, dict[object, list[Pair]]] = {}
    fov_of = _same_fov(pairs)
    for p in pairs:
        samples.setdefault(p.sample, {}).setdefault(fov_of[id(p)], []).append(p)
    for groups in samples.values():
        held = {}  # each held-out FOV, with the first pattern one of its pairs matches
        for key, group in groups.items():
            matched = {pat for p in group for pat in hits[id(p)]}
            if matched:
                held[key] = next(pat for pat in patterns if pat in matched)
        order = sorted((k for k in groups if k not in held), key=lambda k: fov_fraction(groups[k][0].sample, groups[k][0].session, groups[k][0].fov, seed=seed))
        n = len(order)
        # With --test patterns the test split is theirs: the rest is only train and val.
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 and not patterns else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 2 else 0
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        for key, pat in held.items():
            for p in groups[key]:
                p.split = "test"
                p.notes.append(f"test: matches --test {pat!r}")
        for i, key in enumerate(order):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for p in groups[key]:
                p.split = split
