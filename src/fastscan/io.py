"""Readers for raw microscopy files, ingestion into the canonical per-FOV store, lazy slides.

Three layers live here:

* :func:`read_series` and :func:`read_image` turn a raw acquisition (Olympus OIB/OIF,
  multi-page TIFF, OME-TIFF, ImageJ TIFF, or a glob of single-frame files) into a
  ``(T, Y, X)`` series or a 2-D HR target together with the metadata that matters
  downstream (pixel size, channel count, significant bits, scan settings).
* :func:`ingest_fov` validates one LR/HR pair and writes the canonical per-FOV Zarr v3
  store described in ``docs/architecture.md``; :func:`read_fov` reads it back.
* :func:`open_slide` wraps a whole slide (TIFF/OME-TIFF/SVS, OIB/OIF, Zarr/OME-Zarr) as a
  lazily read 2-D dask array so that slides larger than memory can be restored tile by tile.

Every problem with an input file raises :class:`InputError`, whose message names the file.
Input files are only ever opened for reading.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import logging
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "InputError",
    "file_sha256",
    "ingest_fov",
    "open_slide",
    "read_fov",
    "read_header",
    "read_image",
    "read_series",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf2", ".tf8", ".svs", ".ndpi", ".scn")
_GLOB_CHARS = re.compile(r"[*?\[]")

# Length units seen in OME, ImageJ, NGFF and Olympus metadata, as micrometres per unit.
_UM_PER_UNIT: dict[str, float] = {
    "pm": 1e-6,
    "picometer": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "um": 1.0,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek small mu U+03BC
    "\\u00b5m": 1.0,  # ImageJ writes the escape sequence literally
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
}

# Pixel sizes above this many micrometres from an inch-based TIFF resolution are the
# 72/96/300 dpi display defaults many programs write, not a physical calibration.
_MAX_INCH_PIXEL_UM = 10.0

# Peak memory of reading a file whole, as a multiple of the array its header declares (all
# channels, decoded), measured as the rise of ru_maxrss over 50-540 MB sources: TYX uint8,
# uint16, float32 and zlib-compressed stacks and a glob of 64 frames (stacked into one
# preallocated array) peak at 1.01-1.04x; a TCYX stack with 2 channels at 1.51x and an RGB
# stack at 1.34x, because np.take copies the chosen channel while the decoded array is still
# alive: 1 + 1/C for C channels. The 15 % on top covers allocator slack, tifffile's decode
# buffers and zarr's encode buffers (ingesting 134 MB uint16 frames peaked 2.6 % below the
# estimate, the closest of all cases).
_READ_HEADROOM = 1.15
# An HR target is averaged into a float64 plane (8 bytes per pixel) and cast to float32 (4);
# a single 8192 x 8192 uint8 plane peaked at 13.0 bytes per pixel: 1 raw + these 12. Writing
# it to the store later needs no more (the float32 plane, its copy and compressed output).
_HR_PLANE_BYTES = 12


class InputError(ValueError):
    """An input file or argument cannot be used; the message names the file and the problem."""


class _Role(NamedTuple):
    """What a file is read for: named in memory refusals, and the float planes made from it."""

    what: str
    plane_bytes: int = 0


_SERIES = _Role("image series")
_IMAGE = _Role("image", _HR_PLANE_BYTES)


class _Declared(NamedTuple):
    """What a file's header declares, read without touching pixel data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    channels: int
    #: ``"S"`` for RGB(A) samples, ``"C"`` for a channel axis, None for one channel.
    channel_axis: str | None = None


# --------------------------------------------------------------------------------------------
# small helpers


def _unit_to_um(unit: Any) -> float | None:
    """Return micrometres per ``unit`` or None when the unit is not a known length."""
    if unit is None:
        return None
    key = str(unit).strip().lower()
    return _UM_PER_UNIT.get(key)


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars, tuples and paths so the value can be stored in Zarr attributes."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/inf; a missing value is the honest equivalent.
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _is_glob(path: PathLike) -> bool:
    text = os.fspath(path)
    return bool(_GLOB_CHARS.search(text)) and not Path(text).exists()


