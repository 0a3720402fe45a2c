"""The array a file declares, the channel read from it, and the memory refusal before reading it.

Every format reader describes its header as a :class:`_Declared` (shape, dtype, axes,
channels) and calls :func:`_guard` before any pixel is decoded; :func:`_declare` and
:func:`_select_channel` choose the channel axis by the same rule, so they live together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from fastscan.io.errors import InputError
from fastscan.io.memory import check_fits
from fastscan.io.sources import PathLike

logger = logging.getLogger(__name__)


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


def _declare(shape: Sequence[int], dtype: Any, axes: str) -> _Declared:
    """Describe a declared array; the channel axis is chosen as :func:`_select_channel` does."""
    axes = axes.upper()
    shape = tuple(int(n) for n in shape)
    chan_axis = "C" if "C" in axes else ("S" if "S" in axes else None)
    n_channels = shape[axes.index(chan_axis)] if chan_axis and len(axes) == len(shape) else 1
    multi = chan_axis if n_channels > 1 else None
    return _Declared(shape, np.dtype(dtype), axes, n_channels, multi)


def _declared_frames(declared: _Declared) -> int:
    """Frames a declared array folds into (every axis but the channel, Y and X)."""
    skip = {declared.channel_axis, "Y", "X"} | ({"S"} if "S" in declared.axes else set())
    sizes = zip(declared.axes, declared.shape, strict=False)
    return math.prod(n for a, n in sizes if a not in skip)


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
    factor, extra = _read_need(declared, plane_bytes=plane_bytes)
    shape, dtype = declared.shape, declared.dtype
    return check_fits(path, shape, dtype, what=what, factor=factor, extra_bytes=extra + held_bytes)
