"""Atomic writes: a killed job never leaves an output that looks finished.

Every output is written under a temporary sibling name (same filesystem, so the final rename is
atomic) and renamed into place only when complete. An existing output is moved aside first and
removed only after the new one is in place, so a failed rename can put it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

# A failed writer's temporary is removed again until it stays gone for this long (see _discard).
_DISCARD_PAUSE_S = 0.05
_DISCARD_ATTEMPTS = 20


def remove(path: str | os.PathLike) -> None:
    """Remove a file, link or directory tree; nothing if it does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
    logger.warning(
        "could not remove the temporary %s; the next write of this output clears it", path
    )


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
    same errno and a message naming ``final``.
    """
    final = Path(final)
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
