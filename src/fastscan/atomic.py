"""Atomic, safe writes: a killed job never leaves an output that looks finished, and no write
ever removes something fastscan did not make.

Every output is written under a temporary sibling name (same filesystem, so the final rename is
atomic) and renamed into place only when complete. An existing output is moved aside first and
removed only after the new one is in place, so a failed rename can put it back.

What may be replaced: a regular file by a file (the tables and weights fastscan writes), and a
directory only when it is empty or a Zarr store that fastscan wrote (its root ``zarr.json``
carries a ``fastscan`` attribute) holding nothing but Zarr nodes. Anything else at the output
path (a user's folder, a store of another program, a file where a store goes) is refused with an
:class:`OutputError` before the writer starts, and checked again just before the rename.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# A failed writer's temporary is removed again until it stays gone for this long (see _discard).
_DISCARD_PAUSE_S = 0.05
_DISCARD_ATTEMPTS = 20


class OutputError(ValueError):
    """An output path holds something that fastscan must not replace."""


# Files an operating system's file browser drops into any folder it shows: not the user's data.
_OS_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}
# What fastscan itself keeps at the root of its stores besides Zarr nodes: the bookkeeping folder
# of a resumable restoration (fastscan.restore.resumable) and the tile table of a dataset (fastscan.dataset).
_OWN_ENTRIES = {".progress", "tiles.tsv"}


def store_attributes(path: str | os.PathLike) -> dict | None:
    """The ``fastscan`` attribute of the Zarr v3 group at ``path``, or None when it has none.

    Read from ``zarr.json`` directly: a store of another program, a broken store or a plain
    folder all give None, never an exception.
    """
    try:
        node = json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    attrs = node.get("attributes") if isinstance(node, dict) else None
    own = attrs.get("fastscan") if isinstance(attrs, dict) else None
    return own if isinstance(own, dict) else None


def foreign_entries(store: str | os.PathLike, *, limit: int = 5) -> list[Path]:
    """Up to ``limit`` paths inside the Zarr store ``store`` that are not part of the store.

    A group may hold ``zarr.json``, child nodes (folders with their own ``zarr.json``) and, at
    the root, fastscan's own bookkeeping (``.progress/``, ``tiles.tsv``); an array holds
    ``zarr.json`` and its chunk tree ``c/``.
    Chunk trees are not walked: they are named by Zarr, and a slide can have millions of chunks.
    """
    found: list[Path] = []

    def walk(node: Path) -> None:
        try:
            meta = json.loads((node / "zarr.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found.append(node)
            return
        is_array = isinstance(meta, dict) and meta.get("node_type") == "array"
        for entry in sorted(node.iterdir()):
            if len(found) >= limit:
                return
            name = entry.name
            if name == "zarr.json" or name in _OS_LITTER or name.startswith("._"):
                continue
            if node == root and name in _OWN_ENTRIES and not entry.is_symlink():
                continue
            if is_array:
                if not (name == "c" and entry.is_dir() and not entry.is_symlink()):
                    found.append(entry)
            elif entry.is_dir() and not entry.is_symlink():
                walk(entry)
            else:
                found.append(entry)

    root = Path(store)
    walk(root)
    return found[:limit]


def replaceable(final: str | os.PathLike) -> str | None:
    """Why ``final`` must not be replaced by a new output, or None when it may be.

    Nothing there, an empty folder, a regular file (replaced only by a file: see
    :func:`atomic_path`) and a clean fastscan store may be replaced.
    """
    final = Path(final)
    if final.is_symlink():
        return "it is a symbolic link"
    if not final.exists():
        return None
    if not final.is_dir():
        return None if final.is_file() else "it is not a regular file or folder"
    entries = [e for e in final.iterdir() if e.name not in _OS_LITTER]
    if not entries:
        return None
    if store_attributes(final) is None:
        shown = ", ".join(e.name for e in sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        return f"it is a folder that fastscan did not write (it holds {shown})"
    foreign = foreign_entries(final)
    if foreign:
        shown = ", ".join(str(p.relative_to(final)) for p in foreign)
        return f"it is a fastscan store that also holds other files ({shown})"
    return None


def check_replaceable(final: str | os.PathLike, *, store: bool | None = None) -> None:
    """Raise :class:`OutputError` unless writing ``final`` can only replace fastscan's own output.

    Parameters
    ----------
    final : path-like
    store : bool, optional
        True when a directory store will be written, False for a file; a regular file is never
        replaced by a store, nor a store by a file. None skips that check.
    """
    final = Path(final)
    why = replaceable(final)
    if why is None and store is not None and final.exists():
        if store and final.is_file():
            why = "it is a file, and a store (a folder) would replace it"
        elif not store and final.is_dir() and any(final.iterdir()):
            why = "it is a folder, and a file would replace it"
    if why is not None:
        raise OutputError(
            f"{final}: refusing to replace it: {why}. fastscan replaces only outputs it wrote itself; choose another output path, or move it away yourself"
        )


def remove(path: str | os.PathLike) -> None:
    """Remove a file, link or directory tree; nothing if it does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def free_space(final: str | os.PathLike) -> tuple[Path, int]:
    """The folder an output at ``final`` would be written in (its nearest existing ancestor,
    since the writer creates the rest) and the bytes free there, for a check before writing."""
    final = Path(final).absolute()
    where = next(p for p in final.parents if p.exists())  # the root, at the latest
    return where, shutil.disk_usage(where).free


