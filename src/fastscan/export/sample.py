"""The package's test tile: a validation tile of the model's dataset store, a tile of a given
sample image, or a synthetic texture over the model's LR range (raw intensities)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.export.model import ExportError

log = logging.getLogger("fastscan.export")


def _test_tile(sample: str | os.PathLike | np.ndarray | None, meta: Mapping[str, Any], size: int, norm_lr: Sequence[float]) -> tuple[np.ndarray, str]:
    """The ``size`` x ``size`` raw test tile and where it comes from, for the README."""
    if isinstance(sample, np.ndarray):
        raw, test_source = np.asarray(sample, np.float32), "a tile of the image given to the export"
    elif sample is not None:
        raw, test_source = _read_sample(sample), f"a tile of {Path(sample).name}"
    else:
        raw = _dataset_tile(meta)
        test_source = "the most textured validation tile of the training dataset"
        if raw is None:
            raw = _synthetic_tile(size, *norm_lr)
            test_source = "a synthetic smooth texture over the model's LR range (no dataset store was at hand)"
    return _fit(raw, size), test_source


def _dataset_tile(meta: Mapping[str, Any]) -> np.ndarray | None:
    """The most textured of the first validation tiles of the model's dataset store (raw LR
    intensities, in the model's input geometry), or None when the store is not at hand."""
    import zarr

    path = (meta.get("dataset") or {}).get("path")
    if not path or not Path(path).is_dir():
        return None
    try:
        from fastscan.dataset import read_dataset

        group, tiles, _ = read_dataset(path)
        rows = tiles.index[tiles["split"] == "val"].tolist()[:64] or tiles.index.tolist()[:64]
        if not rows:
            return None
        lr = group["lr"]
        stack = np.stack([np.asarray(lr[int(i)], dtype=np.float32) for i in rows])
    except (OSError, KeyError, ValueError, zarr.errors.BaseZarrError) as exc:
        log.warning("%s: cannot read a test tile from the dataset store (%s); using a synthetic one", path, exc)
        return None
    return stack[int(np.argmax(stack.reshape(len(stack), -1).std(axis=1)))]


def _synthetic_tile(size: int, low: float, high: float, seed: int = 0) -> np.ndarray:
    """A smooth random texture over the model's LR range (raw intensities)."""
    from scipy import ndimage as ndi

    texture = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return (low + texture * (high - low)).astype(np.float32)


def _read_sample(path: str | os.PathLike) -> np.ndarray:
    """A 2-D image from a ``.npy`` or TIFF file (the first plane of a stack)."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: the sample image does not exist")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            import tifffile

            arr = tifffile.imread(p, key=0)
    except Exception as exc:  # numpy and tifffile raise many kinds for files they cannot read
        raise ExportError(f"{p}: cannot read the sample image ({exc}); give a .npy or TIFF file of one channel") from exc
    arr = np.squeeze(np.asarray(arr))
    while arr.ndim > 2:
        arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ExportError(f"{p}: the sample image must be a 2-D grayscale image, got shape {arr.shape} of {arr.dtype}")
    return arr.astype(np.float32)


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` centre crop of ``tile``, reflect-padded where it is smaller."""
    out = tile
    for axis in (0, 1):
        n = out.shape[axis]
        if n >= size:
            start = (n - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
        else:
            pad = [(0, 0), (0, 0)]
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            out = np.pad(out, pad, mode="reflect" if n > 1 else "edge")
    return np.ascontiguousarray(out, dtype=np.float32)
