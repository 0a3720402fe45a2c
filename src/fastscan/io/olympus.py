"""Olympus OIB/OIF files: their settings, the OLE sector check of an OIB, and reading their pixels.

An OIF is an INI settings file with a folder of TIFFs; an OIB packs both into a Microsoft
OLE compound file. ``oiffile`` parses them; this module knows which Olympus keys hold the
pixel size, scan settings and acquisition header, and refuses a truncated OIB before
``oiffile`` fails inside it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.io.declared import _SERIES, _declare, _Declared, _guard, _Role, _select_channel
from fastscan.io.errors import InputError
from fastscan.io.metadata import _iso_time, _length_um, _unit_to_um


def _olympus_pixel_size(main: Mapping[str, Any]) -> list[float] | None:
    ref = main.get("Reference Image Parameter", {}) or {}
    sizes: list[float] = []
    for value_key, unit_key in (
        ("HeightConvertValue", "HeightUnit"),
        ("WidthConvertValue", "WidthUnit"),
    ):
        value, factor = ref.get(value_key), _unit_to_um(ref.get(unit_key))
        if value is None or factor is None or not float(value) > 0:
            sizes = []
            break
        sizes.append(float(value) * factor)
    if sizes:
        return sizes
    # Older files only describe the scan axes: EndPosition spans the centres of the first
    # and last pixel, hence MaxSize - 1 intervals (this reproduces the convert values).
    for section in ("Axis 1 Parameters Common", "Axis 0 Parameters Common"):
        axis = main.get(section, {}) or {}
        n, factor = axis.get("MaxSize"), _unit_to_um(axis.get("PixUnit", axis.get("UnitName")))
        start, end = axis.get("StartPosition"), axis.get("EndPosition")
        if not n or n < 2 or factor is None or start is None or end is None:
            return None
        sizes.append(abs(float(end) - float(start)) / (int(n) - 1) * factor)
    return sizes if all(s > 0 for s in sizes) else None


def _olympus_metadata(main: Mapping[str, Any], n_channels: int) -> dict[str, Any]:
    ref = main.get("Reference Image Parameter", {}) or {}
    acq = main.get("Acquisition Parameters Common", {}) or {}
    meta: dict[str, Any] = {
        "pixel_size_um": _olympus_pixel_size(main),
        "significant_bits": int(ref["ValidBitCounts"]) if ref.get("ValidBitCounts") else None,
        "scan_direction": acq.get("ScanDirection"),
        "scan_mode": acq.get("ScanMode"),
        "zoom": acq.get("ZoomValue"),
        "acquisition_date": acq.get("ImageCaputreDate"),  # sic, Olympus spelling
        "instrument": (main.get("Version Info", {}) or {}).get("SystemName"),
        "user_comment": ((main.get("File Info", {}) or {}).get("UserComment") or "").strip() or None,
    }
    names = []
    for index in range(1, n_channels + 1):
        section = main.get(f"Channel {index} Parameters", {}) or {}
        names.append(section.get("CH Name"))
    meta["channel_names"] = names if any(names) else None
    # FV1000 files often lack the objective; FV10i/FV3000 store it under varying keys.
    objective = None
    for section in main.values():
        if isinstance(section, Mapping):
            for key, value in section.items():
                if "objective" in str(key).lower() and value not in (None, ""):
                    objective = value
                    break
        if objective is not None:
            break
    meta["objective"] = objective
    return meta


# Sector numbers above this are markers (free, end of chain, FAT sector) in an OLE FAT.
_OLE_MAXREGSECT = 0xFFFFFFFA
_OLE_FREESECT = 0xFFFFFFFF


def _ole_sector(fh: Any, secid: int, sec_size: int) -> np.ndarray | None:
    """Sector ``secid`` as little-endian uint32 entries, None when the file ends before it."""
    fh.seek((secid + 1) * sec_size)  # the header fills the place of sector -1
    block = fh.read(sec_size)
    return np.frombuffer(block, "<u4") if len(block) == sec_size else None


def _ole_fat_sectors(fh: Any, head: bytes, sec_size: int, size: int) -> tuple[list[int], int]:
    """Where the FAT sectors lie (header DIFAT, then its chain), and the bytes read so far need."""
    (n_fat,) = struct.unpack_from("<I", head, 0x2C)
    next_id, n_difat = struct.unpack_from("<II", head, 0x44)
    fat_ids = list(struct.unpack_from("<109I", head, 0x4C))
    for _ in range(min(n_difat, size // sec_size + 1)):  # a corrupt count cannot loop forever
        if next_id > _OLE_MAXREGSECT:
            break
        block = _ole_sector(fh, next_id, sec_size)
        if block is None:
            return [], (next_id + 2) * sec_size
        fat_ids.extend(int(v) for v in block[:-1])
        next_id = int(block[-1])
    return fat_ids[:n_fat], sec_size


def _ole_extent(path: Path) -> int:
    """Bytes an OLE compound file (an OIB) must have: through its last allocated sector.

    An OIB is a Microsoft compound file: a header, then sectors that the file allocation
    table (FAT) marks as in use. A copy cut short still lists the lost sectors; oiffile then
    fails deep inside (``struct.error: unpack requires a buffer of 4096 bytes``) or reads
    streams short. Returns 0 for sector sizes this check does not know.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(512)
        if len(head) < 512:
            return 512
        (shift,) = struct.unpack_from("<H", head, 0x1E)
        if shift not in (9, 12):  # 512- and 4096-byte sectors (versions 3 and 4)
            return 0
        sec_size = 1 << shift
        fat_ids, needed = _ole_fat_sectors(fh, head, sec_size, size)
        per_sector = sec_size // 4
        for k, secid in enumerate(fat_ids):
            if secid > _OLE_MAXREGSECT:
                continue
            block = _ole_sector(fh, secid, sec_size)
            if block is None:
                return max(needed, (secid + 2) * sec_size)
            used = np.flatnonzero(block != _OLE_FREESECT)
            if used.size:
                needed = max(needed, (k * per_sector + int(used[-1]) + 2) * sec_size)
    return needed


