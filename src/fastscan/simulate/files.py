"""Writing simulated data as a microscope would.

A field of view as an LR OME-TIFF series, an HR OME-TIFF target and a JSON file with the geometry
that produced them (:func:`write_fov`), and a large fast-mode image as a tiled OME-TIFF
(:func:`write_slide`); pixel sizes in the OME metadata and the baseline TIFF tags, files written
atomically and byte-identical for the same seed and parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from fastscan.atomic import atomic_path
from fastscan.simulate.acquire import _blur, _cumsum_x, _lr_frame_edges, _sample_lines, acquire_hr, acquire_lr_series
from fastscan.simulate.detector import detect
from fastscan.simulate.params import _pixel_sizes, resolve_params
from fastscan.simulate.specimens import SPECIMENS, _build_scene, render_specimen

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Margin rendered around a simulated FOV: drift is a random walk of a few tenths of a µm over
# 100 frames, and the PSF and the dwell path reach about 1 µm beyond the field.
_MARGIN_UM = 3.0
# Halo rendered around each block of a slide, for the PSF, the line phase and the mark kernels.
_SLIDE_PAD_UM = 2.0
_SLIDE_BLOCK_ROWS = 256


@contextlib.contextmanager
def _atomic_paths(*paths: PathLike) -> Iterator[list[Path]]:
    """Temporary siblings of ``paths``, renamed into place only if the block succeeds."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def _file_uuid(role: str, specimen: str, params: Mapping[str, Any]) -> str:
    # tifffile draws a time-based UUID by default; deriving it from what was simulated keeps
    # files from the same seed and parameters byte-identical.
    text = json.dumps({"role": role, "specimen": specimen, "params": params}, sort_keys=True)
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'fastscan.simulate:' + text)}"


def _ome_metadata(
    *,
    axes: str,
    pixel_size_um: float,
    bits: int,
    name: str,
    uid: str,
    description: str,
    time_increment_s: float | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "UUID": uid,
        "axes": axes,
        "Name": name,
        "Description": description,
        "SignificantBits": int(bits),
        "PhysicalSizeX": float(pixel_size_um),
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": float(pixel_size_um),
        "PhysicalSizeYUnit": "µm",
    }
    if time_increment_s is not None:
        meta["TimeIncrement"] = float(time_increment_s)
        meta["TimeIncrementUnit"] = "s"
    return meta


def _imwrite_ome(path: Path, data: NDArray[Any], *, metadata: dict[str, Any], tile: tuple[int, int] | None = None) -> None:
    px = metadata["PhysicalSizeX"]
    tifffile.imwrite(
        path,
        data,
        ome=True,
        photometric="minisblack",
        metadata=metadata,
        tile=tile,
        # Also in the baseline TIFF tags, for readers that ignore OME-XML.
        resolution=(1e4 / px, 1e4 / px),
        resolutionunit="CENTIMETER",
    )


