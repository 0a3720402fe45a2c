"""Video-rate series into OME-Zarr ``(t, y, x)`` images (rule ``restore_series``).

:func:`restore_series` restores a ``(T, Y, X)`` series in frame batches, after the model's input
geometry has been applied; each batch is written and marked done as soon as it is restored, so a
killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from fastscan.lock import output_lock
from fastscan.restore.engine import TileEngine, check_ensemble
from fastscan.restore.ngff import _finish_image, _versions
from fastscan.restore.prepare import _load_model
from fastscan.restore.receptive import model_tiling
from fastscan.restore.resumable import _done_keys, _inputs, _open_partial, _overlap_io, _Progress, _publish, _run_units, check_restore_output
from fastscan.restore.temporal import temporal_stack
from fastscan.restore.tiling import _pad

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)


def restore_series(
    lr: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    channel: int = 0,
    max_frames: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    frames_per_chunk: int = 8,
    pyramid_levels: int = 3,
    device: str = "cpu",
    precision: str = "auto",
    compile: str = "off",
    ensemble: str = "none",
    threads: int | None = None,
    pixel_size_um: float | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict[str, Any]:
    """Restore a video-rate series frame batch by frame batch into an OME-Zarr ``(t, y, x)`` image.

    The raw frames are put into the model's input geometry first
    (:func:`fastscan.geometry.prepare_frames`: line phase estimated from the series, resonant
    warp undone with the model's field fraction; nothing for a model without a geometry
    section), then normalised with the model's statistics exactly as in training. The tiles of
    ``frames_per_chunk`` frames share batches; each batch of frames is written, and marked done,
    as soon as it is restored, so a killed run resumes where it stopped.

    Parameters
    ----------
    lr : path-like
        Series (multi-page TIFF/OME-TIFF, OIB/OIF or a glob of frames), read whole.
    out : path-like
        ``.ome.zarr`` to write (via ``OUT.partial``, renamed when complete).
    model_dir, generator
        As in :func:`fastscan.restore.slide.restore_slide`.
    channel : int
        Channel of multi-channel files.
    max_frames : int, optional
        Restore only the first frames.
    tile, overlap, batch_size, device, precision, compile, threads
        As in :func:`fastscan.restore.slide.restore_slide` (a series has no earlier plan to take
        the tiling from: a resumed series decides it again, the same way).
    ensemble : {"none", "flips"}
        ``restore.ensemble`` (:class:`fastscan.restore.engine.TileEngine`); part of the plan, so a
        resumed series is finished the same way.
    frames_per_chunk : int
        Frames per work unit (restored, written and marked together).
    pyramid_levels : int
        Resolution levels over y and x (t is never downsampled).
    pixel_size_um : float, optional
        LR pixel size when the file records none.
    overwrite, wait : bool
        As in :func:`fastscan.restore.slide.restore_slide`.

    Returns
    -------
    dict
        Provenance written to the ``fastscan`` attribute.
    """
    check_restore_output(out, kind="restored_series", inputs=_inputs(lr, model_dir), overwrite=overwrite)
    with output_lock(out, wait=wait, what="restore_series"):
        return _restore_series(
            lr,
            out,
            model_dir=model_dir,
            generator=generator,
            channel=channel,
            max_frames=max_frames,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            frames_per_chunk=frames_per_chunk,
            pyramid_levels=pyramid_levels,
            device=device,
            precision=precision,
            compile=compile,
            ensemble=ensemble,
            threads=threads,
            pixel_size_um=pixel_size_um,
            progress=progress,
        )


def _restore_series(
    lr,
    out,
    *,
    model_dir,
    generator,
    channel,
    max_frames,
    tile,
    overlap,
    batch_size,
    frames_per_chunk,
    pyramid_levels,
    device,
    precision,
    compile,
    ensemble,
    threads,
    pixel_size_um,
    progress,
) -> dict[str, Any]:
    import torch

    from fastscan.dataset import normalise
    from fastscan.geometry import prepare_frames
    from fastscan.io import read_series
    from fastscan.models import model_frames

    if threads:
        torch.set_num_threads(int(threads))
    raw, smeta = read_series(lr, channel=channel)
    if max_frames:
        raw = raw[: int(max_frames)]
    model, meta, desc = _load_model(model_dir, generator, device=device)
    # The geometry is fitted to the raw intensities, before normalisation, as in training.
    frames = normalise(prepare_frames(raw, meta), *meta["normalisation"]["lr"])
    del raw
    tiling = model_tiling(model, meta, scale=int(meta["scale"]), tile=tile, overlap=overlap, device=device)
    ensemble = check_ensemble(ensemble, meta, model_dir=desc["path"] or type(model).__name__)
    engine = TileEngine(
        model, scale=int(meta["scale"]), tiling=tiling, batch_size=batch_size, device=device, precision=precision, compile=compile, ensemble=ensemble
    )
    px = smeta.get("pixel_size_um") or ([float(pixel_size_um)] * 2 if pixel_size_um else None)
    plan = _series_plan(
        lr, frames, desc=desc, engine=engine, channel=channel, frames_per_chunk=frames_per_chunk, precision=precision, pyramid_levels=pyramid_levels, px=px
    )
    partial, _ = _open_partial(out, plan, _create_series_store(plan))
    # A generator with temporal context restores each frame from its window of neighbours,
    # reflected at the ends of the series as in training.
    window = model_frames(meta)
    drift = _series_drift(frames, window, lr=lr)
    stats = _restore_frame_batches(plan, engine, frames, window=window, drift=drift, partial=partial, lr=lr, progress=progress)
    prov = _series_provenance(lr, plan, meta=meta, desc=desc, window=window, stats=stats)
    s, px = plan["scale"], plan["input_pixel_size_um"]
    axes = [{"name": "t", "type": "time"}, {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    _finish_image(
        partial,
        axes=axes,
        pixel_size=[p / s for p in px] if px else None,
        pyramid_levels=pyramid_levels,
        name=Path(str(lr)).stem,
        provenance=prov,
    )
    _publish(out)
    log.info("wrote %s", out)
    return prov


def _series_plan(
    lr: str | os.PathLike,
    frames: np.ndarray,
    *,
    desc: Mapping[str, Any],
    engine: TileEngine,
    channel: int,
    frames_per_chunk: int,
    precision: str,
    pyramid_levels: int,
    px: Sequence[float] | None,
) -> dict[str, Any]:
    """What the restoration of ``frames`` writes and how; a partial store with the same plan is resumed."""
    n_t, ny, nx = frames.shape
    s = engine.scale
    return {
        "format": "fastscan-restore/1",
        "kind": "series",
        "input": {"path": str(lr), "digest": hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()},
        "model": desc,
        "channel": int(channel),
        "lr_shape": [n_t, ny, nx],
        "scale": s,
        "tile": engine.tile,
        "overlap": engine.overlap,
        "tile_shape": list(engine.tile_shape((ny, nx))),
        "frames_per_chunk": max(1, int(frames_per_chunk)),
        "chunk": min(1024, s * max(ny, nx)),
        "precision": precision,
        "ensemble": engine.ensemble,
        "pyramid_levels": int(pyramid_levels),
        "input_pixel_size_um": px,
    }


def _create_series_store(plan: Mapping[str, Any]) -> Callable[[zarr.Group], None]:
    def create(root: zarr.Group) -> None:
        s, (n_t, ny, nx), chunk = plan["scale"], plan["lr_shape"], plan["chunk"]
        root.create_array(
            "0",
            shape=(n_t, s * ny, s * nx),
            chunks=(1, min(chunk, s * ny), min(chunk, s * nx)),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=("t", "y", "x"),
        )

    return create


def _series_drift(frames: np.ndarray, window: int, *, lr: str | os.PathLike) -> np.ndarray | None:
    """Drift of every frame for the temporal windows of ``window`` frames; None for single frames."""
    if not (window > 1 and len(frames) > 1):
        return None
    from fastscan.register import estimate_drift

    # Training windows came from registered frames: the neighbours are moved onto each
    # restored frame the same way (a rigid drift of the whole field; what moves within the
    # field stays for the network, which learnt to restore the centre frame).
    drift = estimate_drift(frames, iterations=1)
    log.info("%s: drift of the series for its %d-frame windows: rms %.2f px", lr, window, float(np.sqrt(np.mean(np.sum(drift**2, axis=1)))))
    return drift


def _restore_frame_batches(
    plan: Mapping[str, Any],
    engine: TileEngine,
    frames: np.ndarray,
    *,
    window: int,
    drift: np.ndarray | None,
    partial: Path,
    lr: str | os.PathLike,
    progress: bool | None,
) -> dict[str, int]:
    """Restore the frame batches not yet done into level 0 of ``partial``; returns the counts."""
    n_t = plan["lr_shape"][0]
    fpc = plan["frames_per_chunk"]
    units = [(k,) for k in range(math.ceil(n_t / fpc))]
    done = _done_keys(partial, 1)
    todo = [u for u in units if u not in done]
    level0 = zarr.open_array(partial / "0", mode="r+")
    tile_shape = tuple(plan["tile_shape"])
    o = engine.overlap
    lead = ((0, 0),) if window > 1 else ()

    def read(key: tuple[int]) -> np.ndarray:
        return temporal_stack(frames, range(key[0] * fpc, min(n_t, (key[0] + 1) * fpc)), frames=window, drift=drift)

    def compute(batch: np.ndarray) -> np.ndarray:
        return np.stack(engine.predict_blocks([_pad(f, (*lead, (o, o), (o, o))) for f in batch], tile_shape=tile_shape))

    def write(key: tuple[int], hr: np.ndarray) -> None:
        level0[key[0] * fpc : key[0] * fpc + hr.shape[0]] = hr

    log.info(
        "%s: %d frame(s) in %d batch(es) of %d (%d already done), tiles %s with %d px overlap, on %s in %s",
        lr,
        n_t,
        len(units),
        fpc,
        len(units) - len(todo),
        tile_shape,
        o,
        engine.device,
        plan["precision"],
    )
    bar = _Progress(len(units), desc=f"restoring {Path(str(lr)).name}", initial=len(units) - len(todo), enabled=progress)
    t0 = time.monotonic()
    try:
        _run_units(todo, read=read, compute=compute, write=write, partial=partial, progress=bar, background=_overlap_io(engine.device))
    finally:
        bar.close()
    log.info("%s: restored %d frame batch(es) in %.1f s (%d were already done)", lr, len(todo), time.monotonic() - t0, len(units) - len(todo))
    return {"units": len(units), "computed": len(todo), "skipped": len(units) - len(todo)}


def _series_provenance(
    lr: str | os.PathLike,
    plan: Mapping[str, Any],
    *,
    meta: Mapping[str, Any],
    desc: Mapping[str, Any],
    window: int,
    stats: Mapping[str, int],
) -> dict[str, Any]:
    """The ``fastscan`` attribute of the restored series."""
    from fastscan.geometry import model_geometry

    s, px = plan["scale"], plan["input_pixel_size_um"]
    return {
        "kind": "restored_series",
        "input": str(lr),
        "model": desc["path"],
        "model_digest": desc["digest"],
        "channel": plan["channel"],
        "frames": plan["lr_shape"][0],
        "scale": s,
        "input_pixel_size_um": px,
        "pixel_size_um": [p / s for p in px] if px else None,
        "geometry": model_geometry(meta),
        "temporal_window": window,
        "tile": plan["tile"],
        "overlap": plan["overlap"],
        "tile_shape": plan["tile_shape"],
        "precision": plan["precision"],
        "ensemble": plan["ensemble"],
        "normalisation": meta["normalisation"],
        "stats": dict(stats),
        "versions": _versions(),
    }
