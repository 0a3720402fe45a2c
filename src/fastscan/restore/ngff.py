"""OME-Zarr (NGFF 0.5) images of restorations: pyramid levels, multiscales and OMERO metadata.

The one writer of restored OME-Zarr images: slides and series fill level 0 of ``OUT.partial``,
:func:`_finish_image` adds the rest, and :func:`fastscan.restore.resumable._publish` renames it
into place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr


def _downsample_level(prev: zarr.Array, arr: zarr.Array) -> None:
    """``arr`` = 2x2 mean of ``prev`` over the last two axes, one output chunk at a time."""
    lead = prev.shape[:-2]
    ny, nx = arr.shape[-2:]
    cy, cx = arr.chunks[-2:]
    for idx in np.ndindex(*lead) if lead else [()]:
        for y0 in range(0, ny, cy):
            for x0 in range(0, nx, cx):
                y1, x1 = min(ny, y0 + cy), min(nx, x0 + cx)
                src = np.asarray(prev[idx + (slice(2 * y0, 2 * y1), slice(2 * x0, 2 * x1))], dtype=np.float32)
                arr[idx + (slice(y0, y1), slice(x0, x1))] = src.reshape(y1 - y0, 2, x1 - x0, 2).mean(axis=(1, 3))


def _finish_image(
    path: Path,
    *,
    axes: list[dict[str, str]],
    pixel_size: Sequence[float] | None,
    pyramid_levels: int,
    name: str,
    provenance: dict[str, Any],
) -> None:
    """Complete the OME-Zarr image at ``path`` whose level 0 is written: the pyramid above it, the
    NGFF multiscales and OMERO metadata, and ``provenance`` as the ``fastscan`` attribute.

    ``pixel_size`` is the level-0 size (µm) of the last two axes, or None when the input does not
    record one (the transforms are then in input pixels and the axes carry no unit).
    """
    root = zarr.open_group(path, mode="r+", zarr_format=3)
    keys = _write_pyramid(root, path, pyramid_levels)
    _write_metadata(root, keys, axes=axes, pixel_size=pixel_size, name=name, provenance=provenance)


def _write_pyramid(root: zarr.Group, path: Path, pyramid_levels: int) -> list[str]:
    """Levels 1 .. ``pyramid_levels - 1``, each the 2x2 mean of the one below (while they hold a
    pixel), and no level above them; returns the paths of all levels."""
    from fastscan.atomic import remove

    prev = root["0"]
    keys = ["0"]
    for lev in range(1, pyramid_levels):
        shape = prev.shape[:-2] + (prev.shape[-2] // 2, prev.shape[-1] // 2)
        if min(shape[-2:]) < 1:
            break
        arr = root.create_array(str(lev), shape=shape, chunks=prev.chunks, dtype="float32", dimension_names=prev.metadata.dimension_names, overwrite=True)
        _downsample_level(prev, arr)
        prev = arr
        keys.append(str(lev))
    # Levels left by an earlier finish with more levels; listing the group would trip over .progress.
    for stale in range(len(keys), 32):
        remove(path / str(stale))
    return keys


def _write_metadata(
    root: zarr.Group,
    keys: Sequence[str],
    *,
    axes: list[dict[str, str]],
    pixel_size: Sequence[float] | None,
    name: str,
    provenance: dict[str, Any],
) -> None:
    """NGFF 0.5 multiscales of the levels ``keys`` with OMERO rendering metadata, and the provenance."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    lead = len(root["0"].shape) - 2
    base = list(pixel_size) if pixel_size else [1.0 / provenance["scale"]] * 2
    datasets = [
        {"path": k, "coordinateTransformations": [{"type": "scale", "scale": [1.0] * lead + [base[0] * 2 ** int(k), base[1] * 2 ** int(k)]}]} for k in keys
    ]
    if not pixel_size:
        axes = [{key: value for key, value in a.items() if key != "unit"} for a in axes]
    omero = omero_metadata(root[keys[-1]], channels=provenance.get("channel") if axes[0]["name"] == "c" else None, name=name)
    write_multiscales_metadata(root, datasets, fmt=FormatV05(), axes=axes, name=name, metadata={"omero": omero})
    root.attrs["fastscan"] = json.loads(json.dumps(provenance, default=str))


#: OMERO colours of restored channels by channel index (the planes of an RGB slide show as red,
#: green and blue); a single plane is white.
OMERO_COLOURS = ("FF0000", "00FF00", "0000FF", "FF00FF", "00FFFF", "FFFF00")


#: Most pixels per channel read to find a store's intensity range for the OMERO window.
OMERO_SAMPLE_PIXELS = 1 << 22


def omero_metadata(level: zarr.Array, *, channels: Sequence[int] | None, name: str) -> dict[str, Any]:
    """OMERO rendering metadata of a restored store, so viewers open it with sensible contrast.

    The display window is 0..1 of the model's normalised HR units, the range between the training
    HR targets' low and high percentiles (``model.json`` ``normalisation.hr``); ``min`` and
    ``max`` (the slider's range) span that and the values found in ``level`` (the smallest
    pyramid level, sampled down to :data:`OMERO_SAMPLE_PIXELS` per channel).

    Parameters
    ----------
    level : zarr.Array
        ``(C, Y, X)`` with ``channels`` (one index per plane), else ``(Y, X)`` or ``(T, Y, X)``.
    channels : sequence of int or None
        Input channel of each plane of a ``c`` axis; None for one plane.
    name : str
    """
    planes = list(channels) if channels is not None else [None]
    step = max(1, math.ceil(math.sqrt(level.shape[-2] * level.shape[-1] / OMERO_SAMPLE_PIXELS)))
    out = []
    for i, ch in enumerate(planes):
        lead = (i,) if channels is not None else ((0,) if level.ndim == 3 else ())
        sample = np.asarray(level[lead + (slice(None, None, step), slice(None, None, step))], dtype=np.float32)
        finite = sample[np.isfinite(sample)]
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        hi = max(1.0, float(finite.max())) if finite.size else 1.0
        out.append(
            {
                "label": "restored" if ch is None else f"channel {ch}",
                "color": "FFFFFF" if ch is None else OMERO_COLOURS[int(ch) % len(OMERO_COLOURS)],
                "active": True,
                "inverted": False,
                "coefficient": 1.0,
                "family": "linear",
                "window": {"min": lo, "max": hi, "start": 0.0, "end": 1.0},
            }
        )
    return {"name": name, "channels": out, "rdefs": {"model": "greyscale" if channels is None else "color", "defaultT": 0, "defaultZ": 0}}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("fastscan", "torch", "zarr", "ome-zarr"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out
