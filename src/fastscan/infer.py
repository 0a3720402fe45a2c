"""Tiled restoration: FOV series for evaluation and whole slides into OME-Zarr.

Tiles overlap and are blended with a smooth window, so tile borders leave no seams; the input is
read with a halo (reflection-padded at the image border) as CSBDeep's tiled prediction does.
Whole slides are read lazily and written region by region, so memory does not grow with the slide.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr

from fastscan.atomic import atomic_path

log = logging.getLogger(__name__)


def blend_window(size: int, overlap: int, *, margin: int | None = None) -> np.ndarray:
    """1-D blending weights of one tile: 0 on the outer ``margin`` px, a raised-cosine ramp over the
    rest of the ``overlap``, 1 in the middle.

    The outer ``margin`` of a tile sees zero padding inside the network, so it is discarded
    (CSBDeep crops the halo for the same reason); the ramps of two neighbours overlapping by
    ``overlap`` px add up to exactly 1, so blending never changes intensities and leaves no seam.
    ``margin`` defaults to a quarter of the overlap.
    """
    if margin is None:
        margin = overlap // 4
    if overlap and not 0 <= 2 * margin < overlap:
        raise ValueError(f"margin {margin} must be less than half the overlap {overlap}")
    w = np.ones(size, dtype=np.float32)
    if overlap > 0:
        n = overlap - 2 * margin
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n)
        edge = np.concatenate([np.zeros(margin, np.float32), ramp, np.ones(margin, np.float32)])
        w[:overlap] = edge
        w[size - overlap :] = edge[::-1]
    return w


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of ``tile`` px stepping ``tile - overlap`` over a padded axis."""
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    n = max(1, math.ceil((size - overlap) / step))
    return [i * step for i in range(n)]


