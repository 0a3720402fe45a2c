"""Large fast-mode images scanned in strips, as a resonant strip scanner acquires a slide.

Kept apart from :mod:`fastscan.simulate.files` (one FOV) because a slide is rendered, scanned and
digitised block by block to bound memory, with a scene that spans the whole slide.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fastscan.simulate.acquire import _blur, _cumsum_x, _lr_frame_edges, _sample_lines
from fastscan.simulate.detector import detect
from fastscan.simulate.files import _MARGIN_UM, PathLike, _atomic_paths, _file_uuid, _imwrite_ome, _ome_metadata
from fastscan.simulate.params import _pixel_sizes, resolve_params
from fastscan.simulate.specimens import SPECIMENS, _build_scene

logger = logging.getLogger(__name__)

# Halo rendered around each block of a slide, for the PSF, the line phase and the mark kernels.
_SLIDE_PAD_UM = 2.0
_SLIDE_BLOCK_ROWS = 256


def _scan_slide(specimen: str, p: Mapping[str, Any], shape_px: tuple[int, int], rng: np.random.Generator) -> tuple[NDArray[np.uint16], float]:
    """Scan a slide strip by strip, block by block: the digitised image and the specimen grid (µm)."""
    height, width = shape_px
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
    return image, ps


def _write_slide_file(path: PathLike, image: NDArray[np.uint16], *, specimen: str, params: Mapping[str, Any]) -> None:
    """The slide as a tiled OME-TIFF, renamed into place when complete."""
    p = params
    height, width = image.shape
    lr = p["lr"]
    n = lr["pixels"]
    lr_px, _ = _pixel_sizes(p)
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
    image, ps = _scan_slide(specimen, p, (height, width), rng)
    lr = p["lr"]
    n = lr["pixels"]
    lr_px, _ = _pixel_sizes(p)
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
    _write_slide_file(path, image, specimen=specimen, params=p)
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
