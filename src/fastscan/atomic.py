"""Atomic writes: a killed job never leaves an output that looks finished.

Every output is written under a temporary sibling name (same filesystem, so the final rename is
atomic) and renamed into place only when complete. An existing output is moved aside first and
removed only after the new one is in place, so a failed rename can put it back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


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


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``final`` (a file or a directory store) into.

    On success the temporary replaces ``final``; on any exception it is removed and an existing
    ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(final)
    tmp, old = _temp_name(final, "tmp"), _temp_name(final, "old")
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            if (old.exists() or old.is_symlink()) and not final.exists():
                os.replace(old, final)
            raise
    finally:
        remove(tmp)
    remove(old)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
