"""Whole slides into OME-Zarr multiscale images.

:func:`restore_slide` reads a slide lazily, chunk-aligned region by region, and writes each
region's chunks of the OME-Zarr image as soon as it is restored, so memory is bounded by the
region size and never by the slide. The work goes into ``OUT.partial`` with one marker per
finished region: a killed run resumes from the markers, and only :func:`finalize_slide` renames
the store into place. :func:`prepare_slide`, ``restore_slide(part=...)`` and
:func:`finalize_slide` are the scatter/gather steps the workflow runs as separate jobs (rules
``restore_slide_plan``, ``restore_slide_part`` and ``restore_slide``).
"""

from __future__ import annotations

import json
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
from fastscan.restore import RestoreError
from fastscan.restore.engine import TileEngine, check_ensemble
from fastscan.restore.ngff import _finish_image, _versions
from fastscan.restore.prepare import _load_model
from fastscan.restore.receptive import model_tiling
from fastscan.restore.resumable import (
    _done_keys,
    _input_fingerprint,
    _inputs,
    _open_partial,
    _overlap_io,
    _partial,
    _Progress,
    _publish,
    _read_plan,
    _run_units,
    check_restore_output,
)
from fastscan.restore.tiling import _pad

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)


def parse_channels(spec: int | str | Sequence[int] | None) -> int | list[int] | str:
    """Channel selection of a slide: an index, a list of indices, or ``"all"``.

    Accepts what the slide sheet and the command line hold: ``0``, ``"2"``, ``"0,2"``, ``"all"``
    or a list. A single index gives a 2-D ``(y, x)`` output; a list or ``"all"`` gives
    ``(c, y, x)`` with every channel restored as its own grayscale plane.
    """
    if spec is None or spec == "":
        return 0
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError(f"channel must be 0 or more, got {spec}")
        return int(spec)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"channel must be an index, a comma-separated list of indices or 'all', got {spec!r}")
        return int(parts[0]) if len(parts) == 1 else [int(p) for p in parts]
    values = [int(v) for v in spec]
    if not values or min(values) < 0:
        raise ValueError(f"channel list must hold indices of 0 or more, got {spec!r}")
    return values


def _open_planes(path: str | os.PathLike, channels: int | list[int] | str, level: int) -> tuple[list, list[int] | None, dict[str, Any]]:
    """The slide's planes to restore, the channel list (None for a single 2-D plane) and metadata."""
    from fastscan.io import open_slide

    first = channels if isinstance(channels, int) else (channels[0] if isinstance(channels, list) else 0)
    plane, smeta = open_slide(path, channel=first, level=level)
    if isinstance(channels, int):
        return [plane], None, smeta
    chans = list(range(int(smeta["channels"]))) if channels == "all" else list(channels)
    planes = [plane if c == first else open_slide(path, channel=c, level=level)[0] for c in chans]
    return planes, chans, smeta


