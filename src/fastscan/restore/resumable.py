"""Resumable restorations: the ``OUT.partial`` store a restoration writes until it is complete.

:func:`check_restore_output` refuses an output before any work; a plan (``.progress/plan.json``)
says what a partial store holds, so a run with the same inputs and settings resumes it and any
other starts afresh; one marker per finished work unit (``.progress/done/...``) is written after
its chunks; :func:`_run_units` reads, restores and writes the units with reads and writes beside
the computation, and :class:`_Progress` reports how far it is. :func:`_publish` renames the
complete store into place.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr

from fastscan.restore import RestoreError

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)


def _partial(out: str | os.PathLike) -> Path:
    """Where a restoration is written until it is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _progress_dir(partial: Path) -> Path:
    return partial / ".progress"


def check_restore_output(out: str | os.PathLike, *, kind: str, inputs: Sequence[str | os.PathLike], overwrite: bool = False) -> None:
    """Refuse, before any work, an output path that a restoration must not write.

    ``out`` (and ``OUT.partial``) must not equal, contain or lie inside an input: replacing it
    would delete the input. Something already at ``out`` is replaced only when it is a clean
    fastscan store (:func:`fastscan.atomic.replaceable`) and either records the same output
    (same ``kind`` of restoration of the same input: a re-run) or ``overwrite`` is set. A user's
    folder or file is never replaced, ``overwrite`` or not.

    Parameters
    ----------
    out : path-like
    kind : str
        ``fastscan.kind`` of the store about to be written (``restored_slide``, ``restored_series``).
    inputs : sequence of path-like
        The files and folders read (the image or the frames of a glob, the model directory).
    overwrite : bool
        Replace a fastscan store of another restoration.
    """
    from fastscan.atomic import OutputError, check_replaceable, foreign_entries, store_attributes

    out = Path(out)
    mine = [out.resolve(), _partial(out).resolve()]
    for source in inputs:
        src = Path(source).resolve()
        for target in mine:
            if target == src or target in src.parents or src in target.parents:
                how = "is" if target == src else ("contains" if target in src.parents else "lies inside")
                raise RestoreError(f"{out}: the output {how} the input {source}; writing it would destroy the input. Choose an output path outside the inputs")
    check_replaceable(out, store=True)
    partial = _partial(out)
    # A partial store of fastscan's is a Zarr group (its zarr.json is written first) with chunks
    # and .progress/; a run that is setting one up right now passes this check and meets the lock.
    if partial.is_symlink() or partial.is_file() or (partial.is_dir() and any(partial.iterdir()) and foreign_entries(partial)):
        raise OutputError(f"{partial}: refusing to use it: it is not a partial restoration of fastscan's. Choose another output path, or move it away yourself")
    attrs = store_attributes(out) if out.is_dir() else None
    if attrs is None or overwrite:
        return
    same_input = bool(inputs) and Path(str(attrs.get("input", ""))).resolve() == Path(inputs[0]).resolve()
    if attrs.get("kind") != kind or not same_input:
        raise OutputError(
            f"{out}: already holds another fastscan output ({attrs.get('kind')} of {attrs.get('input')}). "
            "Pass --overwrite (overwrite=True) to replace it, or choose another output path"
        )
    log.info("%s: replacing the earlier %s of %s when this one is complete", out, kind, inputs[0])


def _marker(partial: Path, key: Sequence[int]) -> Path:
    # One directory level per key component keeps every directory small, however large the slide.
    return _progress_dir(partial).joinpath("done", *(str(k) for k in key))


def _done_keys(partial: Path, depth: int) -> set[tuple[int, ...]]:
    """Keys of the work units marked finished."""
    root = _progress_dir(partial) / "done"
    found: set[tuple[int, ...]] = set()

    def walk(path: Path, prefix: tuple[int, ...]) -> None:
        with os.scandir(path) as it:
            for entry in it:
                if not entry.name.isdigit():  # temporaries of a killed marker write
                    continue
                key = prefix + (int(entry.name),)
                if len(key) == depth:
                    if entry.is_file():
                        found.add(key)
                elif entry.is_dir():
                    walk(Path(entry.path), key)

    if root.is_dir():
        walk(root, ())
    return found


def _mark_done(partial: Path, key: Sequence[int]) -> None:
    from fastscan.atomic import write_text

    write_text(_marker(partial, key), "")


def _read_plan(partial: Path) -> dict[str, Any] | None:
    path = _progress_dir(partial) / "plan.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _open_partial(out: str | os.PathLike, plan: dict[str, Any], create: Callable[[zarr.Group], None]) -> tuple[Path, bool]:
    """Open ``OUT.partial`` for ``plan``: resume it when its plan is the same, else start afresh.

    The plan file is written last, so a store without one was never completely set up.

    Returns
    -------
    partial : Path
    resumed : bool
    """
    from fastscan.atomic import remove, write_text

    partial = _partial(out)
    plan = json.loads(json.dumps(plan))
    old = _read_plan(partial)
    if old == plan:
        return partial, True
    if partial.exists():
        why = "it was set up for other inputs or settings" if old else "it was never completely set up"
        log.warning("%s: discarding the partial restoration (%s)", partial, why)
        remove(partial)
    root = zarr.open_group(partial, mode="w", zarr_format=3)
    create(root)
    write_text(_progress_dir(partial) / "plan.json", json.dumps(plan, indent=1))
    return partial, False


