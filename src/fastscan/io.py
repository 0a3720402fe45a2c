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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "InputError",
    "file_sha256",
    "ingest_fov",
    "open_slide",
    "read_fov",
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


class InputError(ValueError):
    """An input file or argument cannot be used; the message names the file and the problem."""


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
        raise InputError(
            f"{path}: not a valid {suffix[1:].upper()} file (unexpected header bytes "
            f"{head[:4]!r}); the file may be truncated or corrupt"
        )
    raise InputError(
        f"{path}: unknown image format; supported are OIB, OIF, TIFF/OME-TIFF/ImageJ TIFF/SVS "
        "or a glob of single-frame files"
    )


def _select_channel(
    data: np.ndarray, axes: str, *, channel: int, path: PathLike
) -> tuple[np.ndarray, int]:
    """Pick ``channel`` and fold every remaining non-spatial axis into frames.

    Returns a ``(T, Y, X)`` array and the number of channels the source has.
    """
    axes = axes.upper()
    if data.ndim != len(axes):
        raise InputError(f"{path}: axes {axes!r} do not match the data shape {data.shape}")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: no Y and X axes in the image (axes {axes!r})")
    if "C" in axes and "S" in axes and data.shape[axes.index("S")] > 1:
        raise InputError(
            f"{path}: has both a channel axis and RGB samples (axes {axes!r}, shape "
            f"{data.shape}); export one channel as a grayscale image"
        )
    chan_axis = "C" if "C" in axes else ("S" if "S" in axes else None)
    n_channels = int(data.shape[axes.index(chan_axis)]) if chan_axis else 1
    if not 0 <= channel < n_channels:
        raise InputError(
            f"{path}: has {n_channels} channel{'s' if n_channels != 1 else ''} "
            f"(indices 0..{n_channels - 1}), channel {channel} was asked for"
        )
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
        "user_comment": ((main.get("File Info", {}) or {}).get("UserComment") or "").strip()
        or None,
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