def _detect_format(path: Path) -> str:
    """Return ``"oib"``, ``"oif"`` or ``"tiff"`` from the name and the first bytes."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file (OIB/OIF/TIFF)")
    suffix = path.suffix.lower()
    if suffix == ".oif":
        return "oif"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head == _OLE_MAGIC:
        return "oib"
    if suffix == ".oib" or suffix in _TIFF_SUFFIXES:
        raise InputError(f"{path}: not a valid {suffix[1:].upper()} file (unexpected header bytes {head[:4]!r}); the file may be truncated or corrupt")
    raise InputError(f"{path}: unknown image format; supported are OIB, OIF, TIFF/OME-TIFF/ImageJ TIFF/SVS or a glob of single-frame files")


def _select_channel(data: np.ndarray, axes: str, *, channel: int, path: PathLike) -> tuple[np.ndarray, int]:
    """Pick ``channel`` and fold every remaining non-spatial axis into frames.

    Returns a ``(T, Y, X)`` array and the number of channels the source has.
    """
    axes = axes.upper()
    if data.ndim != len(axes):
        raise InputError(f"{path}: axes {axes!r} do not match the data shape {data.shape}")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: no Y and X axes in the image (axes {axes!r})")
    if "C" in axes and "S" in axes and data.shape[axes.index("S")] > 1:
        raise InputError(f"{path}: has both a channel axis and RGB samples (axes {axes!r}, shape {data.shape}); export one channel as a grayscale image")
    chan_axis = "C" if "C" in axes else ("S" if "S" in axes else None)
    n_channels = int(data.shape[axes.index(chan_axis)]) if chan_axis else 1
    if not 0 <= channel < n_channels:
        raise InputError(f"{path}: has {n_channels} channel{'s' if n_channels != 1 else ''} (indices 0..{n_channels - 1}), channel {channel} was asked for")
    if chan_axis is not None:
        data = np.take(data, channel, axis=axes.index(chan_axis))
        axes = axes.replace(chan_axis, "")
    if "S" in axes:  # singleton sample axis next to a channel axis
        data = np.take(data, 0, axis=axes.index("S"))
        axes = axes.replace("S", "")
    frame_axes = [a for a in axes if a not in "YX"]
    order = [axes.index(a) for a in frame_axes] + [axes.index("Y"), axes.index("X")]
    data = np.transpose(data, order)
    non_singleton = [a for a, n in zip(frame_axes, data.shape[:-2], strict=True) if n > 1]
    if len(non_singleton) > 1:
        logger.warning(
            "%s: axes %s are all longer than one; they are folded into one frame axis",
            path,
            "".join(non_singleton),
        )
    frames = data.reshape((-1, *data.shape[-2:]))
    return frames, n_channels


def _declare(shape: Sequence[int], dtype: Any, axes: str) -> _Declared:
    """Describe a declared array; the channel axis is chosen as :func:`_select_channel` does."""
    axes = axes.upper()
    shape = tuple(int(n) for n in shape)
    chan_axis = "C" if "C" in axes else ("S" if "S" in axes else None)
    n_channels = shape[axes.index(chan_axis)] if chan_axis and len(axes) == len(shape) else 1
    multi = chan_axis if n_channels > 1 else None
    return _Declared(shape, np.dtype(dtype), axes, n_channels, multi)


def _read_need(declared: _Declared, *, plane_bytes: int = 0) -> tuple[float, int]:
    """The working factor and the extra bytes of reading ``declared`` whole.

    ``plane_bytes`` are bytes per pixel of one ``(Y, X)`` plane made on top (float planes
    of an HR target).
    """
    factor = 1.0 + (1.0 / declared.channels if declared.channels > 1 else 0.0)
    axes, shape = declared.axes, declared.shape
    plane = shape[axes.index("Y")] * shape[axes.index("X")] if {"Y", "X"} <= set(axes) else 0
    return _READ_HEADROOM * factor, int(_READ_HEADROOM * plane * plane_bytes)


def _guard(path: PathLike, declared: _Declared, *, what: str, plane_bytes: int = 0, held_bytes: int = 0) -> int:
    """Refuse before allocating when ``declared`` does not fit the memory limit.

    Returns the bytes the read is expected to need; ``held_bytes`` is memory another file
    already holds while this one is read.
    """
    from fastscan.memory import check_fits

    factor, extra = _read_need(declared, plane_bytes=plane_bytes)
    shape, dtype = declared.shape, declared.dtype
    return check_fits(path, shape, dtype, what=what, factor=factor, extra_bytes=extra + held_bytes)


# --------------------------------------------------------------------------------------------
# Olympus OIB / OIF


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


# --------------------------------------------------------------------------------------------
# TIFF family


class _TiffStructureErrors(logging.Handler):
    """Collect tifffile's log records about a broken IFD chain.

    tifffile logs a truncated or corrupt page chain and carries on with the pages it
    found, which would silently shorten a series; these records turn that into an error.
    """

    _PATTERN = re.compile(r"page offset|offset to page|tag list of page|circular reference")

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self._PATTERN.search(message):
            self.messages.append(message)

    def __enter__(self) -> _TiffStructureErrors:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("tifffile").removeHandler(self)

    def check(self, path: PathLike) -> None:
        if self.messages:
            raise InputError(f"{path}: TIFF page structure is broken ({self.messages[0]}); the file is truncated or corrupt")


# tifffile series kinds of whole-slide formats: their further series are thumbnails, labels and
# macro images of the same slide, not frames.
_SLIDE_SERIES_KINDS = frozenset({"svs", "ndpi", "scn", "bif", "philips", "qpi"})


def _check_one_stack(tf: Any, path: Path) -> None:
    """Raise when the file holds frames outside its first image series.

    tifffile splits pages of different sizes (or written one by one without a shared
    description) into separate series; reading only the first would silently drop frames.
    """
    first = tf.series[0]
    if first.kind in _SLIDE_SERIES_KINDS:
        return
    series = [first] + [s for s in tf.series[1:] if not s.keyframe.is_reduced]
    if len(series) == 1:
        return
    counts: dict[tuple[int, ...], int] = {}
    for s in series:
        counts[tuple(s.shape)] = counts.get(tuple(s.shape), 0) + 1
    shapes = ", ".join(f"{list(shape)} x{n}" for shape, n in counts.items())
    raise InputError(
        f"{path}: holds {len(series)} separate image series (shapes {shapes}); frames of "
        "different sizes, or pages saved one by one, cannot be read as one stack. Save the "
        "frames as one multi-page stack of equal frames, or as single-frame files read with a glob"
    )


def _tiff_format(tf: Any) -> str:
    if tf.is_svs:
        return "svs"
    if tf.is_ome:
        return "ome-tiff"
    return "tiff"


def _check_tiff_complete(series: Any, path: Path) -> None:
    """Raise when image data lie beyond the end of their file.

    tifffile reads a truncated strip as far as it goes, and truncation inside trailing
    metadata only logs, so the offsets are checked up front.
    """
    for page in series.pages:
        if page is None:
            raise InputError(f"{path}: TIFF pages are missing; the file is truncated or corrupt")
        # Multi-file OME-TIFF series keep pages in sibling files, each with its own size.
        handle = page.parent.filehandle
        offsets, counts = page.dataoffsets, page.databytecounts
        ends = [o + c for o, c in zip(offsets, counts, strict=True) if c]
        if ends and max(ends) > handle.size:
            raise InputError(f"{handle.path}: image data extend beyond the end of the file ({handle.size} bytes); the file is truncated or corrupt")


def _ome_metadata(tf: Any, series_index: int = 0) -> dict[str, Any]:
    import tifffile

    meta: dict[str, Any] = {}
    try:
        ome = tifffile.xml2dict(tf.ome_metadata).get("OME", {})
    except Exception as exc:  # malformed XML should not hide readable pixels
        logger.warning("%s: OME-XML cannot be parsed (%s); pixel size unknown", tf.filename, exc)
        return meta
    images = ome.get("Image", [])
    images = images if isinstance(images, list) else [images]
    if not images:
        return meta
    pixels = images[min(series_index, len(images) - 1)].get("Pixels", {}) or {}
    size_x, size_y = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
    # OME's default unit is the micrometre
    fx = _unit_to_um(pixels.get("PhysicalSizeXUnit", "µm"))
    fy = _unit_to_um(pixels.get("PhysicalSizeYUnit", "µm"))
    if size_x is not None and size_y is None:
        size_y, fy = size_x, fx  # square pixels when only X is given
    if size_x is not None and fx is not None and fy is not None:
        meta["pixel_size_um"] = [float(size_y) * fy, float(size_x) * fx]
    if pixels.get("SignificantBits"):
        meta["significant_bits"] = int(pixels["SignificantBits"])
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = [c.get("Name") for c in channels if isinstance(c, Mapping)]
    if any(names):
        meta["channel_names"] = names
    return meta


def _resolution_pixel_size(page: Any, unit_um: float | None) -> list[float] | None:
    tags = page.tags
    xres, yres = tags.get("XResolution"), tags.get("YResolution")
    if xres is None or yres is None or unit_um is None:
        return None
    sizes = []
    for tag in (yres, xres):
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num or not den:
            return None
        sizes.append(unit_um * den / num)
    return sizes


def _tiff_metadata(tf: Any, path: Path) -> dict[str, Any]:
    """Pixel size and friends from OME-XML, the SVS description, ImageJ or TIFF tags."""
    meta: dict[str, Any] = {"pixel_size_um": None, "significant_bits": None}
    page = tf.pages.first
    if tf.is_ome:
        meta.update(_ome_metadata(tf))
    elif tf.is_svs:
        match = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", page.description or "")
        if match:
            mpp = float(match.group(1))
            meta["pixel_size_um"] = [mpp, mpp]
        match = re.search(r"AppMag\s*=\s*([0-9.]+)", page.description or "")
        if match:
            meta["magnification"] = float(match.group(1))
    elif tf.is_imagej:
        ij = tf.imagej_metadata or {}
        meta["pixel_size_um"] = _resolution_pixel_size(page, _unit_to_um(ij.get("unit")))
        if "spacing" in ij:
            meta["z_spacing"] = ij["spacing"]
    if meta["pixel_size_um"] is None:
        resunit = page.tags.get("ResolutionUnit")
        unit = int(resunit.value) if resunit is not None else 2  # TIFF default is the inch
        if unit == 3:
            meta["pixel_size_um"] = _resolution_pixel_size(page, 1e4)
        elif unit == 2 and page.tags.get("XResolution") is not None:
            sizes = _resolution_pixel_size(page, 25400.0)
            if sizes is not None and max(sizes) <= _MAX_INCH_PIXEL_UM:
                meta["pixel_size_um"] = sizes
            elif sizes is not None:
                logger.debug("%s: ignoring display resolution of %.1f um/px", path, max(sizes))
    return meta


def _tiff_series(tf: Any, path: Path, broken: _TiffStructureErrors) -> Any:
    """The image series of an open TIFF, after every check that needs no pixel data."""
    if not tf.series:
        raise InputError(f"{path}: TIFF file contains no image series; it may be truncated or corrupt")
    series = tf.series[0]
    broken.check(path)
    _check_one_stack(tf, path)
    _check_tiff_complete(series, path)
    return series


def _read_tiff(path: Path, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    try:
        with _TiffStructureErrors() as broken, tifffile.TiffFile(path) as tf:
            series = _tiff_series(tf, path, broken)
            axes = str(series.axes)
            # The header alone sets the allocation: refuse before decoding what cannot fit.
            _guard(path, _declare(series.shape, series.dtype, axes), **role._asdict())
            data = np.asarray(series.asarray())
            broken.check(path)
            fmt = _tiff_format(tf)
            extra = _tiff_metadata(tf, path)
            if tf.is_imagej:
                extra["imagej"] = True
    except InputError:
        raise
    except Exception as exc:  # tifffile, imagecodecs and struct raise many unrelated types
        raise InputError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc}); the file may be truncated or corrupt") from exc
    frames, n_channels = _select_channel(data, axes, channel=channel, path=path)
    meta = {
        "format": fmt,
        "path": os.fspath(path),
        "axes": axes,
        "source_shape": list(data.shape),
        "channels": n_channels,
        **extra,
    }
    return frames, meta


def _read_file(path: Path, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    fmt = _detect_format(path)
    if fmt == "tiff":
        return _read_tiff(path, channel=channel, role=role)
    return _read_olympus(path, fmt, channel=channel, role=role)


def _probe_file(path: Path) -> _Declared | None:
    """Shape, dtype and channels one file declares, without reading its pixels.

    The structural checks of the read run here too, so a broken file is refused for what
    it is before its (unreliable) declared shape is judged. None when the header cannot be
    parsed: the full read that follows reports why.
    """
    fmt = _detect_format(path)
    try:
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


# --------------------------------------------------------------------------------------------
# acquisition metadata from headers only (for pairing files into a sample sheet)


def _iso_time(text: Any, *, fmt: str | None = None) -> str | None:
    """ISO 8601 form of a date-time text (OME, Olympus ``YYYY-MM-DD hh:mm:ss``, TIFF
    ``YYYY:MM:DD hh:mm:ss``); None when it does not parse."""
    from datetime import datetime

    if text in (None, ""):
        return None
    text = str(text).strip()
    try:
        if fmt is not None:
            return datetime.strptime(text, fmt).isoformat()
        return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        return None


def _length_um(value: Any, unit: Any, *, default_unit: str = "µm") -> float | None:
    """A length with its unit in micrometres; None for a missing value or an unknown unit."""
    factor = _unit_to_um(default_unit if unit in (None, "") else unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * factor if factor is not None and math.isfinite(number) else None


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


def _ome_header(tf: Any, header: dict[str, Any]) -> None:
    """Acquisition date, stage position and frame interval from OME-XML."""
    import tifffile

    try:
        ome = tifffile.xml2dict(tf.ome_metadata).get("OME", {})
    except Exception:  # already warned about by the pixel-size reader
        return
    images = ome.get("Image", [])
    images = images if isinstance(images, list) else [images]
    if not images:
        return
    image, sources = images[0], header["sources"]
    when = _iso_time(image.get("AcquisitionDate"))
    if when is not None:
        header["acquired"], sources["acquired"] = when, "OME Image/AcquisitionDate"
    pixels = image.get("Pixels", {}) or {}
    if pixels.get("TimeIncrement") is not None:
        seconds = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "min": 60.0}.get(str(pixels.get("TimeIncrementUnit", "s")))
        if seconds:
            header["frame_interval_s"] = float(pixels["TimeIncrement"]) * seconds
            sources["frame_interval_s"] = "OME Pixels/TimeIncrement"
    planes = pixels.get("Plane", [])
    plane = (planes[0] if isinstance(planes, list) else planes) if planes else {}
    stage = image.get("StageLabel") or {}
    # OME before 2015 had implicit micrometres; "reference frame" (the 2016 default) has no scale.
    for where, node, key in (("OME Plane/Position", plane, "Position"), ("OME StageLabel/", stage, "")):
        x = _length_um(node.get(f"{key}X"), node.get(f"{key}XUnit"))
        y = _length_um(node.get(f"{key}Y"), node.get(f"{key}YUnit"))
        if x is not None and y is not None:
            header["stage_um"], sources["stage_um"] = [x, y], f"{where}X,Y"
            z = _length_um(node.get(f"{key}Z"), node.get(f"{key}ZUnit"))
            if z is not None:
                header["focus_um"], sources["focus_um"] = z, f"{where}Z"
            break


def read_header(path: PathLike) -> dict[str, Any]:
    """What one OIB/OIF/TIFF file says about its acquisition, without decoding pixel data.

    Parameters
    ----------
    path : str or os.PathLike
        An Olympus ``.oib``/``.oif`` file or a TIFF (OME, ImageJ or plain). Globs are not
        accepted: each file describes itself.

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
        maps each of those that was found to the field it came from.

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
            import tifffile

            with _TiffStructureErrors() as broken, tifffile.TiffFile(path) as tf:
                series = _tiff_series(tf, path, broken)
                declared = _declare(series.shape, series.dtype, str(series.axes))
                header["format"] = "imagej-tiff" if tf.is_imagej else _tiff_format(tf)
                meta = _tiff_metadata(tf, path)
                if tf.is_ome:
                    _ome_header(tf, header)
                if tf.is_imagej and (tf.imagej_metadata or {}).get("finterval"):
                    header["frame_interval_s"] = float(tf.imagej_metadata["finterval"])
                    header["sources"]["frame_interval_s"] = "ImageJ finterval"
                stamp = tf.pages.first.tags.get("DateTime")
                if header["acquired"] is None and stamp is not None:
                    header["acquired"] = _iso_time(stamp.value, fmt="%Y:%m:%d %H:%M:%S")
                    if header["acquired"] is not None:
                        header["sources"]["acquired"] = "TIFF DateTime tag"
        else:
            import oiffile

            if fmt == "oib":
                _check_oib_complete(path)
            with oiffile.OifFile(path) as oif:
                declared = _declare(oif.shape, oif.dtype, str(oif.axes))
                meta = _olympus_metadata(oif.mainfile, declared.channels)
                _olympus_header(oif.mainfile, header)
                header["instrument"] = meta.get("instrument")
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
        }.get(header["format"], "TIFF resolution tags")
    return _jsonable(header)


