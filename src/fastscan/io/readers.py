"""The public raw readers: route a source to its format's reader, stack globs, read headers.

:func:`read_series`, :func:`read_image` and :func:`read_header` accept any source
(OIB/OIF, the TIFF family, PNG, NumPy ``.npy``, a glob of single-frame files) and hand it to
:mod:`fastscan.io.olympus`, :mod:`fastscan.io.tiff`, :mod:`fastscan.io.png` or :mod:`fastscan.io.npy`; :func:`_probe`
declares a source's array without reading pixels, so that callers can refuse what cannot fit
first.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.io.declared import _IMAGE, _SERIES, _declare, _Declared, _declared_frames, _guard, _Role
from fastscan.io.errors import InputError
from fastscan.io.npy import _npy_declared, _open_npy, _read_npy, _read_npy_header
from fastscan.io.olympus import _check_oib_complete, _read_olympus, _read_olympus_header, _truncated_olympus
from fastscan.io.png import _png_header, _read_png, _read_png_header
from fastscan.io.sources import PathLike, _detect_format, _glob_files, _is_glob
from fastscan.io.tiff import _read_tiff, _read_tiff_header, _tiff_series, _TiffStructureErrors
from fastscan.jsonable import jsonable


def _read_file(path: Path, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    fmt = _detect_format(path)
    if fmt == "tiff":
        return _read_tiff(path, channel=channel, role=role)
    if fmt == "png":
        return _read_png(path, channel=channel, role=role)
    if fmt == "npy":
        return _read_npy(path, channel=channel, role=role)
    return _read_olympus(path, fmt, channel=channel, role=role)


def _probe_file(path: Path) -> _Declared | None:
    """Shape, dtype and channels one file declares, without reading its pixels.

    The structural checks of the read run here too, so a broken file is refused for what
    it is before its (unreliable) declared shape is judged. None when the header cannot be
    parsed: the full read that follows reports why.
    """
    fmt = _detect_format(path)
    try:
        if fmt == "png":
            # The header chunks alone, no pixel decompressed; their walk also refuses a
            # truncated file here.
            return _png_header(path).declared
        if fmt == "npy":
            return _npy_declared(_open_npy(path), path)
        if fmt == "tiff":
            import tifffile

            with _TiffStructureErrors() as broken, tifffile.TiffFile(path) as tf:
                series = _tiff_series(tf, path, broken)
                return _declare(series.shape, series.dtype, str(series.axes))
        import oiffile

        if fmt == "oib":
            _check_oib_complete(path)
        with oiffile.OifFile(path) as oif:
            return _declare(oif.shape, oif.dtype, str(oif.axes))
    except InputError:
        raise
    except Exception:  # parsing failures are diagnosed, with their context, by the read
        return None


def _probe(path: PathLike) -> _Declared | None:
    """What a source declares; a glob declares its first file's frame once per file."""
    if not _is_glob(path):
        return _probe_file(Path(path))
    try:
        files = _glob_files(os.fspath(path))
    except InputError:
        return None
    first = _probe_file(files[0])
    if first is None:
        return None
    return _declare((len(files), *first.shape), first.dtype, "T" + first.axes)