def _load_olympus(path: Path, fmt: str) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Raw array, its axes and the metadata of an OIB/OIF file."""
    import oiffile

    try:
        with oiffile.OifFile(path) as oif:
            axes = str(oif.axes).upper()
            data = np.asarray(oif.asarray())
            n_c = int(data.shape[axes.index("C")]) if "C" in axes else 1
            meta = _olympus_metadata(oif.mainfile, n_c)
    except Exception as exc:  # oiffile surfaces OLE, INI and TIFF errors with varied types
        raise InputError(
            f"{path}: cannot read Olympus {fmt.upper()} file ({type(exc).__name__}: {exc})"
        ) from exc
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


def _read_olympus(path: Path, fmt: str, *, channel: int) -> tuple[np.ndarray, dict[str, Any]]:
    data, axes, meta = _load_olympus(path, fmt)
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
            raise InputError(
                f"{path}: TIFF page structure is broken ({self.messages[0]}); the file is "
                "truncated or corrupt"
            )


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
            raise InputError(
                f"{handle.path}: image data extend beyond the end of the file ({handle.size} "
                "bytes); the file is truncated or corrupt"
            )


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


def _read_tiff(path: Path, *, channel: int) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    try:
        with _TiffStructureErrors() as broken, tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError(
                    f"{path}: TIFF file contains no image series; it may be truncated or corrupt"
                )
            series = tf.series[0]
            broken.check(path)
            _check_one_stack(tf, path)
            _check_tiff_complete(series, path)
            axes = str(series.axes)
            data = np.asarray(series.asarray())
            broken.check(path)
            fmt = _tiff_format(tf)
            extra = _tiff_metadata(tf, path)
            if tf.is_imagej:
                extra["imagej"] = True
    except InputError:
        raise
    except Exception as exc:  # tifffile, imagecodecs and struct raise many unrelated types
        raise InputError(
            f"{path}: cannot read TIFF ({type(exc).__name__}: {exc}); the file may be truncated "
            "or corrupt"
        ) from exc
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


def _read_file(path: Path, *, channel: int) -> tuple[np.ndarray, dict[str, Any]]:
    fmt = _detect_format(path)
    if fmt == "tiff":
        return _read_tiff(path, channel=channel)
    return _read_olympus(path, fmt, channel=channel)


def _glob_files(pattern: str) -> list[Path]:
    files = [Path(p) for p in _glob.glob(pattern) if Path(p).is_file()]
    if not files:
        raise InputError(f"{pattern}: no files match this pattern")
    return sorted(files, key=lambda p: _natural_key(os.fspath(p)))


def _read_glob(pattern: str, *, channel: int) -> tuple[np.ndarray, dict[str, Any]]:
    files = _glob_files(pattern)
    frames: list[np.ndarray] = []
    first_meta: dict[str, Any] = {}
    for file in files:
        data, meta = _read_file(file, channel=channel)
        if data.shape[0] != 1:
            raise InputError(
                f"{file}: holds {data.shape[0]} frames, but every file matched by {pattern!r} "
                "must be a single frame"
            )
        if frames and (data.shape[1:] != frames[0].shape or data.dtype != frames[0].dtype):
            raise InputError(
                f"{file}: frame is {data.shape[1:]} {data.dtype}, but {files[0]} is "
                f"{frames[0].shape} {frames[0].dtype}; all frames of {pattern!r} must match"
            )
        if not frames:
            first_meta = meta
        frames.append(data[0])
    meta = {
        **first_meta,
        "format": "glob",
        "path": pattern,
        "frame_format": first_meta.get("format"),
        "files": [os.fspath(f) for f in files],
    }
    return np.stack(frames), meta


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
        is out of range.
    """
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise InputError(f"{path}: channel must be an integer, got {channel!r}")
    if _is_glob(path):
        frames, meta = _read_glob(os.fspath(path), channel=int(channel))
    else:
        frames, meta = _read_file(Path(path), channel=int(channel))
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
    """
    frames, meta = read_series(path, channel=channel)
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
            files += sorted(
                (p for p in companion.rglob("*") if p.is_file()), key=lambda p: os.fspath(p)
            )
    else:
        return file_sha256(path), None
    manifest = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(manifest.encode()).hexdigest(), [os.fspath(f) for f in files]


# --------------------------------------------------------------------------------------------
# ingestion


def _resolve_pixel_size(
    meta: Mapping[str, Any], explicit: float | None, *, path: PathLike, column: str
) -> list[float]:
    """Metadata wins; the sheet value is a fallback for files that carry none."""
    if explicit is not None and (
        isinstance(explicit, bool)
        or not isinstance(explicit, (int, float, np.number))
        or not (math.isfinite(float(explicit)) and float(explicit) > 0)
    ):
        raise InputError(f"{path}: {column} must be a positive number, got {explicit!r}")
    from_meta = meta.get("pixel_size_um")
    if from_meta is not None:
        if explicit is not None:
            worst = max(abs(float(m) - float(explicit)) / float(m) for m in from_meta)
            if worst > 0.01:
                logger.warning(
                    "%s: pixel size in the file %s um differs from %s=%s by %.1f%%; "
                    "using the file's",
                    path,
                    from_meta,
                    column,
                    explicit,
                    100 * worst,
                )
        return [float(v) for v in from_meta]
    if explicit is None:
        raise InputError(
            f"{path}: the file does not record its pixel size; add a `{column}` column "
            "(micrometres per pixel) to the samples sheet or pass it explicitly"
        )
    return [float(explicit), float(explicit)]


def _check_values(data: np.ndarray, path: PathLike, role: str) -> None:
    if np.issubdtype(data.dtype, np.inexact) and not np.isfinite(data).all():
        raise InputError(f"{path}: {role} contains NaN or infinite values")
    if not data.any():
        raise InputError(f"{path}: {role} is all zero; check the channel and the file")


def ingest_fov(
    *,
    lr: PathLike,
    hr: PathLike,
    out: PathLike,
    sample: str,
    session: str,
    fov: str,
    channel: int = 0,
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
    channel : int, optional
        Channel read from both files.
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
        When a file cannot be read, a pixel size is unknown, the LR series has fewer than
        two frames, the shapes do not match ``scale``, or the data are non-finite or all zero.
    """
    from fastscan import __version__

    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    out = Path(out)
    for src in (lr, hr):
        if not _is_glob(src) and Path(src).exists() and Path(src).resolve() == out.resolve():
            raise InputError(f"{out}: output path is the input file itself; choose another `out`")

    lr_data, lr_meta = read_series(lr, channel=channel)
    hr_data, hr_meta = read_image(hr, channel=channel)

    if lr_data.shape[0] < 2:
        raise InputError(
            f"{lr}: LR series has {lr_data.shape[0]} frame, at least 2 are needed "
            "(is this the HR image, or a single-frame export?)"
        )
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
            "channel": int(channel),
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


