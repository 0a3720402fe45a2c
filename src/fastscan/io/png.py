"""PNG frames: 8- and 16-bit grayscale (and 8-bit colour) images, one frame per file.

Public paired microscopy datasets are often shipped as folders of single-frame PNGs (noisy
frames beside an averaged target); a glob of them is a series. Pillow decodes the pixels.
The header chunks (IHDR, PLTE, pHYs, sBIT, acTL) are read here instead: Pillow skips sBIT,
reports pHYs only as dots per inch, and would decode a 16-bit colour PNG to 8 bits without a
word. Walking the chunk lengths also finds a truncated file before any pixel is decoded,
which Pillow only notices part way through decoding.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fastscan.io.declared import _SERIES, _declare, _Declared, _guard, _Role, _select_channel
from fastscan.io.errors import InputError
from fastscan.io.sources import _PNG_MAGIC

logger = logging.getLogger(__name__)

# Pixel sizes above this many micrometres are the 72/96/300 dpi display defaults image editors
# write into pHYs (352.8/264.6/84.7 µm), not a physical calibration; the TIFF reader draws
# the same line for inch-based resolutions.
_MAX_PIXEL_UM = 10.0
# Header chunks kept by the chunk walk; only their first copy before the image data counts.
_HEADER_CHUNKS = frozenset({b"IHDR", b"PLTE", b"pHYs", b"sBIT", b"acTL"})
# PNG colour types by name, and the bit depths the standard allows each.
_COLOUR_NAMES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale with alpha", 6: "RGBA"}
_VALID_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Bytes of decoded pixels copied out of Pillow at a time: copying the whole image at once
# (numpy.asarray of the image) goes through two more full-size byte strings.
_BAND_BYTES = 1 << 22
# Bytes per pixel Pillow keeps a decoded image in, by mode: three- and two-sample modes are
# padded to four bytes.
_PILLOW_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2}


class _PngHeader(NamedTuple):
    """What a PNG's header chunks say, read without decompressing any image data."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    #: The first copy of each of :data:`_HEADER_CHUNKS` before the image data, without its CRC.
    chunks: dict[bytes, bytes]
    #: The array the file is read as (palette images resolved to gray or RGB samples).
    declared: _Declared


def _png_chunks(path: Path) -> dict[bytes, bytes]:
    """The header chunks of a PNG, after checking that every chunk lies inside the file.

    A PNG is the 8-byte signature and a chain of chunks (length, type, data, CRC) from IHDR to
    IEND; a copy cut short loses IEND and usually ends inside an IDAT chunk. Only the chunk
    headers are read on the way (the image data are skipped): one small read per chunk.
    """
    size = path.stat().st_size
    kept: dict[bytes, bytes] = {}
    seen_idat = False
    with open(path, "rb") as fh:
        if fh.read(8) != _PNG_MAGIC:
            raise InputError(f"{path}: not a valid PNG file (no PNG signature); the file may be truncated or corrupt")
        pos = 8
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise InputError(f"{path}: PNG ends after {pos} bytes without its IEND chunk; the file is truncated or corrupt")
            length, kind = struct.unpack(">I4s", head)
            end = pos + 12 + length
            if pos == 8 and kind != b"IHDR":
                raise InputError(f"{path}: PNG does not start with its IHDR chunk (found {kind!r}); the file is corrupt")
            if length > 0x7FFFFFFF or end > size:
                raise InputError(
                    f"{path}: PNG chunk {kind!r} at byte {pos} extends beyond the end of the file ({size} bytes); the file is truncated or corrupt"
                )
            if kind in _HEADER_CHUNKS and not seen_idat and kind not in kept:
                data, crc = fh.read(length), fh.read(4)
                # A damaged header would otherwise set the shape, dtype or pixel size.
                if zlib.crc32(kind + data) != int.from_bytes(crc, "big"):
                    raise InputError(f"{path}: PNG chunk {kind!r} at byte {pos} fails its checksum; the file is corrupt")
                kept[kind] = data
            else:
                fh.seek(end)
            seen_idat = seen_idat or kind == b"IDAT"
            pos = end
            if kind == b"IEND":
                break
    if not seen_idat:
        raise InputError(f"{path}: PNG holds no image data (no IDAT chunk); the file is corrupt")
    return kept


