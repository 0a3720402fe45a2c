"""Whole slides as lazily read 2-D dask arrays: pyramidal TIFF/SVS, OME-Zarr, plain Zarr, OIB/OIF.

Pixels are read only when blocks are computed, one TIFF tile or Zarr chunk at a time, so
that slides larger than memory can be restored tile by tile; pyramid levels, NGFF
multiscales and the reduction to one ``(Y, X)`` plane live here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastscan.io.errors import InputError
from fastscan.io.metadata import _unit_to_um
from fastscan.io.olympus import _load_olympus
from fastscan.io.sources import PathLike, _detect_format, _zarr_kind
from fastscan.io.tiff import _check_tiff_complete, _tiff_format, _tiff_metadata, _TiffStructureErrors
from fastscan.jsonable import jsonable

if TYPE_CHECKING:
    import dask.array


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
        unknown format, a PNG or NPY (read as LR frames and HR targets only), not a single plane,
        or ``channel``/``level`` is out of range.
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
        if fmt in ("png", "npy"):
            raise InputError(f"{path}: {fmt.upper()} is read as LR frames and HR targets, not as a whole slide; give a TIFF/SVS/OIB file or a Zarr directory")
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
    return plane_arr, jsonable(meta)


def _slide_meta(path: Path, arr: Any, meta: Mapping[str, Any], level: int) -> dict[str, Any]:
    return {
        "path": os.fspath(path),
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "level": int(level),
        "chunksize": list(arr.chunksize),
        "pixel_size_um": meta.get("pixel_size_um"),
    }