def write_fov(
    *,
    lr_path: PathLike,
    hr_path: PathLike,
    truth_path: PathLike,
    specimen: str,
    seed: int,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Simulate one field of view and write it as a microscope would.

    Parameters
    ----------
    lr_path : path
        Video-rate series, multi-page OME-TIFF (axes ``TYX``, uint16, nominal LR pixel size).
    hr_path : path
        HR target, single-plane OME-TIFF (axes ``YX``, uint16, HR pixel size).
    truth_path : path
        Ground truth as JSON (see :func:`acquire_lr_series`, plus ``specimen``).
    specimen : {"mitochondria", "tissue"}
        Kind of specimen (see :func:`render_specimen`).
    seed : int
        Seeds everything (specimen, noise, drift); overrides ``params["seed"]``.
    params : mapping, optional
        Overrides of :data:`DEFAULTS`.

    Returns
    -------
    truth : dict
        What was written to ``truth_path``.

    Notes
    -----
    The three files are written under temporary sibling names and renamed into place at the
    end; parent folders are created. The same seed and parameters give identical files.
    """
    start = time.perf_counter()
    p = resolve_params(params)
    p["seed"] = int(seed)
    if specimen not in SPECIMENS:
        raise ValueError(f"unknown specimen kind {specimen!r}; choose one of {', '.join(SPECIMENS)}")
    rng = np.random.default_rng(p["seed"])
    ps = p["specimen_pixel_size_um"]
    # Room for the offset and for the drift's random walk (4 standard deviations at the end).
    lr = p["lr"]
    walk = 4.0 * lr["drift_um_per_frame"] * math.sqrt(lr["frames"] - 1)
    margin = _MARGIN_UM + walk + max(abs(v) for v in lr["offset_um"])
    size = int(math.ceil((p["field_of_view_um"] + 2.0 * margin) / ps))
    sample = render_specimen(specimen, shape=(size, size), pixel_size_um=ps, rng=rng)
    t_render = time.perf_counter()
    hr = acquire_hr(sample, params=p, rng=rng)
    t_hr = time.perf_counter()
    lr, truth = acquire_lr_series(sample, params=p, rng=rng)
    t_lr = time.perf_counter()
    truth["specimen"] = specimen
    lr_px, hr_px = truth["lr_pixel_size_um"], truth["hr_pixel_size_um"]
    bits = p["detector"]["bits"]
    with _atomic_paths(lr_path, hr_path, truth_path) as (lr_tmp, hr_tmp, truth_tmp):
        _imwrite_ome(
            lr_tmp,
            lr,
            metadata=_ome_metadata(
                axes="TYX",
                pixel_size_um=lr_px,
                bits=bits,
                name=Path(lr_path).name,
                uid=_file_uuid("lr", specimen, p),
                description=(
                    f"fastscan simulated video-rate series: {specimen}, resonant "
                    f"bidirectional scan, field fraction {p['lr']['field_fraction']}, "
                    f"dwell {p['lr']['dwell_us']} us, seed {p['seed']}"
                ),
                time_increment_s=truth["scan"]["frame_interval_s"],
            ),
        )
        _imwrite_ome(
            hr_tmp,
            hr,
            metadata=_ome_metadata(
                axes="YX",
                pixel_size_um=hr_px,
                bits=bits,
                name=Path(hr_path).name,
                uid=_file_uuid("hr", specimen, p),
                description=(
                    f"fastscan simulated HR target: {specimen}, unidirectional scan, "
                    f"dwell {p['hr']['dwell_us']} us, {p['hr']['frames_averaged']} frames "
                    f"averaged, seed {p['seed']}"
                ),
            ),
        )
        truth_tmp.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info(
        "simulated %s FOV seed %d: render %.2f s, HR %.2f s, LR %d frames %.2f s, write %.2f s -> %s",
        specimen,
        p["seed"],
        t_render - start,
        t_hr - t_render,
        p["lr"]["frames"],
        t_lr - t_hr,
        time.perf_counter() - t_lr,
        lr_path,
    )
    return truth


def write_slide(
    path: PathLike,
    *,
    shape_px: tuple[int, int],
    seed: int,
    specimen: str = "tissue",
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Simulate a large single-plane image acquired in the fast mode and write a tiled OME-TIFF.

    The slide is scanned in strips, as a resonant strip scanner does: each strip is
    ``lr.pixels`` columns wide, every line of it a resonant line with the same geometry as the
    FOV series (sinusoidal x, bidirectional, ``lr.line_phase_px`` on odd rows), the stage
    stepping exactly one strip width between strips; y is linear at the nominal LR pitch. One
    LR dwell, LR noise, no drift.

    Parameters
    ----------
    path : path
        Output OME-TIFF (axes ``YX``, uint16, 256 x 256 tiles, pixel size ``FOV / lr.pixels``).
    shape_px : (int, int)
        Slide size ``(Y, X)`` in pixels; the last strip is cropped when ``X`` is not a multiple
        of ``lr.pixels``.
    seed : int
        Seeds everything; overrides ``params["seed"]``.
    specimen : {"tissue", "mitochondria"}, optional
        Kind of specimen.
    params : mapping, optional
        Overrides of :data:`DEFAULTS`.

    Returns
    -------
    info : dict
        JSON-serialisable description: ``shape_px``, ``pixel_size_um``, ``strip_width_px``,
        ``line_phase_px``, ``field_fraction``, ``specimen``, ``specimen_pixel_size_um``,
        ``seed``, ``params``.

    Notes
    -----
    The specimen is rendered block by block (``256`` rows by one strip, plus a halo) on a grid
    no finer than a quarter of the LR pixel, so memory stays at a few tens of MB besides the
    output image (2 bytes per pixel), and blocks join seamlessly.
    """
    start = time.perf_counter()
    p = resolve_params(params)
    p["seed"] = int(seed)
    height, width = (int(v) for v in shape_px)
    if height < 1 or width < 1:
        raise ValueError(f"shape_px must be positive, got {shape_px}")
    if specimen not in SPECIMENS:
        raise ValueError(f"unknown specimen kind {specimen!r}; choose one of {', '.join(SPECIMENS)}")
    rng = np.random.default_rng(p["seed"])
    lr = p["lr"]
    n = lr["pixels"]
    lr_px, _ = _pixel_sizes(p)
    ps = max(p["specimen_pixel_size_um"], lr_px / 4.0)
    margin = _MARGIN_UM
    scene = _build_scene(specimen, (height * lr_px + 2 * margin, width * lr_px + 2 * margin), rng)
    image = np.empty((height, width), dtype=np.uint16)
    edges = _lr_frame_edges(p, np.arange(_SLIDE_BLOCK_ROWS))
    pad = _SLIDE_PAD_UM
    strip_um = n * lr_px
    for x0 in range(0, width, n):
        x1 = min(x0 + n, width)
        # Scene coordinates of this strip's field origin.
        fx = margin + x0 * lr_px
        for y0 in range(0, height, _SLIDE_BLOCK_ROWS):
            y1 = min(y0 + _SLIDE_BLOCK_ROWS, height)
            fy = margin + y0 * lr_px
            origin = (fy - pad, fx - pad)
            shape = (
                int(math.ceil(((y1 - y0) * lr_px + 2 * pad) / ps)),
                int(math.ceil((strip_um + 2 * pad) / ps)),
            )
            block = scene.render(origin=origin, shape=shape, pixel_size=ps)
            integral = _cumsum_x(_blur(block, psf_fwhm_um=p["psf_fwhm_um"], pixel_size=ps))
            rows = np.arange(y1 - y0)
            # Rows keep their global parity: block starts are even, so local parity matches.
            signal = _sample_lines(
                integral,
                rows_um=(rows + 0.5) * lr_px,
                edges_um=edges[: y1 - y0],
                origin=(-pad, -pad),
                pixel_size=ps,
            )
            image[y0:y1, x0:x1] = detect(signal[:, : x1 - x0], dwell_us=lr["dwell_us"], detector=p["detector"], rng=rng)
    info = {
        "shape_px": [height, width],
        "pixel_size_um": lr_px,
        "strip_width_px": n,
        "line_phase_px": lr["line_phase_px"],
        "field_fraction": lr["field_fraction"],
        "specimen": specimen,
        "specimen_pixel_size_um": ps,
        "seed": p["seed"],
        "params": p,
    }
    with _atomic_paths(path) as (tmp,):
        _imwrite_ome(
            tmp,
            image,
            tile=(256, 256),
            metadata=_ome_metadata(
                axes="YX",
                pixel_size_um=lr_px,
                bits=p["detector"]["bits"],
                name=Path(path).name,
                uid=_file_uuid(f"slide {height}x{width}", specimen, p),
                description=(
                    f"fastscan simulated fast-mode slide: {specimen}, resonant bidirectional strips of {n} px, dwell {lr['dwell_us']} us, seed {p['seed']}"
                ),
            ),
        )
    logger.info(
        "simulated %s slide %d x %d px seed %d in %.2f s -> %s",
        specimen,
        height,
        width,
        p["seed"],
        time.perf_counter() - start,
        path,
    )
    return info