def _temp_name(final: Path, kind: str) -> Path:
    # pid + random: two writers (or a re-used pid after a crash) never share a temporary.
    return final.with_name(f"{final.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def clear_stale(final: str | os.PathLike) -> None:
    """Remove temporaries of ``final`` left by killed writers whose process is gone."""
    final = Path(final)
    for leftover in [*final.parent.glob(f"{final.name}.tmp-*"), *final.parent.glob(f"{final.name}.old-*")]:
        pid = leftover.name.rsplit(".", 1)[-1].split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        remove(leftover)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _discard(path: Path) -> None:
    """Remove the temporary of a failed writer, waiting out writes still in flight.

    zarr writes chunks concurrently from a thread pool: when one write fails (a full disk), others
    already started still create files, which fails a tree removal (ENOTEMPTY) or re-creates a
    folder just removed. Removal is therefore repeated until the path stays gone; what a writer
    that never finishes leaves behind is cleared by the next :func:`clear_stale`.
    """
    for _ in range(_DISCARD_ATTEMPTS):
        try:
            remove(path)
        except OSError:
            pass
        time.sleep(_DISCARD_PAUSE_S)
        if not (path.exists() or path.is_symlink()):
            return
    logger.warning("could not remove the temporary %s; the next write of this output clears it", path)


def _naming(exc: OSError, final: Path) -> OSError:
    """``exc`` with a message that says which output could not be written."""
    if exc.errno is None:
        return OSError(f"writing {final} failed: {exc}")
    # Same errno, so the same subclass (FileNotFoundError, PermissionError, ...) is raised.
    message = f"writing {final} failed: {exc.strerror}"
    return OSError(exc.errno, message, exc.filename, None, exc.filename2)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``final`` (a file or a directory store) into.

    On success the temporary replaces ``final``; on any exception it is removed and an existing
    ``final`` is left untouched. An ``OSError`` (a full disk, a lost mount) is re-raised with the
    same errno and a message naming ``final``. Something at ``final`` that fastscan did not
    write (:func:`replaceable`) raises :class:`OutputError` before anything is written, and
    again at the rename if it appeared meanwhile.
    """
    final = Path(final)
    check_replaceable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(final)
    tmp, old = _temp_name(final, "tmp"), _temp_name(final, "old")
    try:
        yield tmp
    except OSError as exc:
        _discard(tmp)
        raise _naming(exc, final) from exc
    except BaseException:
        _discard(tmp)
        raise
    try:
        check_replaceable(final, store=tmp.is_dir())
    except OutputError:
        _discard(tmp)
        raise
    try:
        if final.exists() or final.is_symlink():
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:
        if (old.exists() or old.is_symlink()) and not final.exists():
            os.replace(old, final)
        _discard(tmp)
        raise _naming(exc, final) from exc
    remove(old)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
