"""Memory limits for whole-array reads: refuse a file before allocating what its header declares.

A raw file is read whole into memory, and its header alone decides how much: a damaged or
hand-edited TIFF of a few hundred bytes can declare 100000 x 100000 pixels, and reading it then
tries to allocate 9.3 GiB (and drags the machine into swap or the job into the OOM killer).
Snakemake's ``mem_mb`` only schedules jobs, it enforces nothing, so the readers compare the
declared size with a limit first:

* inside a workflow job, the job's own ``mem_mb`` (set by the rule's script through
  :func:`set_job_limit`, which exports :data:`ENV_VAR` so that child processes inherit it);
* otherwise the memory available on this machine (``MemAvailable`` of ``/proc/meminfo``, or
  the free pages ``os.sysconf`` reports elsewhere), lowered to a cgroup's limit when the
  process runs in a container that has one.

The readers (:mod:`fastscan.io.declared`) call :func:`check_fits` with the shape and dtype a
header declares and a working factor measured for them (see ``_READ_HEADROOM`` there).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fastscan.io.errors import InputError

__all__ = [
    "ENV_VAR",
    "MemoryLimit",
    "MemoryLimitError",
    "check_fits",
    "memory_limit",
    "memory_limit_bytes",
    "set_job_limit",
]

#: Megabytes (10**6 bytes, as Snakemake's ``mem_mb``) one job may use.
ENV_VAR = "FASTSCAN_MEM_MB"
#: Name of the rule that set :data:`ENV_VAR`, to say which resource to raise.
RULE_VAR = "FASTSCAN_MEM_RULE"


class MemoryLimit(NamedTuple):
    """A memory limit and where it comes from."""

    bytes: int
    #: ``"job"`` (set for this job), or ``"available"`` (free on this machine)
    source: str
    #: The rule whose ``mem_mb`` set the limit, if known.
    rule: str | None = None


def set_job_limit(mem_mb: float | None, *, rule: str | None = None) -> None:
    """Set the memory the current job may use, from the rule's ``mem_mb``.

    Parameters
    ----------
    mem_mb : float or None
        Megabytes (10**6 bytes), as ``snakemake.resources.mem_mb``. None or a value of 0
        or less clears the limit (the available memory is used again).
    rule : str, optional
        The rule's name, named in refusals so that the user knows which resource to raise.
    """
    if mem_mb is None or float(mem_mb) <= 0:
        os.environ.pop(ENV_VAR, None)
        os.environ.pop(RULE_VAR, None)
        return
    os.environ[ENV_VAR] = f"{float(mem_mb):g}"
    if rule:
        os.environ[RULE_VAR] = str(rule)
    else:
        os.environ.pop(RULE_VAR, None)


def _job_limit() -> MemoryLimit | None:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    try:
        mem_mb = float(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR}={text!r} is not a number of megabytes") from None
    if not (math.isfinite(mem_mb) and mem_mb > 0):
        raise ValueError(f"{ENV_VAR}={text!r} must be a positive number of megabytes")
    return MemoryLimit(int(mem_mb * 1e6), "job", os.environ.get(RULE_VAR) or None)


def _proc_kib(path: str, key: str) -> int | None:
    """Bytes of the ``key:  N kB`` line of a /proc file (Linux), None where it is missing."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _meminfo_available() -> int | None:
    """``MemAvailable`` (free plus reclaimable cache) in bytes, on Linux."""
    return _proc_kib("/proc/meminfo", "MemAvailable")


def _sysconf_available() -> int | None:
    """Free physical pages times the page size, where the system reports them."""
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left below a cgroup v2 memory limit (containers, Slurm jobs), None without one.

    Inside a container ``MemAvailable`` describes the host, while the kernel kills the
    process at the container's limit. Inactive page cache is reclaimed before that, so it
    counts as free (the working set, as the kubelet computes it).
    """
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text().strip())
        if limit == "max":
            return None
        return max(int(limit) - used + _inactive_file(root), 0)
    except (OSError, ValueError):
        return None


def _inactive_file(root: Path) -> int:
    try:
        for line in (root / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "inactive_file":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def memory_limit() -> MemoryLimit | None:
    """The memory a read may allocate, and where the number comes from.

    Returns
    -------
    MemoryLimit or None
        The job's limit when one is set (:func:`set_job_limit` or :data:`ENV_VAR`), else
        the memory available on this machine; None when the system does not say.
    """
    job = _job_limit()
    if job is not None:
        return job
    available = _meminfo_available() or _sysconf_available()
    headroom = _cgroup_headroom()
    if headroom is not None:
        available = min(available, headroom) if available else headroom
    return MemoryLimit(available, "available") if available else None


def memory_limit_bytes() -> int | None:
    """Bytes a read may allocate: the job's limit, else the available memory (None: unknown)."""
    limit = memory_limit()
    return None if limit is None else limit.bytes