def _gray_palette(plte: bytes) -> bool:
    """Whether every palette entry is a gray (R = G = B): the image is then grayscale."""
    entries = np.frombuffer(plte[: len(plte) // 3 * 3], np.uint8).reshape(-1, 3)
    return bool(entries.size) and bool((entries == entries[:, :1]).all())


def _png_header(path: Path) -> _PngHeader:
    """Parse and check a PNG's header chunks; refuse what cannot be read without loss.

    Raises
    ------
    InputError
        For a truncated or corrupt file, a 16-bit colour PNG (which Pillow decodes to 8 bits)
        and an animated PNG of several frames.
    """
    try:
        chunks = _png_chunks(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    ihdr = chunks.get(b"IHDR", b"")
    if len(ihdr) != 13:
        raise InputError(f"{path}: PNG header (IHDR) is {len(ihdr)} bytes instead of 13; the file is corrupt")
    width, height, depth, colour, _compression, _filter, _interlace = struct.unpack(">IIBBBBB", ihdr)
    if width == 0 or height == 0 or depth not in _VALID_DEPTHS.get(colour, ()):
        raise InputError(
            f"{path}: PNG header declares {width} x {height} pixels, bit depth {depth}, colour type {colour}: not a valid PNG image; the file is corrupt"
        )
    if depth == 16 and colour != 0:
        raise InputError(
            f"{path}: is a 16-bit {_COLOUR_NAMES[colour]} PNG, whose samples Pillow decodes to 8 bits (the low byte "
            "would be lost); save each channel as a 16-bit grayscale PNG, or the image as a TIFF"
        )
    actl = chunks.get(b"acTL", b"")
    frames = struct.unpack(">I", actl[:4])[0] if len(actl) >= 4 else 1
    if frames > 1:
        raise InputError(f"{path}: is an animated PNG of {frames} frames; save the frames as single PNG files and read them with a glob")
    if colour == 3 and b"PLTE" not in chunks:
        raise InputError(f"{path}: palette PNG without a palette (no PLTE chunk); the file is corrupt")
    if colour == 2 or (colour == 3 and not _gray_palette(chunks[b"PLTE"])):
        shape, axes = (height, width, 3), "YXS"
    elif colour == 6:
        shape, axes = (height, width, 4), "YXS"
    else:
        # Grayscale, a gray palette and grayscale with alpha: the alpha of the last is dropped,
        # it marks how to display a pixel, not what was measured.
        shape, axes = (height, width), "YX"
    declared = _declare(shape, np.uint16 if depth == 16 else np.uint8, axes)
    return _PngHeader(width, height, depth, colour, chunks, declared)


def _png_pixel_size(chunks: dict[bytes, bytes], path: Path) -> list[float] | None:
    """``[y, x]`` in µm from pHYs when it counts pixels per metre (unit 1), else None."""
    phys = chunks.get(b"pHYs", b"")
    if len(phys) != 9:
        return None
    per_x, per_y, unit = struct.unpack(">IIB", phys)
    if unit != 1 or not per_x or not per_y:  # unit 0 only gives the aspect ratio
        return None
    sizes = [1e6 / per_y, 1e6 / per_x]
    if max(sizes) > _MAX_PIXEL_UM:
        logger.debug("%s: ignoring display resolution of %.1f um/px", path, max(sizes))
        return None
    return sizes


def _png_significant_bits(header: _PngHeader) -> int | None:
    """Bits the sBIT chunk records for the colour (or gray) samples, the largest if they differ."""
    sbit = header.chunks.get(b"sBIT", b"")
    samples = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}[header.colour_type]  # alpha is left out
    depth = 8 if header.colour_type == 3 else header.bit_depth  # a palette holds 8-bit entries
    values = list(sbit[:samples])
    if len(values) < samples or not all(0 < v <= depth for v in values):
        return None
    return max(values)


def _png_meta(header: _PngHeader, path: Path) -> dict[str, Any]:
    return {
        "pixel_size_um": _png_pixel_size(header.chunks, path),
        "significant_bits": _png_significant_bits(header),
    }


def _band_converter(mode: str, header: _PngHeader) -> Callable[[np.ndarray], np.ndarray]:
    """How a band of Pillow's pixels (``numpy.asarray`` of a crop) becomes the declared samples."""
    if mode == "P":
        # A lookup in the palette gives its values exactly, band by band; Pillow's conversion
        # would make a second full-size image (and warns about palette transparency). Indices
        # beyond a short palette are black, as PNG decoders show them.
        lut = np.zeros((256, 3), np.uint8)
        entries = np.frombuffer(header.chunks[b"PLTE"][:768], np.uint8)
        lut[: entries.size // 3] = entries[: entries.size // 3 * 3].reshape(-1, 3)
        if header.declared.axes == "YX":
            lut = lut[:, 0]
        return lambda band: lut[band]
    if mode == "1":
        return lambda band: band.astype(np.uint8) * np.uint8(255)  # as Pillow scales 2- and 4-bit gray
    if mode == "LA":
        return lambda band: band[..., 0]
    # L, RGB, RGBA and 16-bit gray: "I;16" is already uint16; Pillow versions that open 16-bit
    # gray as 32-bit "I" give int32 values within 0..65535, cast exactly on assignment.
    return lambda band: band


# The Pillow modes each colour type and bit depth opens as (16-bit gray: "I" in older Pillow).
_EXPECTED_MODES = {0: ("1", "L", "I;16", "I;16B", "I"), 2: ("RGB",), 3: ("P",), 4: ("LA",), 6: ("RGBA",)}


def _decode(im: Any, header: _PngHeader) -> np.ndarray:
    """Copy an opened image's pixels into the declared array, band by band."""
    out = np.empty(header.declared.shape, header.declared.dtype)
    convert = _band_converter(im.mode, header)
    width, height = header.width, header.height
    rows = max(1, _BAND_BYTES // (width * 4))
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        out[y0:y1] = convert(np.asarray(im.crop((0, y0, width, y1))))
    return out


def _load_png(path: Path, *, role: _Role = _SERIES) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Raw array (``(Y, X)`` or ``(Y, X, S)``), its axes and the metadata of a PNG."""
    from PIL import PngImagePlugin

    header = _png_header(path)
    declared = header.declared
    try:
        # The PNG plugin directly rather than PIL.Image.open: Image.open also refuses images of
        # more than about 179 million pixels as decompression bombs, which large but fitting
        # microscopy frames are not; the memory guard below is the limit here. Opening only
        # parses the header, as the chunk walk did.
        with PngImagePlugin.PngImageFile(os.fspath(path)) as im:
            if im.size != (header.width, header.height) or im.mode not in _EXPECTED_MODES[header.colour_type]:
                raise InputError(
                    f"{path}: PNG opens as {im.size[0]} x {im.size[1]} {im.mode!r} pixels, but its header declares "
                    f"{header.width} x {header.height} {_COLOUR_NAMES[header.colour_type]}; the file is corrupt"
                )
            # Pillow holds its decoded image while the pixels are copied out (bands of
            # _BAND_BYTES, as a crop and its array): counted besides the declared array.
            # Reading 6000 x 6000 uint8, uint16 and RGB PNGs peaked at 0.80-0.89 of the
            # estimate (ru_maxrss); copying the whole image at once peaked near 3x the array.
            held = header.width * header.height * _PILLOW_PIXEL_BYTES.get(im.mode, 4) + 2 * _BAND_BYTES
            _guard(path, declared, **role._asdict(), held_bytes=held)
            im.load()
            data = _decode(im, header)
    except InputError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, ...
        raise InputError(f"{path}: cannot read PNG ({type(exc).__name__}: {exc}); the file may be truncated or corrupt") from exc
    meta = _png_meta(header, path)
    bits = meta["significant_bits"]
    if bits is not None and data.size and int(data.max()) >= 1 << bits:
        # The PNG standard scales samples of fewer significant bits up to the full bit depth;
        # then the recorded bits say nothing about where the values saturate.
        logger.debug("%s: sBIT records %d bits, but the samples use the full %d-bit range", path, bits, header.bit_depth)
        meta["significant_bits"] = None
    meta = {
        "format": "png",
        "path": os.fspath(path),
        "axes": declared.axes,
        "source_shape": list(data.shape),
        **meta,
    }
    return data, declared.axes, meta


def _read_png(path: Path, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    data, axes, meta = _load_png(path, role=role)
    frames, meta["channels"] = _select_channel(data, axes, channel=channel, path=path)
    return frames, meta


def _read_png_header(path: Path) -> tuple[_Declared, dict[str, Any]]:
    """What a PNG declares and its pixel metadata, from its header chunks alone.

    ``significant_bits`` is sBIT as recorded: whether the samples were scaled up to the full
    bit depth, as the PNG standard has it, shows only in the pixels, which are not read here.
    A PNG records no acquisition settings (zoom, time, stage), so the header leaves them empty.
    """
    parsed = _png_header(path)
    return parsed.declared, _png_meta(parsed, path)
