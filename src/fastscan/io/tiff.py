"""The TIFF family: plain, OME-TIFF, ImageJ TIFF and SVS, read whole with their metadata.

Holds the structural checks (broken page chains, frames split into several series, data
beyond the end of the file) that tifffile only logs or silently works around, and the
pixel size, OME header and format name of a TIFF; the lazy slide reader reuses them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.io.declared import _SERIES, _declare, _Declared, _guard, _Role, _select_channel
from fastscan.io.errors import InputError
from fastscan.io.metadata import _iso_time, _length_um, _unit_to_um
from fastscan.io.sources import PathLike

logger = logging.getLogger(__name__)

# Pixel sizes above this many micrometres from an inch-based TIFF resolution are the
# 72/96/300 dpi display defaults many programs write, not a physical calibration.
_MAX_INCH_PIXEL_UM = 10.0


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


def _read_tiff_header(path: Path, header: dict[str, Any]) -> tuple[_Declared, dict[str, Any]]:
    """Fill ``header`` from a TIFF's tags and OME/ImageJ metadata; return what it declares and its pixel metadata.

    Errors other than :class:`InputError` are left to :func:`fastscan.io.readers.read_header`,
    which words them for both formats.
    """
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
    return declared, meta


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