def _glob_files(pattern: str) -> list[Path]:
    files = [Path(p) for p in _glob.glob(pattern) if Path(p).is_file()]
    if not files:
        raise InputError(f"{pattern}: no files match this pattern")
    return sorted(files, key=lambda p: _natural_key(os.fspath(p)))


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


# --------------------------------------------------------------------------------------------
# public readers


def read_series(path: PathLike, *, channel: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a video-rate series as a ``(T, Y, X)`` array.

    Parameters
    ----------
    path : str or os.PathLike
        An Olympus ``.oib``/``.oif`` file, a (multi-page, OME or ImageJ) TIFF, or a glob
        pattern of single-frame files, which are stacked in natural order (``frame2``
        before ``frame10``).
    channel : int, optional
        Channel to read from multi-channel sources (the ``C`` axis, or the RGB sample axis).

    Returns
    -------
    frames : numpy.ndarray
        ``(T, Y, X)`` in the source dtype; a single 2-D image gives ``T = 1``. Other
        non-spatial axes (Z, generic pages) are folded into ``T``.
    meta : dict
        ``format`` (``"oib"``, ``"oif"``, ``"ome-tiff"``, ``"tiff"``, ``"svs"`` or ``"glob"``),
        ``path``, ``pixel_size_um`` (``[y, x]`` or None when the file does not say),
        ``channels``, ``significant_bits`` (int or None), ``axes`` (source axes),
        ``shape`` and ``dtype`` of ``frames``, plus format specific entries such as
        ``scan_direction``, ``zoom``, ``objective`` and ``channel_names`` for Olympus files.
        All values are JSON serialisable.

    Raises
    ------
    InputError
        When the file is missing, unreadable, truncated, of unknown format, or ``channel``
        is out of range. :class:`fastscan.memory.MemoryLimitError` (an ``InputError``) when
        the array the header declares would not fit the memory limit
        (:func:`fastscan.memory.memory_limit`); nothing is read then.
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
    return frames, _jsonable(meta)


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


def file_sha256(path: PathLike, *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks so large files stay out of memory.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.
    chunk_size : int, optional
        Bytes read at a time.

    Returns
    -------
    str
        Hexadecimal digest.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk_size):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read for checksumming ({exc})") from exc
    return digest.hexdigest()


def _source_sha256(path: PathLike, meta: Mapping[str, Any]) -> tuple[str, list[str] | None]:
    """Digest of everything a source consists of.

    A glob or an OIF (a text file plus a companion ``.files`` folder) spans several files;
    their digest is the SHA-256 of a ``sha256sum``-style manifest, so that a change to any
    frame changes it.
    """
    if meta.get("format") == "glob":
        files = [Path(f) for f in meta["files"]]
    elif meta.get("format") == "oif":
        main = Path(path)
        companion = main.with_name(main.name + ".files")
        files = [main]
        if companion.is_dir():
            files += sorted((p for p in companion.rglob("*") if p.is_file()), key=lambda p: os.fspath(p))
    else:
        return file_sha256(path), None
    manifest = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(manifest.encode()).hexdigest(), [os.fspath(f) for f in files]


# --------------------------------------------------------------------------------------------
# ingestion


def _resolve_pixel_size(meta: Mapping[str, Any], explicit: float | None, *, path: PathLike, column: str) -> list[float]:
    """Metadata wins; the sheet value is a fallback for files that carry none."""
    if explicit is not None and (
        isinstance(explicit, bool) or not isinstance(explicit, (int, float, np.number)) or not (math.isfinite(float(explicit)) and float(explicit) > 0)
    ):
        raise InputError(f"{path}: {column} must be a positive number, got {explicit!r}")
    from_meta = meta.get("pixel_size_um")
    if from_meta is not None:
        if explicit is not None:
            worst = max(abs(float(m) - float(explicit)) / float(m) for m in from_meta)
            if worst > 0.01:
                logger.warning(
                    "%s: pixel size in the file %s um differs from %s=%s by %.1f%%; using the file's",
                    path,
                    from_meta,
                    column,
                    explicit,
                    100 * worst,
                )
        return [float(v) for v in from_meta]
    if explicit is None:
        raise InputError(
            f"{path}: the file does not record its pixel size; add a `{column}` column (micrometres per pixel) to the samples sheet or pass it explicitly"
        )
    return [float(explicit), float(explicit)]


def _check_values(data: np.ndarray, path: PathLike, role: str) -> None:
    if np.issubdtype(data.dtype, np.inexact) and not np.isfinite(data).all():
        raise InputError(f"{path}: {role} contains NaN or infinite values")
    if not data.any():
        raise InputError(f"{path}: {role} is all zero; check the channel and the file")


_RGB_NAMES = ("red", "green", "blue", "alpha")


def _channel_legend(n_channels: int, rgb: bool) -> tuple[str, str]:
    """Label and index legend: `` (RGB)``, ``0 = red, 1 = green, 2 = blue``; else ``0..N-1``."""
    if rgb and n_channels in (3, 4):
        label = " (RGB)" if n_channels == 3 else " (RGBA)"
        return label, ", ".join(f"{i} = {name}" for i, name in enumerate(_RGB_NAMES[:n_channels]))
    return "", f"0..{n_channels - 1}"


def _channel_mismatch(lr: PathLike, hr: PathLike, lr_decl: _Declared, hr_decl: _Declared) -> InputError:
    """The error for LR and HR files whose channel counts differ and no channel was given."""
    roles = [("LR series", lr, lr_decl), ("HR target", hr, hr_decl)]
    if hr_decl.channels > lr_decl.channels:
        roles.reverse()
    (role, path, decl), (other_role, other, other_decl) = roles
    label, legend = _channel_legend(decl.channels, decl.channel_axis == "S")
    n_other = other_decl.channels
    both = " (the same index is read from both files)" if n_other > 1 else ""
    return InputError(
        f"{path}: the {role} has {decl.channels} channels{label} but the {other_role} {other} "
        f"has {n_other}; say which {role.split()[0]} channel to use in the sample sheet's "
        f"'channel' column ({legend}){both}"
    )


def _resolve_channels(lr: PathLike, hr: PathLike, lr_decl: _Declared, hr_decl: _Declared, channel: int | None) -> tuple[int, int]:
    """The channel read from the LR series and from the HR target.

    Files with the same number of channels share ``channel`` (0 when not given). When the
    counts differ, reading channel 0 of both would pair, say, a grayscale series with the
    red channel of an RGB target (and a green-LUT target with an all-zero plane), so the
    channel must be given; it applies to the multi-channel file, and the single-channel
    file's only channel 0 is read.
    """
    if lr_decl.channels == hr_decl.channels:
        return (channel or 0), (channel or 0)
    if channel is None:
        raise _channel_mismatch(lr, hr, lr_decl, hr_decl)
    return (channel if lr_decl.channels > 1 else 0), (channel if hr_decl.channels > 1 else 0)


def _check_frame_count(lr: PathLike, n_frames: int) -> None:
    """Refuse an LR series without frames.

    One frame is a valid pair: many paired datasets, and labs that save one fast frame per
    FOV, have exactly one LR frame per HR target, and registration then skips the drift. An
    HR image given as the series by mistake is still refused, by the scale check of the shapes.
    """
    if n_frames < 1:
        raise InputError(f"{lr}: LR series has no frame (an axis of length 0), at least 1 is needed")


def _declared_frames(declared: _Declared) -> int:
    """Frames a declared array folds into (every axis but the channel, Y and X)."""
    skip = {declared.channel_axis, "Y", "X"} | ({"S"} if "S" in declared.axes else set())
    sizes = zip(declared.axes, declared.shape, strict=False)
    return math.prod(n for a, n in sizes if a not in skip)


def _counted(meta: Mapping[str, Any]) -> _Declared:
    """The source array a read reported, for the channel checks."""
    shape, axes = meta.get("source_shape"), meta.get("axes")
    if shape and axes and len(shape) == len(axes):
        return _declare(shape, "u1", str(axes))
    return _Declared((), np.dtype("u1"), "", int(meta.get("channels") or 1))


def _plan_reads(lr: PathLike, hr: PathLike, channel: int | None) -> tuple[int, int]:
    """The channels to read, after refusing what cannot fit, all before any pixel is read.

    The HR target is read while the LR frames are held, so its check counts them too.
    """
    lr_decl, hr_decl = _probe(lr), _probe(hr)
    if lr_decl is None or hr_decl is None:  # the reads below report the unreadable file
        return (channel or 0), (channel or 0)
    # A header declaring more than memory holds comes first: it may be corrupt, and then
    # its frame and channel counts mean nothing either.
    _guard(lr, lr_decl, what="LR series")
    _guard(
        hr,
        hr_decl,
        what="HR target (read while the LR series is in memory)",
        plane_bytes=_HR_PLANE_BYTES,
        held_bytes=_lr_held_bytes(lr_decl, hr_decl),
    )
    # A series without frames is the clearer diagnosis than its channels.
    _check_frame_count(lr, _declared_frames(lr_decl))
    return _resolve_channels(lr, hr, lr_decl, hr_decl, channel)


def _lr_held_bytes(lr_decl: _Declared, hr_decl: _Declared) -> int:
    """Memory besides the HR target's own while the HR is read and the store written.

    The LR frames (one channel) stay in memory throughout. Reading the HR source and
    writing the store do not overlap: once the HR planes are made, zarr encodes up to
    ``async.concurrency`` LR frame chunks at once, each as a copy plus its compressed
    output, which outweighs a small HR source (measured: 1024 x 1024 uint16 frames add
    about 40 MB at the default concurrency of 10).
    """
    import zarr

    frames = max(_declared_frames(lr_decl), 1)
    frame_bytes = math.prod(lr_decl.shape) * lr_decl.dtype.itemsize // lr_decl.channels // frames
    in_flight = min(frames, int(zarr.config.get("async.concurrency") or 10))
    hr_factor, _ = _read_need(hr_decl)
    hr_source = hr_factor * math.prod(hr_decl.shape) * hr_decl.dtype.itemsize
    writing = _READ_HEADROOM * 2 * in_flight * frame_bytes
    return frame_bytes * frames + int(max(0.0, writing - hr_source))


def ingest_fov(
    *,
    lr: PathLike,
    hr: PathLike,
    out: PathLike,
    sample: str,
    session: str,
    fov: str,
    channel: int | None = None,
    lr_pixel_size_um: float | None = None,
    hr_pixel_size_um: float | None = None,
    scale: int = 2,
) -> dict[str, Any]:
    """Validate one LR/HR pair and write the canonical per-FOV Zarr v3 store.

    Parameters
    ----------
    lr : str or os.PathLike
        Video-rate series (anything :func:`read_series` accepts).
    hr : str or os.PathLike
        HR target: a single image, or a stack that is averaged.
    out : str or os.PathLike
        Store to write, e.g. ``results/ingest/{sample}/{session}/{fov}.zarr``. An existing
        store is replaced only once the new one is complete.
    sample, session, fov : str
        Identifiers copied into the attributes.
    channel : int or None, optional
        Channel to read (the sample sheet's ``channel`` column). When both files have the
        same number of channels it is read from both (None reads channel 0). When the
        counts differ (an RGB target with a grayscale series, or the reverse) it must be
        given: it applies to the multi-channel file and the single-channel file's channel 0
        is read.
    lr_pixel_size_um, hr_pixel_size_um : float, optional
        Fallback pixel sizes (from the samples sheet) for files whose metadata lack one.
        A value recorded in the file wins; a disagreement above 1 % is logged.
    scale : int, optional
        HR pixels per LR pixel; the HR shape must be exactly ``scale`` times the LR frame.

    Returns
    -------
    dict
        The ``fastscan`` group attributes written to the store.

    Raises
    ------
    InputError
        When a file cannot be read, a pixel size is unknown, the LR series has no frame
        (one frame is a valid pair), the shapes do not match ``scale``, the data are
        non-finite or all zero, the channel counts differ and ``channel`` is None, or the
        declared arrays do not fit the memory limit (checked before any pixel is read).
    """
    from fastscan import __version__

    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    out = Path(out)
    for src in (lr, hr):
        if not _is_glob(src) and Path(src).exists() and Path(src).resolve() == out.resolve():
            raise InputError(f"{out}: output path is the input file itself; choose another `out`")

    lr_ch, hr_ch = _plan_reads(lr, hr, channel)
    lr_data, lr_meta = _read_series(lr, channel=lr_ch, role=_Role("LR series"))
    hr_data, hr_meta = _read_image(hr, channel=hr_ch, role=_Role("HR target", _HR_PLANE_BYTES))
    # Backstop for a header the probe could not read: the counts the reads found.
    _resolve_channels(lr, hr, _counted(lr_meta), _counted(hr_meta), channel)

    _check_frame_count(lr, lr_data.shape[0])
    expected = (lr_data.shape[1] * scale, lr_data.shape[2] * scale)
    if hr_data.shape != expected:
        raise InputError(
            f"{hr}: HR image is {hr_data.shape[0]}x{hr_data.shape[1]} but the LR frames of "
            f"{lr} are {lr_data.shape[1]}x{lr_data.shape[2]}; with scale={scale} the HR must be "
            f"{expected[0]}x{expected[1]}"
        )
    _check_values(lr_data, lr, "LR series")
    _check_values(hr_data, hr, "HR image")

    lr_px = _resolve_pixel_size(lr_meta, lr_pixel_size_um, path=lr, column="lr_pixel_size_um")
    hr_px = _resolve_pixel_size(hr_meta, hr_pixel_size_um, path=hr, column="hr_pixel_size_um")
    ratio = [a / b for a, b in zip(lr_px, hr_px, strict=True)]
    if any(abs(r - scale) / scale > 0.05 for r in ratio):
        logger.warning(
            "%s / %s: pixel sizes %s and %s um give a ratio of %s, not the scale %d",
            lr,
            hr,
            lr_px,
            hr_px,
            [round(r, 3) for r in ratio],
            scale,
        )

    sources: dict[str, Any] = {}
    for role, path, meta in (("lr", lr, lr_meta), ("hr", hr, hr_meta)):
        digest, files = _source_sha256(path, meta)
        entry = dict(meta)
        entry["path"] = os.fspath(path)
        entry["channel_read"] = lr_ch if role == "lr" else hr_ch
        entry["sha256"] = digest
        if files is not None and "files" not in entry:  # a glob already lists its frames
            entry["sha256_files"] = files
        sources[role] = entry

    attrs = _jsonable(
        {
            "kind": "fov",
            "sample": str(sample),
            "session": str(session),
            "fov": str(fov),
            "channel": int(channel or 0),
            "axes": {"lr": "TYX", "hr": "YX"},
            "lr_pixel_size_um": lr_px,
            "hr_pixel_size_um": hr_px,
            "scale": int(scale),
            "source": sources,
            "fastscan_version": __version__,
        }
    )

    _write_store_atomically(out, lr_data, hr_data, attrs)
    logger.info(
        "ingested %s/%s/%s: LR %s %s, HR %s -> %s",
        sample,
        session,
        fov,
        lr_data.shape,
        lr_data.dtype,
        hr_data.shape,
        out,
    )
    return attrs


def _write_store_atomically(out: Path, lr: np.ndarray, hr: np.ndarray, attrs: dict[str, Any]) -> None:
    import zarr

    from fastscan.atomic import atomic_path

    with atomic_path(out) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.create_array(
            "lr",
            data=np.ascontiguousarray(lr),
            chunks=(1, *lr.shape[1:]),
            dimension_names=("t", "y", "x"),
        )
        group.create_array(
            "hr",
            data=np.ascontiguousarray(hr, dtype=np.float32),
            chunks=hr.shape,
            dimension_names=("y", "x"),
        )
        group.attrs["fastscan"] = attrs


def _zarr_kind(path: Path) -> str | None:
    """``"v3"``/``"v2"`` when ``path`` is the root of a Zarr store, else None."""
    if (path / "zarr.json").is_file():
        return "v3"
    if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
        return "v2"
    return None


def read_fov(path: PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a canonical per-FOV store written by :func:`ingest_fov`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``{fov}.zarr`` directory.

    Returns
    -------
    lr : numpy.ndarray
        ``(T, Y, X)`` in the source dtype.
    hr : numpy.ndarray
        ``(Y2, X2)`` float32.
    attrs : dict
        The ``fastscan`` group attributes.
    """
    import zarr

    path = Path(path)
    if not path.is_dir() or _zarr_kind(path) is None:
        raise InputError(f"{path}: not a Zarr store (run ingest for this FOV first)")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs["fastscan"])
        lr, hr = group["lr"][...], group["hr"][...]
    except KeyError as exc:
        raise InputError(f"{path}: not a fastscan per-FOV store (missing {exc})") from exc
    except Exception as exc:
        raise InputError(f"{path}: cannot read Zarr store ({type(exc).__name__}: {exc})") from exc
    return np.asarray(lr), np.asarray(hr), attrs


# --------------------------------------------------------------------------------------------
# lazy whole-slide reader


def _slide_plane(arr: dask.array.Array, axes: str, *, channel: int | None, path: PathLike) -> tuple[dask.array.Array, int]:
    """Reduce a lazily read array with ``axes`` to one ``(Y, X)`` plane."""
    import dask.array as da

    axes = axes.upper()
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: no Y and X axes in the image (axes {axes!r})")
    chan_axis = "C" if "C" in axes and arr.shape[axes.index("C")] > 1 else None
    if chan_axis is None and "S" in axes:
        chan_axis = "S"
    n_channels = int(arr.shape[axes.index(chan_axis)]) if chan_axis else 1
    if chan_axis is not None:
        idx = axes.index(chan_axis)
        if channel is None:
            if chan_axis == "S" and n_channels in (3, 4):
                # ITU-R BT.601 luma: the usual grayscale of a brightfield RGB scan
                weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
                rgb = da.take(arr, [0, 1, 2], axis=idx).astype(np.float32)
                shape = [1] * arr.ndim
                shape[idx] = 3
                arr = (rgb * weights.reshape(shape)).sum(axis=idx)
            elif n_channels == 1:
                arr = da.take(arr, 0, axis=idx)
            else:
                raise InputError(f"{path}: has {n_channels} channels; pass `channel` to choose one (0..{n_channels - 1})")
        else:
            if not 0 <= channel < n_channels:
                raise InputError(
                    f"{path}: has {n_channels} channel{'s' if n_channels != 1 else ''} (indices 0..{n_channels - 1}), channel {channel} was asked for"
                )
            arr = da.take(arr, channel, axis=idx) if n_channels > 1 else da.take(arr, 0, axis=idx)
        axes = axes[:idx] + axes[idx + 1 :]
    elif channel not in (None, 0):
        raise InputError(f"{path}: has 1 channel (index 0), channel {channel} was asked for")
    for a in [a for a in axes if a not in "YX"]:
        idx = axes.index(a)
        if arr.shape[idx] != 1:
            raise InputError(
                f"{path}: a slide must be a single 2-D plane, but axis {a!r} has {arr.shape[idx]} entries (axes {axes!r}, shape {arr.shape}); export one plane"
            )
        arr = da.take(arr, 0, axis=idx)
        axes = axes[:idx] + axes[idx + 1 :]
    if axes == "XY":
        arr = arr.T
    return arr, n_channels


def _open_tiff_slide(path: Path, *, level: int) -> tuple[Any, dict[str, Any]]:
    import dask.array as da
    import tifffile
    import zarr

    try:
        with _TiffStructureErrors() as broken, tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError(f"{path}: TIFF file contains no image series; it may be truncated or corrupt")
            series = tf.series[0]
            broken.check(path)
            n_levels = len(series.levels)
            if not 0 <= level < n_levels:
                raise InputError(f"{path}: has {n_levels} pyramid level(s), level {level} was asked for")
            lev = series.levels[level]
            _check_tiff_complete(lev, path)
            axes = str(lev.axes)
            base_shape, lev_shape = series.shape, lev.shape
            fmt = _tiff_format(tf)
            meta = _tiff_metadata(tf, path)
        # The store keeps its own file handle open for as long as the dask graph lives.
        store = tifffile.imread(path, aszarr=True, level=level)
        zarray = zarr.open(store, mode="r")
        arr = da.from_zarr(zarray)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot open TIFF slide ({type(exc).__name__}: {exc}); the file may be truncated or corrupt") from exc
    px = meta.get("pixel_size_um")
    if px is not None and level > 0:
        y_i, x_i = axes.index("Y"), axes.index("X")
        px = [px[0] * base_shape[y_i] / lev_shape[y_i], px[1] * base_shape[x_i] / lev_shape[x_i]]
    meta.update({"format": fmt, "axes": axes, "levels": n_levels, "pixel_size_um": px})
    return arr, meta


def _ngff_multiscale(attrs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ome = attrs.get("ome")
    multiscales = (ome or {}).get("multiscales") if isinstance(ome, Mapping) else None
    multiscales = multiscales or attrs.get("multiscales")
    return multiscales[0] if multiscales else None


def _open_zarr_slide(path: Path, *, level: int) -> tuple[Any, dict[str, Any]]:
    import dask.array as da
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:
        raise InputError(f"{path}: cannot open Zarr store ({type(exc).__name__}: {exc})") from exc
    meta: dict[str, Any] = {"format": "zarr", "pixel_size_um": None, "levels": 1}
    if isinstance(node, zarr.Array):
        if level != 0:
            raise InputError(f"{path}: a plain Zarr array has 1 level, level {level} was asked for")
        zarray = node
        axes = None
    else:
        multiscale = _ngff_multiscale(dict(node.attrs))
        if multiscale is None:
            key = str(level)
            arrays = sorted(name for name, _ in node.arrays())
            if key not in arrays:
                raise InputError(
                    f"{path}: Zarr group without NGFF multiscales metadata and no array {key!r} (arrays: {arrays}); point `path` at the array itself"
                )
            zarray = node[key]
            axes = None
        else:
            datasets = multiscale.get("datasets", [])
            if not 0 <= level < len(datasets):
                raise InputError(f"{path}: has {len(datasets)} multiscale level(s), level {level} was asked for")
            zarray = node[datasets[level]["path"]]
            meta.update({"format": "ome-zarr", "levels": len(datasets)})
            ax_meta = multiscale.get("axes") or []
            names = [(a.get("name") if isinstance(a, Mapping) else str(a)) or "" for a in ax_meta]
            types = [(a.get("type") if isinstance(a, Mapping) else None) or "" for a in ax_meta]
            units = [(a.get("unit") if isinstance(a, Mapping) else None) for a in ax_meta]
            axes = "".join("C" if t == "channel" else n[:1].upper() for n, t in zip(names, types, strict=True)) or None
            scale = _ngff_scale(multiscale, datasets[level], zarray.ndim)
            if axes and scale and "Y" in axes and "X" in axes:
                y_i, x_i = axes.index("Y"), axes.index("X")
                fy, fx = _unit_to_um(units[y_i]), _unit_to_um(units[x_i])
                # Without a unit the numbers cannot be trusted as micrometres.
                if fy is not None and fx is not None:
                    meta["pixel_size_um"] = [scale[y_i] * fy, scale[x_i] * fx]
    if axes is None or len(axes) != zarray.ndim:
        axes = _guess_axes(zarray.shape)
    meta["axes"] = axes
    return da.from_zarr(zarray), meta


def _ngff_scale(multiscale: Mapping[str, Any], dataset: Mapping[str, Any], ndim: int) -> list[float] | None:
    scale = [1.0] * ndim
    found = False
    for transforms in (
        dataset.get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
                scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
                found = True
    return scale if found else None


def _guess_axes(shape: Sequence[int]) -> str:
    """Axes of an array without metadata: ``YX``, ``YXS`` for RGB(A), else leading ``C``."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return "YXS"
    letters = "TZC"[-(len(shape) - 2) :] if len(shape) <= 5 else "Q" * (len(shape) - 2)
    return letters + "YX"


def open_slide(path: PathLike, *, channel: int | None = 0, level: int = 0) -> tuple[dask.array.Array, dict[str, Any]]:
    """Open a whole slide as a lazily read 2-D ``(Y, X)`` dask array.

    Pixels are only read when blocks of the returned array are computed, one TIFF tile or
    Zarr chunk at a time, so slides larger than memory can be processed block-wise.

    Parameters
    ----------
    path : str or os.PathLike
        TIFF, OME-TIFF or SVS file; Olympus OIB/OIF (read whole, they are small); or a
        Zarr / OME-Zarr directory (NGFF multiscale, or a plain array).
    channel : int or None, optional
        Channel to return: the ``C`` axis, or the sample of an RGB image. None gives the
        luma of an RGB image (float32) and is an error for multi-channel fluorescence.
    level : int, optional
        Pyramid level (0 is full resolution).

    Returns
    -------
    plane : dask.array.Array
        ``(Y, X)`` in the source dtype (float32 for RGB luma).
    meta : dict
        ``path``, ``format``, ``pixel_size_um`` (``[y, x]`` at this level or None),
        ``shape``, ``dtype``, ``channels``, ``levels``, ``level``, ``axes`` (source axes)
        and ``chunksize``.

    Raises
    ------
    InputError
        When the path is missing, a directory that is not a Zarr store, unreadable, of
        unknown format, not a single plane, or ``channel``/``level`` is out of range.
    """
    import dask.array as da

    path = Path(path)
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (int, np.integer))):
        raise InputError(f"{path}: channel must be an integer or None, got {channel!r}")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        if _zarr_kind(path) is None:
            raise InputError(
                f"{path}: is a directory but not a Zarr store (no zarr.json, .zgroup or .zarray); give a TIFF/SVS/OIB file or a Zarr/OME-Zarr directory"
            )
        arr, meta = _open_zarr_slide(path, level=level)
    else:
        fmt = _detect_format(path)
        if fmt == "tiff":
            arr, meta = _open_tiff_slide(path, level=level)
        else:
            if level != 0:
                raise InputError(f"{path}: Olympus files have 1 level, level {level} was asked for")
            # OIB/OIF hold one field of view, small enough to read whole and wrap.
            data, axes, meta = _load_olympus(path, fmt)
            chunks = tuple(min(n, 1024) if a in "YX" else 1 for a, n in zip(axes, data.shape, strict=True))
            arr = da.from_array(data, chunks=chunks)
            meta["levels"] = 1
    plane_arr, n_channels = _slide_plane(arr, meta["axes"], channel=channel, path=path)
    meta["channels"] = n_channels
    meta.update(_slide_meta(path, plane_arr, meta, level))
    return plane_arr, _jsonable(meta)


def _slide_meta(path: Path, arr: Any, meta: Mapping[str, Any], level: int) -> dict[str, Any]:
    return {
        "path": os.fspath(path),
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "level": int(level),
        "chunksize": list(arr.chunksize),
        "pixel_size_um": meta.get("pixel_size_um"),
    }
