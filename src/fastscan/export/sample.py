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


def _test_tile(
    sample: str | os.PathLike | np.ndarray | None, meta: Mapping[str, Any], size: int, norm_lr: Sequence[float], *, frames: int = 1
) -> tuple[np.ndarray, str]:
    """The ``size`` x ``size`` raw test tile and where it comes from, for the README.

    A generator with temporal context (``frames`` > 1) gets a ``(frames, size, size)`` window of
    consecutive registered frames, the restored one in the middle: a window of the dataset store,
    the first planes of a sample stack, or one image repeated (the window of a one-frame series,
    whose neighbours are reflected onto itself).
    """
    if isinstance(sample, np.ndarray):
        raw, test_source = _window(np.asarray(sample, np.float32), frames, "the image given to the export"), "a tile of the image given to the export"
    elif sample is not None:
        raw, test_source = _window(_read_sample(sample, frames), frames, str(sample)), f"a tile of {Path(sample).name}"
    else:
        raw, test_source = _dataset_tile(meta, frames), "the most textured validation tile of the training dataset"
        if raw is None:
            raw = _window(_synthetic_tile(size, *norm_lr), frames, "the synthetic texture")
            test_source = "a synthetic smooth texture over the model's LR range (no dataset store was at hand)"
    if frames > 1:
        repeated = bool(np.all(raw == raw[:1]))
        test_source += f", as a window of {frames} frames" + (" (one image repeated, as a one-frame series is reflected)" if repeated else "")
    return (_fit(raw, size) if raw.ndim == 2 else np.stack([_fit(f, size) for f in raw])), test_source


def as_batch(x: np.ndarray) -> np.ndarray:
    """A test tile ``(Y, X)`` or temporal window ``(frames, Y, X)`` as the network's ``(1, C, Y, X)`` batch."""
    return x[None] if x.ndim == 3 else x[None, None]


def _window(image: np.ndarray, frames: int, what: str) -> np.ndarray:
    """``image`` as the model's input: a 2-D image, or for ``frames`` > 1 a ``(frames, Y, X)``
    window as restoration builds it (:func:`fastscan.restore.temporal.temporal_stack`): a 2-D
    image is a one-frame series, repeated; a stack gives the window of its frame ``frames // 2``,
    its first ``frames`` planes."""
    from fastscan.restore.temporal import lone_frame_window, temporal_stack

    if frames == 1:
        if image.ndim != 2:
            raise ExportError(f"{what}: the sample must be a 2-D image for a one-frame generator, got shape {image.shape}")
        return image
    if image.ndim == 2:
        return lone_frame_window(image, frames)
    if image.ndim != 3 or len(image) < frames:
        raise ExportError(
            f"{what}: the sample must be a 2-D image or a stack of at least {frames} frames (the model's temporal window), got shape {image.shape}"
        )
    return temporal_stack(image[:frames], [frames // 2], frames=frames)[0]


def _dataset_tile(meta: Mapping[str, Any], frames: int = 1) -> np.ndarray | None:
    """The most textured of the first validation tiles of the model's dataset store (raw LR
    intensities, in the model's input geometry), or None when the store is not at hand; for
    ``frames`` > 1 its temporal window ``(frames, Y, X)``, as training cut it."""
    import zarr

    path = (meta.get("dataset") or {}).get("path")
    if not path or not Path(path).is_dir():
        return None
    try:
        from fastscan.dataset import read_dataset, temporal_windows

        group, tiles, _ = read_dataset(path)
        val = tiles["split"] == "val"
        # With temporal context, tiles of the frame whose window is the first unreflected one.
        inner = val & (tiles["frame"] == frames // 2) if frames > 1 else val
        rows = tiles.index[inner].tolist()[:64] or tiles.index[val].tolist()[:64] or tiles.index.tolist()[:64]
        if not rows:
            return None
        lr = group["lr"]
        stack = np.stack([np.asarray(lr[int(i)], dtype=np.float32) for i in rows])
        best = rows[int(np.argmax(stack.reshape(len(stack), -1).std(axis=1)))]
        if frames == 1:
            return np.asarray(lr[int(best)], dtype=np.float32)
        # Windows over the whole table: rows are the store's, and a window never leaves its FOV.
        window = temporal_windows(tiles.reset_index(drop=True), frames)[tiles.index.get_loc(best)]
        return np.stack([np.asarray(lr[int(tiles.index[j])], dtype=np.float32) for j in window])
    except (OSError, KeyError, ValueError, zarr.errors.BaseZarrError) as exc:
        log.warning("%s: cannot read a test tile from the dataset store (%s); using a synthetic one", path, exc)
        return None


def _synthetic_tile(size: int, low: float, high: float, seed: int = 0) -> np.ndarray:
    """A smooth random texture over the model's LR range (raw intensities)."""
    from scipy import ndimage as ndi

    texture = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return (low + texture * (high - low)).astype(np.float32)


def _read_sample(path: str | os.PathLike, frames: int = 1) -> np.ndarray:
    """A 2-D image from a ``.npy`` or TIFF file (the first plane of a stack); for ``frames`` > 1
    a stack's first ``frames`` planes, or its one 2-D image."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: the sample image does not exist")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            import tifffile

            with tifffile.TiffFile(p) as tif:
                pages = len(tif.series[0].pages) if tif.series else 1
                arr = tif.asarray(key=0 if frames == 1 else range(min(frames, pages)))
    except Exception as exc:  # numpy and tifffile raise many kinds for files they cannot read
        raise ExportError(f"{p}: cannot read the sample image ({exc}); give a .npy or TIFF file of one channel") from exc
    arr = np.squeeze(np.asarray(arr))
    if not np.issubdtype(arr.dtype, np.number):
        raise ExportError(f"{p}: the sample image must be numeric, got {arr.dtype}")
    if frames == 1:
        while arr.ndim > 2:
            arr = arr[0]
    elif arr.ndim > 3 or (arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4):
        # A (T, C, Y, X) file or a colour image (Y, X, 3): neither is a series of one channel.
        raise ExportError(f"{p}: the sample must be one channel's frames (T, Y, X) or one 2-D image for a {frames}-frame model, got shape {arr.shape}")
    if arr.ndim < 2:  # above, a one-frame model's sample was cut to 2-D and a stack's to 3-D
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