def _input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an input for resuming: path, size and modification time (content is too big)."""
    p = Path(path)
    stats = [p.stat()] + [(p / n).stat() for n in ("zarr.json", ".zattrs", ".zarray", ".zgroup") if (p / n).is_file()]
    return {"path": str(p.resolve()), "size": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}


def _inputs(path: str | os.PathLike, model_dir: str | os.PathLike | None) -> list[str | os.PathLike]:
    """What a restoration reads: the image (or each frame of a glob) and the model directory."""
    from fastscan.io.sources import _glob_files, _is_glob

    images = _glob_files(str(path)) if _is_glob(path) else []
    return [path, *images, *([model_dir] if model_dir is not None else [])]


def _publish(out: str | os.PathLike) -> None:
    """Rename the complete ``OUT.partial`` into place, replacing an earlier output, and drop its
    bookkeeping (``.progress``)."""
    from fastscan.atomic import atomic_path, remove

    with atomic_path(out) as tmp:
        os.replace(_partial(out), tmp)
    remove(Path(out) / ".progress")


# A restoration estimated to take longer than this is announced with a warning, so that a user
# who started a whole slide on the wrong device (or level) learns it after one region, not in a week.
LONG_RESTORATION_S = 24 * 3600.0


def _duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 45 s, 12 min, 3.5 h, 9.2 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class _Progress:
    """A tqdm bar on an interactive terminal; otherwise a log line every ``every_s`` seconds and at
    every tenth of the work, so a job's log shows where it is.

    After the first unit computed in this run, the time for the rest is estimated from it and
    logged (with a warning beyond :data:`LONG_RESTORATION_S`). The first unit also pays for
    warm-up, so the estimate errs on the long side.
    """

    def __init__(self, total: int, *, desc: str, initial: int = 0, enabled: bool | None = None, every_s: float = 60.0) -> None:
        self.total, self.done, self.desc, self.every_s = total, initial, desc, every_s
        self.t0 = self.last = time.monotonic()
        self.start = initial
        interactive = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="unit", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        if before == self.start and self.done < self.total:
            self._estimate(time.monotonic() - self.t0)
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        tenth = max(1, self.total // 10)
        if self.done == self.total or self.done // tenth > before // tenth or now - self.last >= self.every_s:
            self.last = now
            rate = (self.done - self.start) / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            log.info("%s: %d/%d done (%.1f%%, %.2f/s, about %.0f s left)", self.desc, self.done, self.total, 100 * self.done / max(self.total, 1), rate, eta)

    def _estimate(self, elapsed: float) -> None:
        first = self.done - self.start
        left = elapsed / first * (self.total - self.done)
        finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left))
        message = "%s: the first %d unit(s) took %s; the remaining %d will take about %s (until about %s)"
        args = (self.desc, first, _duration(elapsed), self.total - self.done, _duration(left), finish)
        if left > LONG_RESTORATION_S:
            log.warning(
                message + ". That is more than a day: consider a GPU (--device cuda), a coarser input level "
                "(--level), or scattering the regions over cluster jobs (restore.parts)",
                *args,
            )
        else:
            log.info(message, *args)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _overlap_io(device: torch.device) -> bool:
    """Whether reads and writes should run in background threads beside the computation.

    They pay off when something is left to run them: a GPU computing, or CPU cores torch does not
    use. When torch already has every core, the extra threads only compete with its thread pool
    (measured on 2 cores: 40 % slower).
    """
    import torch

    return device.type == "cuda" or torch.get_num_threads() < (os.cpu_count() or 1)


def _run_units(
    units: Sequence[tuple[int, ...]],
    *,
    read: Callable[[tuple[int, ...]], Any],
    compute: Callable[[Any], Any],
    write: Callable[[tuple[int, ...], Any], None],
    partial: Path,
    progress: _Progress,
    background: bool = True,
) -> None:
    """Read, restore and write work units, with reads and writes overlapping the computation when
    ``background`` is set.

    One unit is read ahead and at most two finished units wait to be written, so memory stays
    bounded by a few units. A unit is marked done only after its chunks are written: a unit that
    was being written when the job died is recomputed on the next run.
    """

    def write_and_mark(key: tuple[int, ...], value: Any) -> None:
        write(key, value)
        _mark_done(partial, key)

    if not units:
        return
    if not background:
        for key in units:
            write_and_mark(key, compute(read(key)))
            progress.update()
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        pending: deque = deque()
        nxt = reader.submit(read, units[0])
        for i, key in enumerate(units):
            data = nxt.result()
            if i + 1 < len(units):
                nxt = reader.submit(read, units[i + 1])
            result = compute(data)
            del data
            pending.append(writer.submit(write_and_mark, key, result))
            del result
            while len(pending) > 1 or (pending and pending[0].done()):
                pending.popleft().result()
                progress.update()
        while pending:
            pending.popleft().result()
            progress.update()