def _write_store_atomically(
    out: Path, lr: np.ndarray, hr: np.ndarray, attrs: dict[str, Any]
) -> None:
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


def _slide_plane(
    arr: dask.array.Array, axes: str, *, channel: int | None, path: PathLike
) -> tuple[dask.array.Array, int]:
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
                raise InputError(
                    f"{path}: has {n_channels} channels; pass `channel` to choose one "
                    f"(0..{n_channels - 1})"
                )
        else:
            if not 0 <= channel < n_channels:
                raise InputError(
                    f"{path}: has {n_channels} channel{'s' if n_channels != 1 else ''} "
                    f"(indices 0..{n_channels - 1}), channel {channel} was asked for"
                )
            arr = da.take(arr, channel, axis=idx) if n_channels > 1 else da.take(arr, 0, axis=idx)
        axes = axes[:idx] + axes[idx + 1 :]
    elif channel not in (None, 0):
        raise InputError(f"{path}: has 1 channel (index 0), channel {channel} was asked for")
    for a in [a for a in axes if a not in "YX"]:
        idx = axes.index(a)
        if arr.shape[idx] != 1:
            raise InputError(
                f"{path}: a slide must be a single 2-D plane, but axis {a!r} has "
                f"{arr.shape[idx]} entries (axes {axes!r}, shape {arr.shape}); export one plane"
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
                raise InputError(
                    f"{path}: TIFF file contains no image series; it may be truncated or corrupt"
                )
            series = tf.series[0]
            broken.check(path)
            n_levels = len(series.levels)
            if not 0 <= level < n_levels:
                raise InputError(
                    f"{path}: has {n_levels} pyramid level(s), level {level} was asked for"
                )
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
        raise InputError(
            f"{path}: cannot open TIFF slide ({type(exc).__name__}: {exc}); the file may be "
            "truncated or corrupt"
        ) from exc
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
                    f"{path}: Zarr group without NGFF multiscales metadata and no array {key!r} "
                    f"(arrays: {arrays}); point `path` at the array itself"
                )
            zarray = node[key]
            axes = None
        else:
            datasets = multiscale.get("datasets", [])
            if not 0 <= level < len(datasets):
                raise InputError(
                    f"{path}: has {len(datasets)} multiscale level(s), level {level} was asked for"
                )
            zarray = node[datasets[level]["path"]]
            meta.update({"format": "ome-zarr", "levels": len(datasets)})
            ax_meta = multiscale.get("axes") or []
            names = [(a.get("name") if isinstance(a, Mapping) else str(a)) or "" for a in ax_meta]
            types = [(a.get("type") if isinstance(a, Mapping) else None) or "" for a in ax_meta]
            units = [(a.get("unit") if isinstance(a, Mapping) else None) for a in ax_meta]
            axes = (
                "".join(
                    "C" if t == "channel" else n[:1].upper()
                    for n, t in zip(names, types, strict=True)
                )
                or None
            )
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


def _ngff_scale(
    multiscale: Mapping[str, Any], dataset: Mapping[str, Any], ndim: int
) -> list[float] | None:
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


def open_slide(
    path: PathLike, *, channel: int | None = 0, level: int = 0
) -> tuple[dask.array.Array, dict[str, Any]]:
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
    if channel is not None and (
        isinstance(channel, bool) or not isinstance(channel, (int, np.integer))
    ):
        raise InputError(f"{path}: channel must be an integer or None, got {channel!r}")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        if _zarr_kind(path) is None:
            raise InputError(
                f"{path}: is a directory but not a Zarr store (no zarr.json, .zgroup or .zarray); "
                "give a TIFF/SVS/OIB file or a Zarr/OME-Zarr directory"
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
            chunks = tuple(
                min(n, 1024) if a in "YX" else 1 for a, n in zip(axes, data.shape, strict=True)
            )
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
