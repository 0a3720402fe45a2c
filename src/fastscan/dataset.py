"""Tiled LR/HR training datasets in Zarr, normalisation, and data loaders.

A dataset store holds raw intensities; the percentile normalisation (as in CSBDeep) is computed on
the training split only and stored in the attributes, so inference reuses exactly the same mapping.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from fastscan.atomic import atomic_path
from fastscan.stores import RegisteredStore, StoreError, read_registered

log = logging.getLogger(__name__)

TILE_COLUMNS = ["sample", "session", "fov", "frame", "y", "x", "split"]
#: The column of ``tiles.tsv`` that gives each tile's row of the ``hr`` array: every frame of a
#: FOV shares the HR target, so a position's HR tile is stored once, not once per frame.
HR_ROW = "hr_row"
#: How far (a factor either way) a training FOV's LR-per-HR intensity slope may lie from the
#: training FOVs' median before the dataset build warns (see :func:`intensity_outliers`).
INTENSITY_RELATION_FACTOR = 1.5


class DatasetError(ValueError):
    """A dataset cannot be built or read."""


@dataclass(frozen=True)
class FovEntry:
    """One registered FOV that contributes tiles."""

    path: str
    sample: str
    session: str
    fov: str
    split: str


def normalise(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (float32, not clipped)."""
    return ((np.asarray(x, dtype=np.float32) - np.float32(low)) / np.float32(max(high - low, 1e-6))).astype(np.float32)


def percentile_range(values: np.ndarray, *, low: float, high: float) -> list[float]:
    """Percentiles ``low`` and ``high`` of ``values`` as plain floats."""
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        raise DatasetError(f"intensity percentiles {low}/{high} coincide ({lo}); the training images are constant")
    return [float(lo), float(hi)]


def tile_origins(size: int, tile: int, stride: int) -> list[int]:
    """Origins of tiles of length ``tile`` every ``stride`` pixels; the last one touches the edge."""
    if tile > size:
        raise DatasetError(f"tile size {tile} is larger than the image ({size} px)")
    origins = list(range(0, size - tile + 1, stride))
    if origins[-1] != size - tile:
        origins.append(size - tile)
    return origins


@dataclass(frozen=True)
class _UsableFov:
    """A FOV that passed registration QC: its entry, its open store, its frames and its HR target."""

    entry: FovEntry
    store: RegisteredStore
    lr: zarr.Array
    hr: np.ndarray  # float32, read once: every tile position cuts it

    @property
    def name(self) -> str:
        """``sample/session/fov``, as the attributes list it."""
        return f"{self.entry.sample}/{self.entry.session}/{self.entry.fov}"


@dataclass(frozen=True)
class _TilePlan:
    """The tile positions ``(y, x)`` kept in one FOV, each cut from its first ``frames`` frames."""

    fov: _UsableFov
    frames: int
    positions: list[tuple[int, int]]