def _batches(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def predict_image(
    model,
    image: np.ndarray,
    *,
    scale: int,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    device: str = "cpu",
) -> np.ndarray:
    """Restore one normalised 2-D LR image with overlapping, blended tiles.

    Parameters
    ----------
    model : torch.nn.Module
        Generator mapping ``(N, 1, t, t)`` LR tiles to ``(N, 1, scale*t, scale*t)``.
    image : ndarray, shape (Y, X)
        Normalised LR image.
    scale : int
    tile, overlap : int
        LR tile size and overlap between neighbouring tiles (LR px).
    batch_size : int
    device : str

    Returns
    -------
    ndarray, shape (scale*Y, scale*X), float32
    """
    import torch

    image = np.asarray(image, dtype=np.float32)
    ny, nx = image.shape
    tile = min(tile, max(ny, nx) + 2 * overlap)
    # The halo of ``overlap`` px on each side puts the outer ramps of the border tiles into the
    # (reflected) padding, so every image pixel is blended exactly like an interior one.
    sy, sx = tile_starts(ny + 2 * overlap, tile, overlap), tile_starts(nx + 2 * overlap, tile, overlap)
    py = sy[-1] + tile - ny - overlap
    px = sx[-1] + tile - nx - overlap
    padded = np.pad(image, ((overlap, py), (overlap, px)), mode="reflect" if min(ny, nx) > max(overlap, py, px) else "symmetric")
    out = np.zeros((scale * padded.shape[0], scale * padded.shape[1]), dtype=np.float32)
    weight = np.zeros_like(out)
    win1 = blend_window(scale * tile, scale * overlap)
    win = np.outer(win1, win1)
    coords = [(y, x) for y in sy for x in sx]
    model.eval()
    with torch.inference_mode():
        for batch in _batches(coords, batch_size):
            x_t = torch.from_numpy(np.stack([padded[y : y + tile, x : x + tile] for y, x in batch])[:, None]).to(device)
            pred = model(x_t).float().cpu().numpy()[:, 0]
            for (y, x), p in zip(batch, pred):
                out[scale * y : scale * (y + tile), scale * x : scale * (x + tile)] += p * win
                weight[scale * y : scale * (y + tile), scale * x : scale * (x + tile)] += win
    # Weights sum to 1 everywhere inside the halo; the guard only matters in the discarded padding.
    out /= np.maximum(weight, 1e-6)
    o = scale * overlap
    return out[o : o + scale * ny, o : o + scale * nx]


def restore_fov(
    registered: str | os.PathLike,
    out: str | os.PathLike,
    *,
    models: dict[str, str | os.PathLike],
    frames: int = 2,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    device: str = "cpu",
    threads: int | None = None,
    classical: bool = True,
) -> dict[str, Any]:
    """Restore the first ``frames`` frames of a registered FOV with each model, for evaluation.

    Parameters
    ----------
    registered : path-like
        Registered FOV store.
    out : path-like
        Restored FOV store (written atomically), see docs/architecture.md.
    models : dict
        Method name (``mse``, ``gan``) -> model directory. All must share one normalisation.
    classical : bool
        Also store the classical cascade (:func:`fastscan.classical.restore_classical`) with the
        line phase and field fraction registration fitted for this FOV, as method ``classical``.
    """
    import torch

    from fastscan.dataset import normalise
    from fastscan.models import load_generator

    if threads:
        torch.set_num_threads(int(threads))
    g = zarr.open_group(str(registered), mode="r")
    attrs = dict(g.attrs.get("fastscan", {}))
    n = min(int(frames), g["lr"].shape[0])
    loaded = {name: load_generator(path, device=device) for name, path in models.items()}
    norms = {name: meta["normalisation"] for name, (_, meta) in loaded.items()}
    norm = next(iter(norms.values()))
    if any(v["lr"] != norm["lr"] or v["hr"] != norm["hr"] for v in norms.values()):
        raise ValueError(f"models {list(models)} were trained with different normalisations; compare models of one dataset")
    scale = int(next(iter(loaded.values()))[1]["scale"])
    lr = normalise(g["lr"][:n], *norm["lr"])
    hr = normalise(g["hr"][...], *norm["hr"])
    meta = {
        "kind": "restored_fov",
        "frames": list(range(n)),
        "methods": (["classical"] if classical else []) + list(models),
        "scale": scale,
        "normalisation": norm,
        "models": {k: str(v) for k, v in models.items()},
        "source": str(registered),
        **{k: attrs[k] for k in ("sample", "session", "fov", "lr_pixel_size_um", "hr_pixel_size_um") if k in attrs},
    }
    with atomic_path(out) as tmp:
        og = zarr.open_group(tmp, mode="w")
        og.create_array("lr", data=lr, chunks=(1,) + lr.shape[1:])
        og.create_array("hr", data=hr)
        if classical:
            from fastscan.classical import restore_classical

            reg = attrs.get("registration", {})
            pred = restore_classical(
                lr, line_phase_px=float(reg.get("line_phase_px", 0.0)), field_fraction=float(reg.get("field_fraction", 0.0)), scale=scale
            )
            og.create_array("classical", data=pred, chunks=(1,) + pred.shape[1:])
        for name, (model, _) in loaded.items():
            t0 = time.time()
            pred = np.stack(
                [predict_image(model, f, scale=scale, tile=tile, overlap=overlap, batch_size=batch_size, device=device) for f in lr]
            )
            og.create_array(name, data=pred, chunks=(1,) + pred.shape[1:])
            log.info("restored %d frame(s) of %s with %s in %.1f s", n, registered, name, time.time() - t0)
        og.attrs["fastscan"] = meta
    return meta


def _regions(shape: tuple[int, int], chunk: int) -> list[tuple[int, int, int, int]]:
    return [(y, min(y + chunk, shape[0]), x, min(x + chunk, shape[1])) for y in range(0, shape[0], chunk) for x in range(0, shape[1], chunk)]


def _read_with_halo(arr, y0: int, y1: int, x0: int, x1: int, halo: int) -> tuple[np.ndarray, int, int]:
    """Read ``arr[y0:y1, x0:x1]`` plus ``halo`` px of context, reflected at the slide border."""
    ny, nx = arr.shape
    ry0, ry1, rx0, rx1 = max(0, y0 - halo), min(ny, y1 + halo), max(0, x0 - halo), min(nx, x1 + halo)
    block = np.asarray(arr[ry0:ry1, rx0:rx1], dtype=np.float32)
    pad = ((halo - (y0 - ry0), halo - (ry1 - y1)), (halo - (x0 - rx0), halo - (rx1 - x1)))
    if any(p for pair in pad for p in pair):
        mode = "reflect" if min(block.shape) > halo else "symmetric"
        block = np.pad(block, pad, mode=mode)
    return block, halo, halo


def restore_slide(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike,
    channel: int | None = 0,
    level: int = 0,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    region: int = 512,
    pyramid_levels: int = 3,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Restore a whole slide region by region into an OME-Zarr multiscale image.

    Parameters
    ----------
    path : path-like
        Slide (TIFF/OME-TIFF/SVS/OIB/Zarr), read lazily.
    out : path-like
        ``.ome.zarr`` to write; written into a temporary sibling and renamed at the end.
    model_dir : path-like
        Trained model directory (``generator.pth`` + ``model.json``).
    region : int
        LR size of the square regions processed at once (bounds memory); output chunks are
        ``scale * region``.
    pyramid_levels : int
        Number of resolution levels (each halves the previous one).
    """
    import torch
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    from fastscan.dataset import normalise
    from fastscan.io import open_slide
    from fastscan.models import load_generator

    if threads:
        torch.set_num_threads(int(threads))
    model, meta = load_generator(model_dir, device=device)
    scale = int(meta["scale"])
    slide, smeta = open_slide(path, channel=channel, level=level)
    ny, nx = slide.shape
    chunk = scale * region
    prov = {
        "kind": "restored_slide",
        "input": str(path),
        "model": str(model_dir),
        "channel": channel,
        "level": level,
        "scale": scale,
        "input_pixel_size_um": smeta.get("pixel_size_um"),
        "tile": tile,
        "overlap": overlap,
        "region": region,
        "normalisation": meta["normalisation"],
    }
    with atomic_path(out) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        level0 = root.create_array("0", shape=(scale * ny, scale * nx), chunks=(chunk, chunk), dtype="float32")
        regions = _regions((ny, nx), region)
        t0 = time.time()
        for i, (y0, y1, x0, x1) in enumerate(regions):
            block, oy, ox = _read_with_halo(slide, y0, y1, x0, x1, overlap)
            pred = predict_image(
                model, normalise(block, *meta["normalisation"]["lr"]), scale=scale, tile=tile, overlap=overlap, batch_size=batch_size, device=device
            )
            level0[scale * y0 : scale * y1, scale * x0 : scale * x1] = pred[
                scale * oy : scale * (oy + y1 - y0), scale * ox : scale * (ox + x1 - x0)
            ]
            if (i + 1) % max(1, len(regions) // 10) == 0 or i + 1 == len(regions):
                log.info("slide %s: %d/%d regions restored (%.1f s)", path, i + 1, len(regions), time.time() - t0)
        # Each pyramid level is the 2x2 mean of the one below, computed region by region.
        prev = level0
        for lev in range(1, pyramid_levels):
            shape = (prev.shape[0] // 2, prev.shape[1] // 2)
            if min(shape) < 1:
                break
            arr = root.create_array(str(lev), shape=shape, chunks=(chunk, chunk), dtype="float32")
            for y0, y1, x0, x1 in _regions(shape, chunk):
                src = np.asarray(prev[2 * y0 : 2 * y1, 2 * x0 : 2 * x1])
                arr[y0:y1, x0:x1] = src.reshape(y1 - y0, 2, x1 - x0, 2).mean(axis=(1, 3))
            prev = arr
        in_px = smeta.get("pixel_size_um") or [1.0, 1.0]
        datasets = [
            {"path": k, "coordinateTransformations": [{"type": "scale", "scale": [in_px[0] / scale * 2 ** int(k), in_px[1] / scale * 2 ** int(k)]}]}
            for k in sorted(root.array_keys(), key=int)
        ]
        axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
        write_multiscales_metadata(root, datasets, fmt=FormatV05(), axes=axes, name=Path(path).stem)
        root.attrs["fastscan"] = prov
    return prov