def _truncated_olympus(path: Path, fmt: str, detail: str) -> InputError:
    size = path.stat().st_size if path.is_file() else 0
    return InputError(f"{path}: the Olympus {fmt.upper()} file is truncated or damaged ({size} bytes; {detail}) — copy it again from the microscope PC")


def _check_oib_complete(path: Path) -> None:
    """Raise when an OIB is shorter than its own sector table says."""
    try:
        needed = _ole_extent(path)
    except (OSError, struct.error):
        return  # unreadable headers are reported by oiffile below
    if needed > path.stat().st_size:
        raise _truncated_olympus(path, "oib", f"its header and sector table call for {needed}")


def _load_olympus(path: Path, fmt: str, *, role: _Role = _SERIES) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Raw array, its axes and the metadata of an OIB/OIF file."""
    import oiffile

    if fmt == "oib":
        _check_oib_complete(path)
    try:
        with oiffile.OifFile(path) as oif:
            axes = str(oif.axes).upper()
            # The declared shape comes from the settings; refuse before the TIFFs are decoded.
            _guard(path, _declare(oif.shape, oif.dtype, axes), **role._asdict())
            data = np.asarray(oif.asarray())
            n_c = int(data.shape[axes.index("C")]) if "C" in axes else 1
            meta = _olympus_metadata(oif.mainfile, n_c)
    except InputError:
        raise
    except (struct.error, EOFError) as exc:  # a sector or stream ends before its data
        raise _truncated_olympus(path, fmt, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # oiffile surfaces OLE, INI and TIFF errors with varied types
        raise InputError(f"{path}: cannot read Olympus {fmt.upper()} file ({type(exc).__name__}: {exc})") from exc
    if len(axes) != data.ndim:
        raise InputError(f"{path}: axes {axes!r} do not match the data shape {data.shape}")
    meta = {
        "format": fmt,
        "path": os.fspath(path),
        "axes": axes,
        "source_shape": list(data.shape),
        **meta,
    }
    return data, axes, meta


def _read_olympus(path: Path, fmt: str, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    data, axes, meta = _load_olympus(path, fmt, role=role)
    frames, meta["channels"] = _select_channel(data, axes, channel=channel, path=path)
    return frames, meta


def _read_olympus_header(path: Path, fmt: str, header: dict[str, Any]) -> tuple[_Declared, dict[str, Any]]:
    """Fill ``header`` from an OIB/OIF's settings; return what it declares and its metadata.

    Errors other than :class:`InputError` are left to :func:`fastscan.io.readers.read_header`,
    which words them for both formats.
    """
    import oiffile

    if fmt == "oib":
        _check_oib_complete(path)
    with oiffile.OifFile(path) as oif:
        declared = _declare(oif.shape, oif.dtype, str(oif.axes))
        meta = _olympus_metadata(oif.mainfile, declared.channels)
        _olympus_header(oif.mainfile, header)
        header["instrument"] = meta.get("instrument")
    return declared, meta


def _olympus_header(main: Mapping[str, Any], header: dict[str, Any]) -> None:
    """Zoom, acquisition time, scan direction, focus position and frame interval of an OIB/OIF."""
    acq = main.get("Acquisition Parameters Common", {}) or {}
    sources = header["sources"]
    if acq.get("ZoomValue") not in (None, ""):
        header["zoom"] = float(acq["ZoomValue"])
        sources["zoom"] = "Acquisition Parameters Common/ZoomValue"
    when = _iso_time(acq.get("ImageCaputreDate"), fmt="%Y-%m-%d %H:%M:%S")  # sic, Olympus spelling
    if when is not None:
        millis = acq.get("ImageCaputreDate+MilliSec")
        if isinstance(millis, int) and 0 <= millis < 1000:
            when = f"{when}.{millis:03d}"
        header["acquired"] = when
        sources["acquired"] = "Acquisition Parameters Common/ImageCaputreDate"
    if acq.get("ScanDirection"):
        header["scan_direction"] = str(acq["ScanDirection"])
        sources["scan_direction"] = "Acquisition Parameters Common/ScanDirection"
    for name, section in main.items():
        if not (isinstance(section, Mapping) and str(name).startswith("Axis ")):
            continue
        code, unit = section.get("AxisCode"), section.get("PixUnit", section.get("UnitName"))
        if code == "Z" and section.get("AbsolutePosition") is not None:
            # The focus drive's position when the image was taken (FV1000: nm).
            header["focus_um"] = _length_um(section["AbsolutePosition"], unit, default_unit="")
            if header["focus_um"] is not None:
                sources["focus_um"] = f"{name}/AbsolutePosition"
        elif code == "T" and (section.get("MaxSize") or 0) > 1:
            seconds = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "µs": 1e-6, "min": 60.0}.get(str(unit))
            start, end = section.get("StartPosition"), section.get("EndPosition")
            if seconds and start is not None and end is not None:
                header["frame_interval_s"] = abs(float(end) - float(start)) / (int(section["MaxSize"]) - 1) * seconds
                sources["frame_interval_s"] = f"{name}/StartPosition,EndPosition,MaxSize"