def build_dataset(
    fovs: Sequence[FovEntry],
    out: str | os.PathLike,
    *,
    tile: int = 64,
    stride: int = 64,
    max_frames: int | None = None,
    background: float = 0.05,
    percentiles: tuple[float, float] = (1.0, 99.8),
    correct_geometry: bool = True,
    normalisation: dict[str, Any] | None = None,
    match_hr_intensity: bool = False,
    max_tiles: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Cut registered FOVs into LR/HR tile pairs and write one Zarr store.

    Parameters
    ----------
    fovs : sequence of FovEntry
        Registered stores with their split (``train`` or ``val``). FOVs whose registration QC
        failed are skipped and logged.
    out : path-like
        The ``.zarr`` directory to write (atomically).
    tile, stride : int
        LR tile size and step; HR tiles are ``scale`` times larger.
    max_frames : int, optional
        Use at most this many frames per FOV (all by default).
    background : float
        A tile position is dropped when the 99th percentile of its HR tile, normalised by the
        training range, is below this value: such tiles teach the network nothing but noise.
    percentiles : (float, float)
        Percentiles of the training intensities mapped to 0 and 1.
    correct_geometry : bool
        Undo each FOV's fitted line phase and resonant warp in the LR tiles
        (:func:`fastscan.geometry.correct_frames`), so the network learns denoising and
        super-resolution on the HR target's geometry; False keeps the raw scan geometry, the
        paper's set-up, where the network has to learn the distortion itself.
    normalisation : dict, optional
        ``{"lr": [low, high], "hr": [low, high]}`` to use instead of computing percentiles, e.g. a
        pretrained model's when fine-tuning it on a new sample.
    match_hr_intensity : bool
        Map each FOV's HR target into its own LR series' units first
        (:meth:`fastscan.stores.RegisteredStore.hr_target`), for targets whose brightness does not
        follow the frames' from FOV to FOV (:func:`intensity_outliers`). Recorded as the
        attribute ``hr_intensity`` (``matched``; ``acquired`` without it).
    max_tiles : int, optional
        Keep at most this many training tiles (pairs), drawn at random with ``seed``; validation
        tiles are all kept. For fine-tuning on N pairs and the data-size ablation.
    seed : int
        Seed of the ``max_tiles`` draw.

    Returns
    -------
    dict
        The attributes written (tile counts, normalisation, dropped counts).
    """
    usable, excluded = _read_usable_fovs(fovs, match_hr_intensity=match_hr_intensity)
    train = [u for u in usable if u.entry.split == "train"]
    if not train:
        raise DatasetError("no training FOV passed registration QC: the dataset would be empty")
    scale = _common_scale(usable)
    if not match_hr_intensity:
        _check_intensity_relation(train)
    norm_lr, norm_hr = _decide_normalisation(train, normalisation, percentiles=percentiles, max_frames=max_frames, correct_geometry=correct_geometry)
    fitted = [u.store.scan.field_fraction for u in train]
    geometry = {"correct": bool(correct_geometry), "field_fraction": float(np.median(fitted))}

    plans, dropped = _plan_tiles(usable, scale=scale, tile=tile, stride=stride, background=background, norm_hr=norm_hr, max_frames=max_frames)
    rows = _tile_rows(plans)
    if not rows:
        raise DatasetError(f"every tile was below the background level {background}; lower dataset.background")
    keep = _subsample_training_tiles(rows, max_tiles, seed)
    log.info("dataset: %d tiles kept, %d dropped as background, %d FOVs excluded", len(rows), dropped, len(excluded))
    rows = [rows[i] for i in keep]
    if max_tiles is not None:
        log.info("dataset: %d training tiles kept of the draw (max_tiles=%d, seed %d)", sum(r[-1] == "train" for r in rows), max_tiles, seed)

    attrs = {
        "kind": "dataset",
        "tile": tile,
        "stride": stride,
        "scale": scale,
        "normalisation": {"lr": norm_lr, "hr": norm_hr, "percentiles": list(percentiles)},
        "counts": {
            "tiles": len(rows),
            "train": sum(r[-1] == "train" for r in rows),
            "val": sum(r[-1] == "val" for r in rows),
            "dropped_background": dropped,
            "excluded_fovs": excluded,
        },
        "background": background,
        "geometry": geometry,
        "hr_intensity": "matched" if match_hr_intensity else "acquired",
        "fovs": [u.name for u in usable],
    }
    hr_rows, tile_hr = _hr_rows(plans, set(keep))
    n_hr = sum(len(m) for m in hr_rows)
    attrs["counts"]["hr_tiles"] = n_hr
    _check_disk(Path(out), n_lr=len(rows), n_hr=n_hr, tile=tile, scale=scale, frames=max(p.frames for p in plans), max_frames=max_frames)
    _write_dataset(Path(out), plans, set(keep), hr_rows, tile_hr, rows, attrs, tile=tile, scale=scale, correct_geometry=correct_geometry)
    return attrs


def _read_usable_fovs(fovs: Sequence[FovEntry], *, match_hr_intensity: bool = False) -> tuple[list[_UsableFov], list[str]]:
    """Open every FOV's registered store; those whose registration QC failed are logged and
    returned by name (``sample/session/fov``) instead. Only train/val FOVs are accepted. The HR
    targets are read as acquired, or matched to their series (``match_hr_intensity``)."""
    usable: list[_UsableFov] = []
    excluded = []
    for entry in fovs:
        if entry.split not in ("train", "val"):
            raise DatasetError(f"FOV {entry.sample}/{entry.session}/{entry.fov} has split {entry.split!r}; only train/val FOVs go into a dataset")
        store = read_registered(entry.path)
        qc = store.qc
        if not qc.passed:
            log.warning(
                "excluding FOV %s/%s/%s from the dataset: registration QC failed (ncc=%.3f < %.3f)",
                entry.sample,
                entry.session,
                entry.fov,
                qc.ncc,
                qc.min_ncc,
            )
            excluded.append(f"{entry.sample}/{entry.session}/{entry.fov}")
            continue
        try:
            hr = store.hr_target(matched=match_hr_intensity)
        except StoreError as exc:
            raise DatasetError(str(exc)) from exc
        usable.append(_UsableFov(entry, store, store.lr, hr))
    return usable, excluded


def intensity_outliers(slopes: Mapping[str, float | None]) -> tuple[float, list[tuple[str, float]]]:
    """FOVs whose HR target is far brighter or dimmer, for their fast frames, than the others'.

    One percentile range normalises every HR target of a dataset, so the network learns one
    brightness of the target for a given input. When the detector gain, laser power or dwell of
    the slow scan was changed between FOVs, or the targets are reconstructions with their own
    scale, it is asked for several and learns their average. On simulated FOVs, whose targets
    all share one relation, registration's slopes scattered by up to 11 % about their median; a
    factor of :data:`INTENSITY_RELATION_FACTOR` is far outside that and well inside the factor 2
    of a typical change of PMT voltage.

    Parameters
    ----------
    slopes : mapping
        Each FOV's ``lr_per_hr`` (registration QC); None, NaN or non-positive values are not
        measured and left out.

    Returns
    -------
    median : float
        Median of the measured slopes (NaN when fewer than two were measured: no outliers then).
    outliers : list of (name, factor)
        FOVs more than the factor off the median, ``factor = slope / median``, farthest first.
    """
    known = {k: float(v) for k, v in slopes.items() if v is not None and math.isfinite(v) and v > 0}
    if len(known) < 2:
        return math.nan, []
    median = float(np.median(list(known.values())))
    far = [(k, v / median) for k, v in known.items() if max(v / median, median / v) > INTENSITY_RELATION_FACTOR]
    return median, sorted(far, key=lambda t: -abs(math.log(t[1])))


def _check_intensity_relation(train: Sequence[_UsableFov]) -> None:
    """Warn about training FOVs :func:`intensity_outliers` names."""
    median, far = intensity_outliers({u.name: u.store.qc.lr_per_hr for u in train})
    if not far:
        return
    measured = sum(u.store.qc.lr_per_hr is not None for u in train)
    named = ", ".join(f"{k} (x{f:.2f})" for k, f in far[:5]) + (f" and {len(far) - 5} more" if len(far) > 5 else "")
    message = (
        f"{len(far)} of {measured} training FOVs relate their fast frames to their HR target with a slope more than "
        f"{INTENSITY_RELATION_FACTOR:g} times off the median (LR per HR intensity {median:.4g}): {named}. One normalisation maps "
        "all HR targets, so the network learns the average brightness; acquire the HR targets with the same detector gain, "
        "laser power and dwell, set dataset.match_hr_intensity: true to map each target into its own series' units, or "
        "train a model per setting (see lr_per_hr in the registration QC table)"
    )
    log.warning("%s", message)


def _common_scale(usable: Sequence[_UsableFov]) -> int:
    """The HR/LR scale all FOVs share (their ``scale`` attribute, else their shapes' ratio)."""
    scales = {int(u.store.attrs.get("scale", round(u.hr.shape[0] / u.lr.shape[1]))) for u in usable}
    if len(scales) != 1:
        raise DatasetError(f"FOVs disagree on the HR/LR scale: {sorted(scales)}")
    return scales.pop()


def _frames_of(lr: zarr.Array, max_frames: int | None) -> int:
    """How many of the series' frames go into the dataset."""
    return lr.shape[0] if max_frames is None else min(lr.shape[0], max_frames)


def _read_lr(fov: _UsableFov, idx: int | np.ndarray, *, correct_geometry: bool) -> np.ndarray:
    """Frame ``idx`` (or frames, an index array) of the FOV's LR series, float32, in the dataset's
    geometry: corrected with the FOV's scan model when ``correct_geometry``."""
    sel = fov.lr[idx] if isinstance(idx, int) else fov.lr.get_orthogonal_selection((idx, slice(None), slice(None)))
    frames = np.asarray(sel, dtype=np.float32)
    if not correct_geometry:
        return frames
    from fastscan.geometry import correct_frames

    return correct_frames(frames, line_phase_px=fov.store.scan.line_phase_px, field_fraction=fov.store.scan.field_fraction)


def _decide_normalisation(
    train: Sequence[_UsableFov],
    normalisation: dict[str, Any] | None,
    *,
    percentiles: tuple[float, float],
    max_frames: int | None,
    correct_geometry: bool,
) -> tuple[list[float], list[float]]:
    """The LR and HR ``[low, high]`` ranges: ``normalisation``'s when given, else the
    ``percentiles`` of a sample of the training FOVs (up to 8 random frames each, every 7th value)."""
    # Statistics from the training split only: validation and test must not leak into them.
    rng = np.random.default_rng(0)
    lr_samples, hr_samples = [], []
    for fov in train:
        n = _frames_of(fov.lr, max_frames)
        idx = np.unique(rng.integers(0, n, size=min(n, 8)))
        lr_samples.append(_read_lr(fov, idx, correct_geometry=correct_geometry).ravel()[::7])
        hr_samples.append(fov.hr.ravel()[::7])
    if normalisation is None:
        norm_lr = percentile_range(np.concatenate(lr_samples), low=percentiles[0], high=percentiles[1])
        norm_hr = percentile_range(np.concatenate(hr_samples), low=percentiles[0], high=percentiles[1])
    else:
        norm_lr, norm_hr = [float(v) for v in normalisation["lr"]], [float(v) for v in normalisation["hr"]]
    return norm_lr, norm_hr


def _plan_tiles(
    usable: Sequence[_UsableFov],
    *,
    scale: int,
    tile: int,
    stride: int,
    background: float,
    norm_hr: Sequence[float],
    max_frames: int | None,
) -> tuple[list[_TilePlan], int]:
    """The tile positions of every FOV, background positions left out, and how many tiles
    (positions x frames) were dropped as background."""
    plans = []
    dropped = 0
    for fov in usable:
        t, ny, nx = fov.lr.shape
        if fov.hr.shape != (scale * ny, scale * nx):
            raise DatasetError(f"{fov.entry.path}: HR shape {fov.hr.shape} is not {scale}x the LR frame shape {(ny, nx)}")
        frames = _frames_of(fov.lr, max_frames)
        hr_n = normalise(fov.hr, *norm_hr)
        positions = []
        for y in tile_origins(ny, tile, stride):
            for x in tile_origins(nx, tile, stride):
                patch = hr_n[scale * y : scale * (y + tile), scale * x : scale * (x + tile)]
                if np.percentile(patch, 99) < background:
                    dropped += frames
                    continue
                positions.append((y, x))
        plans.append(_TilePlan(fov, frames, positions))
    return plans, dropped


def _tile_rows(plans: Sequence[_TilePlan]) -> list[tuple]:
    """One :data:`TILE_COLUMNS` row per candidate tile, FOV by FOV, frame by frame, position by
    position: the order the store is written in."""
    rows = []
    for plan in plans:
        e = plan.fov.entry
        for f in range(plan.frames):
            for y, x in plan.positions:
                rows.append((e.sample, e.session, e.fov, f, y, x, e.split))
    return rows


def _subsample_training_tiles(rows: Sequence[tuple], max_tiles: int | None, seed: int) -> list[int]:
    """Indices of the rows kept, in order: all of them, or ``max_tiles`` training rows drawn with
    ``seed`` and every validation row."""
    if max_tiles is None:
        return list(range(len(rows)))
    train_rows = [i for i, r in enumerate(rows) if r[-1] == "train"]
    if max_tiles < 1:
        raise DatasetError(f"max_tiles must be at least 1, got {max_tiles}")
    if max_tiles >= len(train_rows):
        log.warning("max_tiles %d >= the %d training tiles available: all are used", max_tiles, len(train_rows))
        return list(range(len(rows)))
    drop = set(np.random.default_rng(seed).choice(train_rows, size=len(train_rows) - max_tiles, replace=False).tolist())
    return [i for i in range(len(rows)) if i not in drop]


def _hr_rows(plans: Sequence[_TilePlan], kept: set[int]) -> tuple[list[dict[int, int]], list[int]]:
    """Per plan, the ``hr`` row of each position index some kept tile uses, numbered plan by plan
    in position order; and each kept tile's ``hr`` row, in :func:`_tile_rows` order, which
    ``kept`` indexes."""
    out = []
    tile_rows: list[int] = []
    n = 0
    i = 0
    for plan in plans:
        k = len(plan.positions)
        kept_positions = [p for f in range(plan.frames) for p in range(k) if i + f * k + p in kept]
        rows_of = {p: n + r for r, p in enumerate(sorted(set(kept_positions)))}
        out.append(rows_of)
        tile_rows.extend(rows_of[p] for p in kept_positions)
        n += len(rows_of)
        i += plan.frames * k
    return out, tile_rows


def _check_disk(out: Path, *, n_lr: int, n_hr: int, tile: int, scale: int, frames: int, max_frames: int | None) -> None:
    """Refuse, before writing, a dataset larger than the free space where it goes: a full disk
    would also break every other job writing there. The size is the uncompressed float32 one, an
    upper bound of what the compressed store takes."""
    from fastscan.atomic import free_space

    need = 4 * (n_lr * tile * tile + n_hr * (scale * tile) ** 2)
    where, free = free_space(out)
    if need > free:
        cut = f"dataset.max_frames is {max_frames}" if max_frames is not None else "dataset.max_frames is null (every frame)"
        raise DatasetError(
            f"{out}: the dataset would hold {n_lr} LR and {n_hr} HR tiles, about {need / 1e9:.1f} GB, and only {free / 1e9:.1f} GB are free "
            f"on {where}; {cut} and the longest FOV gives {frames} frames: set a smaller dataset.max_frames, or a larger dataset.stride, or free space"
        )


def _write_dataset(
    out: Path,
    plans: Sequence[_TilePlan],
    kept: set[int],
    hr_rows: Sequence[dict[int, int]],
    tile_hr: Sequence[int],
    rows: Sequence[tuple],
    attrs: dict[str, Any],
    *,
    tile: int,
    scale: int,
    correct_geometry: bool,
) -> None:
    """Write the store atomically: the kept LR tiles of ``plans`` (``kept`` indexes the candidate
    rows in :func:`_tile_rows` order), read frame by frame; each used position's HR tile once
    (``hr_rows``, from :func:`_hr_rows`); then the attributes and the tile table, whose
    :data:`HR_ROW` column (``tile_hr``) points each tile at its HR row."""
    n = len(rows)
    n_hr = sum(len(m) for m in hr_rows)
    s = scale
    with atomic_path(out) as tmp:
        g = zarr.open_group(tmp, mode="w")
        lr_arr = g.create_array("lr", shape=(n, tile, tile), chunks=(1, tile, tile), dtype="float32")
        hr_arr = g.create_array("hr", shape=(n_hr, s * tile, s * tile), chunks=(1, s * tile, s * tile), dtype="float32")
        i = 0  # index over all candidate rows; ``j`` over the kept ones written so far
        j = 0
        for plan, rows_of in zip(plans, hr_rows, strict=True):
            positions, hr = plan.positions, plan.fov.hr
            for p, r in rows_of.items():
                y, x = positions[p]
                hr_arr[r] = hr[s * y : s * (y + tile), s * x : s * (x + tile)]
            k = len(positions)
            for f in range(plan.frames):
                sel = [p for p in range(k) if i + p in kept]
                if sel:
                    frame = _read_lr(plan.fov, f, correct_geometry=correct_geometry)
                    lr_arr[j : j + len(sel)] = np.stack(
                        [frame[positions[p][0] : positions[p][0] + tile, positions[p][1] : positions[p][1] + tile] for p in sel]
                    )
                    j += len(sel)
                i += k
        g.attrs["fastscan"] = attrs
        table = pd.DataFrame(rows, columns=TILE_COLUMNS)
        table[HR_ROW] = tile_hr
        table.to_csv(tmp / "tiles.tsv", sep="\t", index=False)


def read_dataset(path: str | os.PathLike) -> tuple[zarr.Group, pd.DataFrame, dict]:
    """Open a dataset store: the group, the tile table and the attributes."""
    path = Path(path)
    if not (path / "tiles.tsv").is_file():
        raise DatasetError(f"{path} is not a fastscan dataset (no tiles.tsv)")
    g = zarr.open_group(path, mode="r")
    table = pd.read_csv(path / "tiles.tsv", sep="\t", dtype={"session": str, "fov": str, "sample": str})
    if HR_ROW not in table:
        # Stores written before the HR tiles were shared held one HR tile per LR tile.
        table[HR_ROW] = np.arange(len(table))
    return g, table, dict(g.attrs["fastscan"])


def read_hr_tiles(group: zarr.Group, hr_rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """The HR tiles of the given ``hr`` rows, in that order (raw intensities), each read once."""
    unique, inverse = np.unique(np.asarray(hr_rows, dtype=np.int64), return_inverse=True)
    tiles = group["hr"].get_orthogonal_selection((unique, slice(None), slice(None)))
    return np.asarray(tiles)[inverse]


#: Fastest simulated motion of ``train.augment.motion`` (LR px per frame); the flowing-band
#: benchmark (benchmarks/flowing.py) saw a 3-frame window smear content from 1 LR px per frame.
MOTION_MAX_PX = 4


class TileDataset:
    """LR/HR tile pairs of one split, normalised, with the paper's augmentations.

    The paper's augmentations are random zoom, lighting and contrast. The zoom is applied
    identically to LR and HR; lighting and contrast are applied to both, so the intensity mapping
    stays consistent. Progressive resizing crops (never resamples) a ``size`` window out of each
    stored tile.

    ``flips`` adds random horizontal and vertical flips of LR and HR together. They are offered only
    on geometry-corrected tiles (``dataset.correct_geometry``, the default): there the scan
    distortion has been undone before the network, and a flip leaves the noise's statistics as
    they are (Poisson per pixel, its correlation along the fast axis stays along it), whereas the
    zoom resamples the noisy LR tile and lighting/contrast move a pixel's noise away from the
    level its intensity implies. On the raw scan geometry a flip would reverse the sweep and
    swap the odd and even lines' phase, which the network has to learn there, so it is refused.

    ``motion`` (temporal context only) is the share of training windows whose neighbouring
    frames are displaced as if the specimen moved: a velocity of 1 to :data:`MOTION_MAX_PX` LR px
    per frame in a random direction moves frame ``t + d`` by ``d`` times it, in whole pixels (so
    the neighbours keep their own noise, unresampled), reflected at the tile's edges; the HR
    target stays the middle frame's. Registered training windows are otherwise still, and a
    generator that never saw a neighbour disagree with the middle frame draws a structure that
    moves within the field (what rigid registration cannot remove) doubled or smeared.

    Parameters
    ----------
    path : path-like
        Dataset store.
    split : {"train", "val"}
    size : int, optional
        LR crop size (the stored tile size by default).
    augment : bool
        Random crops and augmentations (training); validation crops are centred.
    max_zoom, max_lighting, max_contrast : float
        Zoom up to ``max_zoom``; brightness offset up to ``max_lighting`` and contrast factor
        within ``1 ± max_contrast``, in normalised units.
    flips : bool
        Random horizontal and vertical flips (geometry-corrected datasets only).
    seed : int
    max_memory_mb : float
        A split smaller than this is read into memory once; a larger one is read tile by tile
        from the store (one chunk per tile), so memory does not grow with the dataset.
    frames : int, optional
        Temporal context (odd): each LR input holds the tile of this many neighbouring frames of
        its FOV as channels, the target frame in the middle (see :func:`temporal_windows`).
    motion : float
        Probability that a training window's neighbours are displaced by a random motion (see
        above); 0 keeps the registered windows as they are.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        *,
        size: int | None = None,
        augment: bool = False,
        max_zoom: float = 1.1,
        max_lighting: float = 0.2,
        max_contrast: float = 0.2,
        flips: bool = False,
        seed: int = 0,
        max_memory_mb: float = 2048.0,
        frames: int = 1,
        motion: float = 0.0,
    ) -> None:
        from fastscan.geometry import model_geometry

        if not 0.0 <= float(motion) <= 1.0:
            raise DatasetError(f"train.augment.motion must be a probability between 0 and 1, got {motion!r}")

        g, table, attrs = read_dataset(path)
        if flips and model_geometry(attrs) is None:
            raise DatasetError(
                f"{path}: train.augment.flips needs geometry-corrected tiles (dataset.correct_geometry: true); "
                "on the raw scan geometry a flip reverses the sweep and swaps the odd and even lines' phase (set train.augment.flips: false to train on it)"
            )
        self.attrs = attrs
        self.scale = int(attrs["scale"])
        tile = int(attrs["tile"])
        self.size = tile if size is None else int(size)
        if self.size > tile:
            raise DatasetError(f"crop size {self.size} is larger than the stored tiles ({tile})")
        idx = np.flatnonzero(table["split"].to_numpy() == split)
        if len(idx) == 0:
            raise DatasetError(f"dataset {path} has no {split!r} tiles")
        self.table = table.iloc[idx].reset_index(drop=True)
        self.window = temporal_windows(self.table, frames)
        self.norm = attrs["normalisation"]
        self.tile = tile
        self.index = idx
        hr_rows = self.table[HR_ROW].to_numpy()
        unique_hr, hr_inverse = np.unique(hr_rows, return_inverse=True)
        nbytes = 4 * tile * tile * (len(idx) + len(unique_hr) * self.scale**2)
        self.in_memory = nbytes <= max_memory_mb * 2**20
        if self.in_memory:
            # Small datasets are read once; per-chunk reads would dominate a training step. Each
            # HR tile is held once, however many frames share it.
            self.lr = normalise(g["lr"].get_orthogonal_selection((idx, slice(None), slice(None))), *self.norm["lr"])
            self.hr = normalise(g["hr"].get_orthogonal_selection((unique_hr, slice(None), slice(None))), *self.norm["hr"])
            self.hr_index = hr_inverse
        else:
            self.lr, self.hr = g["lr"], g["hr"]
            self.hr_index = hr_rows
        self.augment = augment
        self.max_zoom, self.max_lighting, self.max_contrast = max_zoom, max_lighting, max_contrast
        self.flips = bool(flips)
        self.motion = float(motion) if frames > 1 else 0.0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def _crop(self, i: int, y: int, x: int, shifts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """LR crop of the tile's temporal window ``(frames, size, size)`` and its HR crop;
        ``shifts`` ``(frames, 2)`` moves each frame's crop by whole LR px (see ``motion``)."""
        s, size = self.scale, self.size
        window = self.window[i]
        if shifts is not None and np.any(shifts):
            m = MOTION_MAX_PX * (len(window) // 2)
            tiles = self.lr[window] if self.in_memory else normalise(np.stack([self.lr[int(self.index[w])] for w in window]), *self.norm["lr"])
            padded = np.pad(tiles, ((0, 0), (m, m), (m, m)), mode="reflect")
            lr = np.stack([padded[f, m + y + dy : m + y + dy + size, m + x + dx : m + x + dx + size] for f, (dy, dx) in enumerate(shifts)])
        elif self.in_memory:
            lr = self.lr[window, y : y + size, x : x + size]
        else:
            lr = normalise(np.stack([self.lr[int(self.index[w]), y : y + size, x : x + size] for w in window]), *self.norm["lr"])
        h = int(self.hr_index[i])
        if self.in_memory:
            return lr, self.hr[h, s * y : s * (y + size), s * x : s * (x + size)].copy()
        return lr, normalise(self.hr[h, s * y : s * (y + size), s * x : s * (x + size)], *self.norm["hr"])

    def _motion(self) -> np.ndarray | None:
        """Whole-pixel shifts ``(frames, 2)`` of a window under a random constant velocity of 1 to
        :data:`MOTION_MAX_PX` LR px per frame (frame ``t + d`` moved by ``d`` times it), drawn
        with probability ``motion``; None otherwise."""
        if self.motion <= 0.0 or self.rng.random() >= self.motion:
            return None
        speed, angle = self.rng.uniform(1.0, MOTION_MAX_PX), self.rng.uniform(0.0, 2.0 * np.pi)
        v = speed * np.array([np.sin(angle), np.cos(angle)])
        half = self.window.shape[1] // 2
        d = np.arange(-half, half + 1)[:, None]
        return np.clip(np.rint(d * v), -MOTION_MAX_PX * half, MOTION_MAX_PX * half).astype(int)

    def __getitem__(self, i: int):
        import torch
        from torch.nn import functional as F

        s, t, size = self.scale, self.tile, self.size
        if self.augment:
            # Crops fall on whole LR pixels so LR and HR stay aligned without resampling.
            y, x = self.rng.integers(0, t - size + 1, size=2)
        else:
            y = x = (t - size) // 2
        lr_np, hr_np = self._crop(i, int(y), int(x), self._motion() if self.augment else None)
        lr, hr = torch.from_numpy(lr_np), torch.from_numpy(hr_np)[None]
        if self.augment:
            zoom = self.rng.uniform(1.0, self.max_zoom)
            crop = int(round(size / zoom))
            if crop < size:
                oy, ox = self.rng.integers(0, size - crop + 1, size=2)
                lr = F.interpolate(lr[None, :, oy : oy + crop, ox : ox + crop], size=(size, size), mode="bilinear", align_corners=False)[0]
                hr = F.interpolate(
                    hr[None, :, s * oy : s * (oy + crop), s * ox : s * (ox + crop)], size=(s * size, s * size), mode="bilinear", align_corners=False
                )[0]
            contrast = 1.0 + self.rng.uniform(-self.max_contrast, self.max_contrast)
            light = self.rng.uniform(-self.max_lighting, self.max_lighting)
            lr = (lr - 0.5) * contrast + 0.5 + light
            hr = (hr - 0.5) * contrast + 0.5 + light
            if self.flips:
                # LR pixel i covers HR pixels s*i ... s*i+s-1, so flipping both keeps them aligned.
                dims = [d for d, flip in ((-1, self.rng.random() < 0.5), (-2, self.rng.random() < 0.5)) if flip]
                if dims:
                    lr, hr = torch.flip(lr, dims), torch.flip(hr, dims)
        return lr, hr


def temporal_windows(table: pd.DataFrame, frames: int) -> np.ndarray:
    """Row indices of each tile's temporal window: the same position in neighbouring frames.

    Parameters
    ----------
    table : DataFrame
        Tile table of one split (``sample, session, fov, frame, y, x``), in row order.
    frames : int
        Window length, odd. Row ``i`` of frame ``f`` gets the rows of frames
        ``f - frames // 2 ... f + frames // 2`` at the same FOV and position.

    Returns
    -------
    ndarray, shape (len(table), frames), int
        At the ends of a series the frames are reflected (``-1 -> 1``), as restoration does; a
        frame the store does not hold (a ``max_frames`` or ``max_tiles`` cut, a one-frame FOV)
        is replaced by the centre frame, so a window never mixes positions or FOVs.
    """
    frames = int(frames)
    if frames < 1 or frames % 2 == 0:
        raise DatasetError(f"temporal window must be an odd number of frames, got {frames}")
    n = len(table)
    centre = np.arange(n)
    if frames == 1:
        return centre[:, None]
    keys = list(zip(table["sample"], table["session"], table["fov"], table["y"], table["x"]))
    frame = table["frame"].to_numpy().astype(int)
    where = {(*k, int(f)): i for i, (k, f) in enumerate(zip(keys, frame))}
    last: dict[tuple, int] = {}
    for k, f in zip(keys, frame):
        last[k] = max(last.get(k, 0), int(f))
    out = np.empty((n, frames), dtype=np.int64)
    half = frames // 2
    for i, (k, f) in enumerate(zip(keys, frame)):
        for j, d in enumerate(range(-half, half + 1)):
            out[i, j] = where.get((*k, reflect_frame(int(f) + d, last[k] + 1)), i)
    return out


def reflect_frame(t: int, n: int) -> int:
    """Frame index ``t`` reflected into ``0 .. n - 1`` about the end frames (``-1 -> 1``,
    ``n -> n - 2``), numpy's ``reflect`` padding mode; 0 for a one-frame series."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    t = abs(t) % period
    return period - t if t >= n else t


def make_dataloaders(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
    augment: dict | None = None,
    num_workers: int = 0,
    max_memory_mb: float = 2048.0,
    frames: int = 1,
):
    """fastai ``DataLoaders`` over the train and val splits of a dataset store.

    ``augment`` holds the :class:`TileDataset` augmentation limits; ``max_memory_mb`` is its
    threshold between reading a split into memory and reading tile by tile; ``frames`` the
    generator's temporal window.
    """
    from fastai.data.core import DataLoaders

    aug = augment or {}
    train = TileDataset(path, "train", size=size, augment=True, seed=seed, max_memory_mb=max_memory_mb, frames=frames, **aug)
    valid = TileDataset(path, "val", size=size, augment=False, seed=seed, max_memory_mb=max_memory_mb, frames=frames)
    # fastai shuffles and drops the last partial batch of the first (training) loader only; a
    # training split smaller than one batch must keep its partial batch or nothing is trained.
    return DataLoaders.from_dsets(train, valid, bs=batch_size, drop_last=(len(train) > batch_size, False), device=device, num_workers=num_workers)
