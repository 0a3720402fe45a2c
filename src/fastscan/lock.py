"""One restoration per output at a time: an operating-system lock beside ``OUT.partial``.

Two restorations writing the same ``OUT.partial`` would both compute every region, overwrite each
other's chunks and markers, and the slower one would fail at the end. The lock is ``flock(2)`` on
``OUT.partial.lock``:

- The kernel releases it when its process dies (a crash, SIGKILL, a SLURM time limit), so a lock
  file left behind by a dead process is simply taken over; its recorded holder is logged.
- A whole restoration (and the plan and gather steps of a scattered one) holds it exclusively. The
  part jobs of a scattered restoration hold it shared: they run side by side by design, while a
  full restoration of the same output is refused until they end.
- The last holder removes the file while it still holds the lock, so nothing is left beside a
  finished store. A process that was waiting on the removed file notices (its open file is no
  longer the one at the path) and locks the new one.

On file systems without ``flock`` (some Lustre and old NFS mounts) the lock is skipped with a
warning: concurrent runs are then not detected.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# How often a waiting process logs that it is still waiting.
_WAIT_LOG_S = 60.0
_POLL_S = 0.5


class LockedError(RuntimeError):
    """The output is being written by another process."""


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of the restoration writing ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".partial.lock")


def _holders(path: Path) -> list[dict]:
    """The holders recorded in a lock file, one JSON object a line (unreadable lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    holders = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            holders.append(entry)
    return holders


def _describe(holders: list[dict]) -> str:
    if not holders:
        return "another process (it recorded no details)"
    shown = [f"pid {h.get('pid')} on host {h.get('host')} ({h.get('what')}, since {h.get('since')})" for h in holders[-3:]]
    return "; ".join(shown)


def _me(what: str) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.strftime("%Y-%m-%d %H:%M:%S")})


def _try(fd: int, op: int) -> bool:
    """``flock(fd, op | LOCK_NB)``: True when granted, False when another process holds it."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (the last holder may have removed it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _acquire(path: Path, out: Path, *, shared: bool, wait: bool, what: str) -> int | None:
    """Open and lock ``path``, the lock of ``out``; the file descriptor, or None when the file
    system has no locks."""
    waited_since = last_log = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Exclusive first, also for a shared holder: granted only when nobody holds the
            # lock, which is when a record left by a dead holder can be cleared.
            alone = _try(fd, fcntl.LOCK_EX)
            got = alone or (shared and _try(fd, fcntl.LOCK_SH))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                log.warning(
                    "%s: the file system does not support locks (%s); a second restoration of the same output would not be detected", path, exc.strerror
                )
                return None
            raise
        if got and _same_file(fd, path):
            if alone:
                stale = _holders(path)
                if stale:
                    log.warning("%s: taking over the lock of %s, which is no longer running", path, _describe(stale))
                os.ftruncate(fd, 0)
                if shared:
                    # Converting is not atomic in flock(2): another process may win the gap.
                    if not _try(fd, fcntl.LOCK_SH):
                        os.close(fd)
                        continue
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, (_me(what) + "\n").encode())
            return fd
        os.close(fd)
        if got:  # locked a file the last holder had just removed: lock the new one
            continue
        holders = _holders(path)
        if not wait:
            raise LockedError(
                f"{out}: another restoration is writing this output: {_describe(holders)}. "
                "Wait for it to finish (or pass --wait), or stop it; a stopped run continues where it left off"
            )
        now = time.monotonic()
        if waited_since is None:
            waited_since = last_log = now
            log.info("%s: waiting for %s to finish", out, _describe(holders))
        elif now - last_log >= _WAIT_LOG_S:
            last_log = now
            log.info("%s: still waiting (%.0f s) for %s", out, now - waited_since, _describe(holders))
        time.sleep(_POLL_S)


def _release(fd: int, path: Path) -> None:
    """Unlock; the last holder removes the lock file first, while it still holds the lock."""
    try:
        if _try(fd, fcntl.LOCK_EX) and _same_file(fd, path):
            path.unlink()
    except OSError as exc:
        log.warning("%s: could not remove the lock file: %s", path, exc)
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, *, shared: bool = False, wait: bool = False, what: str = "restore") -> Iterator[Path]:
    """Hold the lock of the restoration writing ``out`` for the duration of the block.

    Parameters
    ----------
    out : path-like
        The final output (``OUT``); the lock file is ``OUT.partial.lock``.
    shared : bool
        Share the lock with other shared holders (the part jobs of a scattered restoration).
    wait : bool
        Wait for the running holder(s) to finish instead of raising :class:`LockedError`.
    what : str
        What this process does, recorded for the message another process shows.

    Yields
    ------
    Path
        The lock file.
    """
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, Path(out), shared=shared, wait=wait, what=what)
    try:
        yield path
    finally:
        if fd is not None:
            _release(fd, path)
