"""NumPy ``.npy`` arrays: series and targets saved straight from Python.

Public paired datasets and lab scripts often keep frames as plain arrays: the W2S dataset
stores each FOV's 400 widefield shots as one ``(400, 512, 512)`` uint16 ``.npy`` per channel,
beside a ``(1024, 1024)`` SIM target. An array file records neither axes nor pixel size, so
the axes follow from the number of dimensions (below) and the pixel sizes come from the
sample sheet. The header is parsed by memory-mapping the file, which reads no pixel and also
finds a file shorter than its header declares.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.io.declared import _SERIES, _declare, _Declared, _guard, _Role, _select_channel
from fastscan.io.errors import InputError

#: Sample kinds an image can hold: unsigned and signed integers and floats. Booleans are masks,
#: complex numbers are not intensities, and anything else (objects, records, text) no image.
_IMAGE_KINDS = "uif"
#: A trailing axis this short beside two long ones is a colour sample axis ``(Y, X, S)``, as
#: imaging libraries save RGB(A) arrays; no scan is 3 or 4 pixels wide.
_SAMPLE_AXIS_MAX = 4


def _npy_axes(shape: tuple[int, ...], path: Path) -> str:
    """The axes of an array by its number of dimensions: ``YX``, ``TYX`` or ``YXS``."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        if shape[2] <= _SAMPLE_AXIS_MAX < min(shape[:2]):
            return "YXS"
        return "TYX"
    raise InputError(
        f"{path}: a {len(shape)}-D array of shape {list(shape)}; an .npy file records no axis names, so fastscan reads "
        "only 2-D (Y, X) images and 3-D (T, Y, X) series: save one channel (or one Z plane) per file"
    )


def _open_npy(path: Path) -> np.ndarray:
    """The array of an ``.npy`` file, memory-mapped: no pixel is read until it is used."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    except ValueError as exc:
        text = str(exc)
        if "Python objects" in text or "pickle" in text:
            raise InputError(f"{path}: holds Python objects, not an image array; save a numeric array") from exc
        if "mmap length" in text:
            raise InputError(f"{path}: is shorter than the array its header declares; the file is truncated or corrupt") from exc
        raise InputError(f"{path}: cannot read the NPY header ({text}); the file may be truncated or corrupt") from exc
    except Exception as exc:  # numpy raises several types for a damaged header
        raise InputError(f"{path}: cannot read the NPY header ({type(exc).__name__}: {exc}); the file may be truncated or corrupt") from exc
    if arr.dtype.names is not None or arr.dtype.kind not in _IMAGE_KINDS:
        raise InputError(f"{path}: holds a {arr.dtype} array; images must hold integers or floats")
    if arr.size == 0:
        raise InputError(f"{path}: array is empty (shape {list(arr.shape)})")
    return arr


def _npy_declared(arr: np.ndarray, path: Path) -> _Declared:
    # Floats of less than single precision are read as float32: nothing downstream computes in half.
    dtype = np.float32 if arr.dtype.kind == "f" and arr.dtype.itemsize < 4 else arr.dtype.newbyteorder("=")
    return _declare(arr.shape, dtype, _npy_axes(arr.shape, path))


def _read_npy(path: Path, *, channel: int, role: _Role = _SERIES) -> tuple[np.ndarray, dict[str, Any]]:
    arr = _open_npy(path)
    declared = _npy_declared(arr, path)
    _guard(path, declared, **role._asdict())
    try:
        # One copy into memory, in native byte order (a big-endian file is swapped here).
        data = np.asarray(arr, dtype=declared.dtype, order="C")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    finally:
        del arr
    frames, channels = _select_channel(data, declared.axes, channel=channel, path=path)
    meta = {
        "format": "npy",
        "path": os.fspath(path),
        "axes": declared.axes,
        "source_shape": list(data.shape),
        "pixel_size_um": None,
        "significant_bits": None,
        "channels": channels,
    }
    return frames, meta


def _read_npy_header(path: Path) -> tuple[_Declared, dict[str, Any]]:
    """What an ``.npy`` declares. It records no pixel size, bit depth or acquisition settings."""
    arr = _open_npy(path)
    declared = _npy_declared(arr, path)
    del arr
    return declared, {"pixel_size_um": None, "significant_bits": None}