def _process_rss() -> int:
    """Resident memory of this process in bytes (0 where /proc is missing).

    A job's limit covers the whole process, so what the interpreter and earlier steps
    already hold is not available to the read; the available memory already excludes it.
    """
    return _proc_kib("/proc/self/status", "VmRSS") or 0


def _human(n_bytes: float) -> str:
    """``10.0 GB``-style size in decimal units, the units of Snakemake's ``mem_mb``."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n_bytes) < 1000 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


class MemoryLimitError(InputError):
    """A file declares more pixels than the memory limit allows to read."""


def _limit_text(limit: MemoryLimit, in_use: int) -> str:
    if limit.source == "job":
        who = f"mem_mb of rule {limit.rule}" if limit.rule else ENV_VAR
        return f"the job's memory limit of {limit.bytes / 1e6:.0f} MB ({who}; {in_use / 1e6:.0f} MB already in use)"
    return f"the {_human(limit.bytes)} of memory available on this machine"


def _advice(limit: MemoryLimit, needed: int, in_use: int) -> str:
    """What the user can do: more memory, a smaller file, or a look at a suspicious header."""
    mem_mb = math.ceil((needed + in_use) / 1e6 / 100) * 100
    if limit.source != "job":
        more = f"run it where about {_human(needed)} are free"
    elif limit.rule:
        more = f"raise the rule's memory with `--set-resources {limit.rule}:mem_mb={mem_mb}`"
    else:
        more = f"raise {ENV_VAR} to {mem_mb}"
    return (
        f"To proceed, {more}, crop or bin the file into smaller pieces, or check that its "
        "header is not corrupt (a damaged header can declare an image far larger than the file)."
    )


def check_fits(
    path: Any,
    shape: Sequence[int],
    dtype: Any,
    *,
    what: str,
    factor: float,
    extra_bytes: int = 0,
    limit: MemoryLimit | None = None,
) -> int:
    """Refuse to read an array whose declared size does not fit the memory limit.

    Parameters
    ----------
    path : str or os.PathLike
        The file, named in the message.
    shape : sequence of int
        Shape the file declares (before any channel is selected).
    dtype : numpy dtype-like
        Its sample type.
    what : str
        What the file is for, e.g. ``"LR series"``; named in the message.
    factor : float
        Peak memory of the read as a multiple of the declared array (decoding buffers,
        the copy a channel selection makes, float conversions).
    extra_bytes : int, optional
        Memory needed besides: float planes made from the array, another file held at
        the same time.
    limit : MemoryLimit, optional
        The limit to compare with; :func:`memory_limit` when not given.

    Returns
    -------
    int
        The bytes the read is expected to need.

    Raises
    ------
    MemoryLimitError
        (an :class:`fastscan.io.InputError`) when the expected need exceeds the limit; the
        message names the file, the declared shape and dtype, the bytes needed, the limit and
        what to do.
    """
    dtype = np.dtype(dtype)
    raw = math.prod(int(n) for n in shape) * dtype.itemsize
    needed = int(raw * factor) + int(extra_bytes)
    limit = memory_limit() if limit is None else limit
    if limit is None:
        return needed
    in_use = _process_rss() if limit.source == "job" else 0
    if needed <= limit.bytes - in_use:
        return needed
    dims = " x ".join(str(int(n)) for n in shape)
    raise MemoryLimitError(
        f"{path}: the {what} declares {dims} {dtype} ({_human(raw)}); reading it needs about "
        f"{_human(needed)}, more than {_limit_text(limit, in_use)}. Nothing was read. " + _advice(limit, needed, in_use)
    )