def _slide_units(plan: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    ny, nx = plan["lr_shape"]
    r = plan["region"]
    n_c = len(plan["channels"]) if plan["channels"] is not None else 1
    return [(c, iy, ix) for c in range(n_c) for iy in range(math.ceil(ny / r)) for ix in range(math.ceil(nx / r))]


def _part_units(units: Sequence, part: tuple[int, int] | None) -> list:
    """Units of part ``index`` of ``count``: contiguous runs, so each job reads neighbouring tiles."""
    if part is None:
        return list(units)
    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"part {index} does not exist among {count} parts")
    n = len(units)
    return list(units[index * n // count : (index + 1) * n // count])


def _slide_plan(
    path: str | os.PathLike,
    *,
    desc: Mapping[str, Any],
    engine: TileEngine,
    channels: list[int] | None,
    level: int,
    lr_shape: Sequence[int],
    region: int,
    pyramid_levels: int,
    precision: str,
    smeta: Mapping[str, Any],
) -> dict[str, Any]:
    ny, nx = lr_shape
    return {
        "format": "fastscan-restore/1",
        "kind": "slide",
        "input": _input_fingerprint(path),
        "model": dict(desc),
        "channels": channels,
        "level": int(level),
        "lr_shape": [int(ny), int(nx)],
        "scale": engine.scale,
        "tile": engine.tile,
        "overlap": engine.overlap,
        "tile_shape": list(engine.tile_shape((min(region, ny), min(region, nx)))),
        "region": int(region),
        "chunk": engine.scale * int(region),
        "precision": precision,
        "ensemble": engine.ensemble,
        "pyramid_levels": int(pyramid_levels),
        "input_pixel_size_um": smeta.get("pixel_size_um"),
    }


def _create_slide_store(plan: Mapping[str, Any]) -> Callable[[zarr.Group], None]:
    def create(root: zarr.Group) -> None:
        s, (ny, nx), chunk = plan["scale"], plan["lr_shape"], plan["chunk"]
        lead = (len(plan["channels"]),) if plan["channels"] is not None else ()
        # NaN marks chunks no region has written yet.
        root.create_array(
            "0",
            shape=lead + (s * ny, s * nx),
            chunks=(1,) * len(lead) + (chunk, chunk),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=("c", "y", "x") if lead else ("y", "x"),
        )

    return create


def _setup_slide(
    path,
    out,
    *,
    model_dir,
    generator,
    channel,
    level,
    tile,
    overlap,
    batch_size,
    region,
    pyramid_levels,
    device,
    precision,
    threads,
    part,
    compile="off",
    ensemble="none",
) -> tuple[dict[str, Any], TileEngine, list, dict[str, Any], Path, bool]:
    import torch

    from fastscan.models import model_frames

    if threads:
        torch.set_num_threads(int(threads))
    channels = parse_channels(channel)
    planes, chans, smeta = _open_planes(path, channels, level)
    model, meta, desc = _load_model(model_dir, generator, device=device)
    window = model_frames(meta)
    if window > 1:
        # A slide is a one-frame series: its window repeats the plane, as training does for a
        # one-frame FOV (fastscan.dataset.temporal_windows). A generator that learnt from
        # independent neighbouring frames then gets no second look at the noise.
        log.warning(
            "%s: model %s sees a window of %d frames of a video-rate series; a slide has none, so each region is restored "
            "from itself repeated %d times (as a one-frame series). A single-frame model (train.architecture.frames: 1) "
            "trained on slide-like pairs may do better",
            path,
            desc["path"] or type(model).__name__,
            window,
            window,
        )
    partial = _partial(out)
    old = _read_plan(partial)
    same_work = old is not None and old.get("model", {}).get("digest") == desc["digest"] and old.get("input") == _input_fingerprint(path)
    if part is not None:
        if not same_work:
            raise RestoreError(f"{partial}: no restoration of {path} with this model is set up; run the plan step (prepare_slide) before the parts")
        # Every part uses the tiling the plan step resolved, whatever was asked or this device would measure.
        tile = overlap = None
    # A resumed restoration keeps the tiling its finished regions were restored with, where none is asked.
    tiling = model_tiling(model, meta, scale=int(meta["scale"]), tile=tile, overlap=overlap, planned=old if same_work else None, device=device)
    ensemble = check_ensemble(ensemble, meta, model_dir=desc["path"] or type(model).__name__)
    engine = TileEngine(
        model, scale=int(meta["scale"]), tiling=tiling, batch_size=batch_size, device=device, precision=precision, compile=compile, ensemble=ensemble
    )
    plan = _slide_plan(
        path,
        desc=desc,
        engine=engine,
        channels=chans,
        level=level,
        lr_shape=planes[0].shape,
        region=region,
        pyramid_levels=pyramid_levels,
        precision=precision,
        smeta=smeta,
    )
    if part is not None and json.loads(json.dumps(plan)) != old:
        changed = sorted(k for k in plan if json.loads(json.dumps(plan[k])) != old.get(k))
        raise RestoreError(f"{partial}: was set up with other settings ({', '.join(changed)}); run the plan step again")
    partial, resumed = _open_partial(out, plan, _create_slide_store(plan))
    return plan, engine, planes, meta, partial, resumed


def _read_region(plane, plan: Mapping[str, Any], key: tuple[int, int, int], norm: Sequence[float]) -> np.ndarray:
    """Region ``key`` of ``plane`` with a halo of ``overlap`` px, reflected at the slide border."""
    from fastscan.dataset import normalise

    _, iy, ix = key
    r, o = plan["region"], plan["overlap"]
    ny, nx = plane.shape
    y0, x0 = iy * r, ix * r
    y1, x1 = min(ny, y0 + r), min(nx, x0 + r)
    ry0, ry1, rx0, rx1 = max(0, y0 - o), min(ny, y1 + o), max(0, x0 - o), min(nx, x1 + o)
    block = np.asarray(plane[ry0:ry1, rx0:rx1].compute(scheduler="synchronous"))
    block = normalise(block, *norm)
    return _pad(block, ((o - (y0 - ry0), o - (ry1 - y1)), (o - (x0 - rx0), o - (rx1 - x1))))


def _restore_slide_units(
    plan: Mapping[str, Any], engine: TileEngine, planes: list, meta: Mapping[str, Any], partial: Path, units: Sequence, *, path, progress: bool | None
) -> dict[str, int]:
    from fastscan.models import model_frames
    from fastscan.restore.temporal import lone_frame_window

    done = _done_keys(partial, 3)
    todo = [u for u in units if u not in done]
    level0 = zarr.open_array(partial / "0", mode="r+")
    s, r = plan["scale"], plan["region"]
    ny, nx = plan["lr_shape"]
    stacked = plan["channels"] is not None
    tile_shape = tuple(plan["tile_shape"])
    norm = meta["normalisation"]["lr"]
    window = model_frames(meta)

    def write(key: tuple[int, int, int], hr: np.ndarray) -> None:
        c, iy, ix = key
        sl = (slice(s * iy * r, s * min(ny, (iy + 1) * r)), slice(s * ix * r, s * min(nx, (ix + 1) * r)))
        level0[((c,) + sl) if stacked else sl] = hr

    log.info(
        "%s: %d region(s) of %d LR px (%d already done), tiles %s with %d px overlap, batch %s, on %s in %s",
        path,
        len(units),
        r,
        len(units) - len(todo),
        tile_shape,
        plan["overlap"],
        engine.batch_size or "auto",
        engine.device,
        plan["precision"],
    )
    bar = _Progress(len(units), desc=f"restoring {Path(path).name}", initial=len(units) - len(todo), enabled=progress)
    t0 = time.monotonic()
    try:
        _run_units(
            todo,
            read=lambda key: _read_region(planes[key[0]], plan, key, norm),
            compute=lambda block: engine.predict_blocks([lone_frame_window(block, window)], tile_shape=tile_shape)[0],
            write=write,
            partial=partial,
            progress=bar,
            background=_overlap_io(engine.device),
        )
    finally:
        bar.close()
    if todo:
        log.info("%s: restored %d region(s) in %.1f s (%d were already done)", path, len(todo), time.monotonic() - t0, len(units) - len(todo))
    return {"units": len(units), "computed": len(todo), "skipped": len(units) - len(todo)}


def slide_options(restore: Mapping[str, Any], *, batch: bool = True) -> dict[str, Any]:
    """Keyword arguments of :func:`restore_slide` / :func:`prepare_slide` from the config's
    ``restore`` section, so the single-job, plan and part jobs of a slide read it one way.

    ``batch=False`` leaves out ``batch_size`` and ``compile``, which only the jobs that compute
    take (:func:`prepare_slide` has neither). The device is not included: the plan job measures
    the tiling on the CPU, the others resolve ``restore.device``.
    """
    keys = ("level", "tile", "overlap", "region", "pyramid_levels", "precision") + (("batch_size", "compile") if batch else ())
    # restore.ensemble is in the plan, so the plan job and the parts take it alike; a config
    # section written before the key existed restores without it.
    return {**{k: restore[k] for k in keys}, "ensemble": restore.get("ensemble", "none")}


def prepare_slide(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    channel: int | str | Sequence[int] = 0,
    level: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
    region: int = 512,
    pyramid_levels: int = 3,
    device: str = "cpu",
    precision: str = "auto",
    ensemble: str = "none",
    threads: int | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict[str, Any]:
    """Set up (or keep, when resuming) ``OUT.partial`` for a scattered restoration.

    The scatter step of the workflow: it resolves the tiling once, so every part job uses the same
    one, and creates the empty level-0 array that the parts fill. Parameters are those of
    :func:`restore_slide`.

    Returns
    -------
    dict
        The plan (also stored as ``OUT.partial/.progress/plan.json``) plus ``regions`` (the number
        of work units) and ``resumed``.
    """
    check_restore_output(out, kind="restored_slide", inputs=_inputs(path, model_dir), overwrite=overwrite)
    with output_lock(out, wait=wait, what="restore_slide plan"):
        plan, *_, partial, resumed = _setup_slide(
            path,
            out,
            model_dir=model_dir,
            generator=generator,
            channel=channel,
            level=level,
            tile=tile,
            overlap=overlap,
            batch_size=1,
            region=region,
            pyramid_levels=pyramid_levels,
            device=device,
            precision=precision,
            ensemble=ensemble,
            threads=threads,
            part=None,
        )
    n = len(_slide_units(plan))
    log.info(
        "%s: %s %s, %d region(s) of %d px, tiles %s with %d px overlap",
        path,
        "resuming" if resumed else "set up",
        partial,
        n,
        plan["region"],
        plan["tile_shape"],
        plan["overlap"],
    )
    return {**plan, "regions": n, "resumed": resumed}


def restore_slide(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    channel: int | str | Sequence[int] = 0,
    level: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    region: int = 512,
    pyramid_levels: int = 3,
    device: str = "cpu",
    precision: str = "auto",
    compile: str = "off",
    ensemble: str = "none",
    threads: int | None = None,
    part: tuple[int, int] | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict[str, Any]:
    """Restore a whole slide region by region into an OME-Zarr multiscale image.

    Parameters
    ----------
    path : path-like
        Slide (TIFF/OME-TIFF/SVS/OIB/OIF/Zarr/OME-Zarr), read lazily region by region.
    out : path-like
        ``.ome.zarr`` to write. Work goes into ``OUT.partial`` and is renamed to ``out`` only when
        complete; a run that was killed continues from the regions already written, provided the
        input, model and settings are unchanged.
    model_dir : path-like, optional
        Trained model directory (``generator.pth`` + ``model.json``).
    generator : (torch.nn.Module, dict), optional
        A generator and its ``model.json`` content, instead of ``model_dir``.
    channel : int, str or list of int
        A channel index (2-D output), a list of indices or ``"all"`` (``(c, y, x)`` output, each
        channel restored as its own grayscale plane). RGB samples count as channels.
    level : int
        Pyramid level of the input (0 is full resolution).
    tile, overlap : int, optional
        Largest LR tile and tile overlap; None takes them from an earlier plan of this restoration,
        else from the generator (:func:`fastscan.restore.receptive.resolve_tiling`). Parts always
        use the plan's.
    batch_size : int, optional
        Tiles per forward pass (None: chosen for the device).
    region : int
        LR size of the square regions processed at once (bounds memory). Output chunks are
        ``scale * region`` px, so every region writes whole chunks.
    pyramid_levels : int
        Resolution levels, each halving the previous one.
    device : str
        A torch device (``cpu``, ``cuda:0``), not the config's ``auto``: callers resolve that
        (:func:`fastscan.train.resolve_device`); the CPU by default, so results do not depend on
        the machine.
    precision : {"auto", "float32", "bfloat16", "float16"}
    compile : {"off", "auto"}
        ``restore.compile``: ``auto`` runs the generator through ``torch.compile`` on CUDA
        (:func:`fastscan.restore.prepare.compile_generator`); speed only, never in the plan.
    ensemble : {"none", "flips"}
        ``restore.ensemble``: the flip self-ensemble of :class:`fastscan.restore.engine.TileEngine`;
        in the plan, so every part of a slide restores the same way.
    threads : int, optional
        CPU threads of torch.
    part : (int, int), optional
        Restore only part ``index`` of ``count`` (contiguous runs of regions) into the store set up
        by :func:`prepare_slide`, and stop; :func:`finalize_slide` completes it.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal; otherwise periodic log lines).
    overwrite : bool
        Replace a fastscan store of another restoration at ``out`` (never anything else: see
        :func:`fastscan.restore.resumable.check_restore_output`).
    wait : bool
        Wait for another restoration of the same ``out`` to finish instead of failing at once
        (:func:`fastscan.lock.output_lock`; part jobs share the lock with each other).

    Returns
    -------
    dict
        Provenance written to the ``fastscan`` attribute (without ``part``) or, with ``part``,
        the counts of regions: ``units``, ``computed``, ``skipped``.
    """
    check_restore_output(out, kind="restored_slide", inputs=_inputs(path, model_dir), overwrite=overwrite)
    what = f"restore_slide part {part[0]} of {part[1]}" if part is not None else "restore_slide"
    with output_lock(out, shared=part is not None, wait=wait, what=what):
        plan, engine, planes, meta, partial, _ = _setup_slide(
            path,
            out,
            model_dir=model_dir,
            generator=generator,
            channel=channel,
            level=level,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            region=region,
            pyramid_levels=pyramid_levels,
            device=device,
            precision=precision,
            threads=threads,
            part=part,
            compile=compile,
            ensemble=ensemble,
        )
        units = _part_units(_slide_units(plan), part)
        stats = _restore_slide_units(plan, engine, planes, meta, partial, units, path=path, progress=progress)
        if part is not None:
            return {**stats, "part": list(part)}
        return _finalize_slide(out, stats=stats)


def finalize_slide(out: str | os.PathLike, *, stats: Mapping[str, Any] | None = None, wait: bool = False) -> dict[str, Any]:
    """The gather step: check every region is written, build the pyramid, rename into place.

    Parameters
    ----------
    out : path-like
        The final ``.ome.zarr``; ``OUT.partial`` must hold a restoration whose regions are all done.
    stats : dict, optional
        Counts to record in the provenance.
    wait : bool
        Wait for part jobs still holding the lock of ``out`` instead of failing at once.

    Returns
    -------
    dict
        The provenance written to the ``fastscan`` attribute.
    """
    with output_lock(out, wait=wait, what="restore_slide gather"):
        return _finalize_slide(out, stats=stats)


def _finalize_slide(out: str | os.PathLike, *, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    partial = _partial(out)
    plan = _read_plan(partial)
    if plan is None:
        raise RestoreError(f"{partial}: no restoration in progress to finish (was it set up by the plan step?)")
    units = _slide_units(plan)
    missing = sorted(set(units) - _done_keys(partial, 3))
    if missing:
        raise RestoreError(f"{partial}: {len(missing)} of {len(units)} region(s) are not restored yet, e.g. {missing[:3]} (channel, row, column)")
    s = plan["scale"]
    px = plan["input_pixel_size_um"]
    prov = {
        "kind": "restored_slide",
        "input": plan["input"]["path"],
        "model": plan["model"]["path"],
        "model_digest": plan["model"]["digest"],
        "channel": plan["channels"] if plan["channels"] is not None else None,
        "level": plan["level"],
        "scale": s,
        "input_pixel_size_um": px,
        "pixel_size_um": [p / s for p in px] if px else None,
        "tile": plan["tile"],
        "overlap": plan["overlap"],
        "tile_shape": plan["tile_shape"],
        "region": plan["region"],
        "precision": plan["precision"],
        "ensemble": plan.get("ensemble", "none"),
        "normalisation": plan["model"]["normalisation"],
        "regions": len(units),
        "stats": dict(stats or {}),
        "versions": _versions(),
    }
    space = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    axes = ([{"name": "c", "type": "channel"}] if plan["channels"] is not None else []) + space
    _finish_image(
        partial,
        axes=axes,
        pixel_size=[p / s for p in px] if px else None,
        pyramid_levels=plan["pyramid_levels"],
        name=Path(plan["input"]["path"]).stem,
        provenance=prov,
    )
    _publish(out)
    log.info("wrote %s", out)
    return prov