def _read_glob(pattern: str, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    files = _glob_files(pattern)
    declared = _probe(pattern)
    if declared is not None:
        what = f"{role.what} of {len(files)} files"
        _guard(pattern, declared, what=what, plane_bytes=role.plane_bytes)
    stack: np.ndarray | None = None
    first_meta: dict[str, Any] = {}
    for i, file in enumerate(files):
        data, meta = _read_file(file, channel=channel, role=role)
        if data.shape[0] != 1:
            raise InputError(f"{file}: holds {data.shape[0]} frames, but every file matched by {pattern!r} must be a single frame")
        if stack is None:
            # Filled in place: a list of frames plus np.stack would hold the series twice.
            stack = np.empty((len(files), *data.shape[1:]), data.dtype)
            first_meta = meta
        elif data.shape[1:] != stack.shape[1:] or data.dtype != stack.dtype:
            raise InputError(
                f"{file}: frame is {data.shape[1:]} {data.dtype}, but {files[0]} is {stack.shape[1:]} {stack.dtype}; all frames of {pattern!r} must match"
            )
        stack[i] = data[0]
    meta = {
        **first_meta,
        "format": "glob",
        "path": pattern,
        "frame_format": first_meta.get("format"),
        "files": [os.fspath(f) for f in files],
    }
    return stack, meta


def read_series(path: PathLike, *, channel: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a video-rate series as a ``(T, Y, X)`` array.

    Parameters
    ----------
    path : str or os.PathLike
        An Olympus ``.oib``/``.oif`` file, a (multi-page, OME or ImageJ) TIFF, a PNG (8- or
        16-bit grayscale, or 8-bit colour), a NumPy ``.npy`` array (2-D ``(Y, X)`` or 3-D
        ``(T, Y, X)``; ``(Y, X, 3|4)`` is colour), or a glob pattern of single-frame files, which
        are stacked in natural order (``frame2`` before ``frame10``).
    channel : int, optional
        Channel to read from multi-channel sources (the ``C`` axis, or the RGB sample axis).

    Returns
    -------
    frames : numpy.ndarray
        ``(T, Y, X)`` in the source dtype; a single 2-D image gives ``T = 1``. Other
        non-spatial axes (Z, generic pages) are folded into ``T``.
    meta : dict
        ``format`` (``"oib"``, ``"oif"``, ``"ome-tiff"``, ``"tiff"``, ``"svs"``, ``"png"``, ``"npy"`` or ``"glob"``),
        ``path``, ``pixel_size_um`` (``[y, x]`` or None when the file does not say),
        ``channels``, ``significant_bits`` (int or None), ``axes`` (source axes),
        ``shape`` and ``dtype`` of ``frames``, plus format specific entries such as
        ``scan_direction``, ``zoom``, ``objective`` and ``channel_names`` for Olympus files.
        All values are JSON serialisable.

    Raises
    ------
    InputError
        When the file is missing, unreadable, truncated, of unknown format, or ``channel``
        is out of range. :class:`fastscan.io.memory.MemoryLimitError` (an ``InputError``) when
        the array the header declares would not fit the memory limit
        (:func:`fastscan.io.memory.memory_limit`); nothing is read then.
    """
    return _read_series(path, channel=channel, role=_SERIES)


def _read_series(path: PathLike, *, channel: int, role: _Role) -> tuple[np.ndarray, dict[str, Any]]:
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise InputError(f"{path}: channel must be an integer, got {channel!r}")
    if _is_glob(path):
        frames, meta = _read_glob(os.fspath(path), channel=int(channel), role=role)
    else:
        frames, meta = _read_file(Path(path), channel=int(channel), role=role)
    if frames.size == 0:
        raise InputError(f"{path}: image is empty (shape {frames.shape})")
    meta.setdefault("pixel_size_um", None)
    meta.setdefault("significant_bits", None)
    meta["shape"] = list(frames.shape)
    meta["dtype"] = str(frames.dtype)
    return frames, jsonable(meta)


def read_image(path: PathLike, *, channel: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a 2-D HR target as float32, averaging stacks.

    Parameters
    ----------
    path : str or os.PathLike
        Any source :func:`read_series` accepts.
    channel : int, optional
        Channel to read from multi-channel sources.

    Returns
    -------
    image : numpy.ndarray
        ``(Y, X)`` float32; the mean over frames when the source holds several
        (repeated HR scans, or a Z/T stack).
    meta : dict
        The :func:`read_series` metadata (``shape`` and ``dtype`` describe the source
        series) plus ``frames_averaged``.

    Raises
    ------
    InputError
        As :func:`read_series`; the memory check also counts the float planes of the mean.
    """
    return _read_image(path, channel=channel, role=_IMAGE)


def _read_image(path: PathLike, *, channel: int, role: _Role) -> tuple[np.ndarray, dict[str, Any]]:
    frames, meta = _read_series(path, channel=channel, role=role)
    # Accumulate in float64 so long uint16 stacks average without rounding drift.
    image = frames.mean(axis=0, dtype=np.float64).astype(np.float32)
    meta["frames_averaged"] = int(frames.shape[0])
    return image, meta


def read_header(path: PathLike) -> dict[str, Any]:
    """What one OIB/OIF/TIFF/PNG/NPY file says about its acquisition, without decoding pixel data.

    Parameters
    ----------
    path : str or os.PathLike
        An Olympus ``.oib``/``.oif`` file, a TIFF (OME, ImageJ or plain), a PNG or an ``.npy``. Globs are
        not accepted: each file describes itself.

    Returns
    -------
    header : dict
        ``path``, ``format``, ``axes``, ``shape`` and ``dtype`` (declared), ``channels``,
        ``frames`` (every axis but channel, Y and X), ``size_yx``, ``pixel_size_um``
        (``[y, x]``), ``significant_bits``, and where the file records them, else None:
        ``zoom`` (Olympus ``ZoomValue``), ``acquired`` (ISO 8601: Olympus
        ``ImageCaputreDate``, OME ``AcquisitionDate``, else the TIFF ``DateTime`` tag),
        ``stage_um`` (``[x, y]``: OME ``Plane`` ``PositionX/Y``, else ``StageLabel``),
        ``focus_um`` (Olympus Z axis ``AbsolutePosition``, OME ``PositionZ``),
        ``scan_direction`` (Olympus ``ScanDirection``), ``frame_interval_s`` (OME
        ``TimeIncrement``, ImageJ ``finterval``, Olympus T axis), ``instrument`` (Olympus
        ``SystemName``). ``sources``
        maps each of those that was found to the field it came from. A PNG records only its
        size, pixel size (``pHYs``) and significant bits (``sBIT``, as recorded); an ``.npy``
        only its shape and dtype.

    Raises
    ------
    InputError
        When the file is missing, not an image of these formats, truncated, or its header
        cannot be parsed.
    """
    if _is_glob(path):
        raise InputError(f"{path}: is a pattern; headers are read file by file")
    path = Path(path)
    fmt = _detect_format(path)
    header: dict[str, Any] = {
        "path": os.fspath(path),
        "format": fmt,
        "zoom": None,
        "acquired": None,
        "stage_um": None,
        "focus_um": None,
        "scan_direction": None,
        "frame_interval_s": None,
        "instrument": None,
        "sources": {},
    }
    try:
        if fmt == "tiff":
            declared, meta = _read_tiff_header(path, header)
        elif fmt == "png":
            declared, meta = _read_png_header(path)
        elif fmt == "npy":
            declared, meta = _read_npy_header(path)
        else:
            declared, meta = _read_olympus_header(path, fmt, header)
    except InputError:
        raise
    except (struct.error, EOFError) as exc:
        raise _truncated_olympus(path, fmt, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # tifffile and oiffile raise many unrelated types
        raise InputError(f"{path}: cannot read the {fmt.upper()} header ({type(exc).__name__}: {exc}); the file may be truncated or corrupt") from exc
    axes, shape = declared.axes, declared.shape
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: no Y and X axes in the image (axes {axes!r}, shape {list(shape)})")
    header.update(
        axes=axes,
        shape=list(shape),
        dtype=str(declared.dtype),
        channels=declared.channels,
        frames=_declared_frames(declared),
        size_yx=[shape[axes.index("Y")], shape[axes.index("X")]],
        pixel_size_um=meta.get("pixel_size_um"),
        significant_bits=meta.get("significant_bits"),
    )
    if header["pixel_size_um"] is not None:
        header["sources"]["pixel_size_um"] = {
            "oib": "Olympus Reference Image Parameter / axis calibration",
            "oif": "Olympus Reference Image Parameter / axis calibration",
            "ome-tiff": "OME Pixels/PhysicalSizeX,Y",
            "imagej-tiff": "TIFF resolution tags in the ImageJ unit",
            "png": "PNG pHYs chunk",
        }.get(header["format"], "TIFF resolution tags")
    return jsonable(header)
