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
from fastscan.simulate.acquire import acquire_hr, acquire_lr_series
from fastscan.simulate.params import resolve_params
from fastscan.simulate.specimens import SPECIMENS, render_specimen

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Margin rendered around a simulated FOV: drift is a random walk of a few tenths of a µm over
# 100 frames, and the PSF and the dwell path reach about 1 µm beyond the field.
_MARGIN_UM = 3.0


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


def _fov_specimen(specimen: str, p: Mapping[str, Any], rng: np.random.Generator) -> NDArray[np.float32]:
    """The specimen of one FOV at ``specimen_pixel_size_um``, centred on the field with a margin."""
    ps = p["specimen_pixel_size_um"]
    # Room for the offset and for the drift's random walk (4 standard deviations at the end).
    lr = p["lr"]
    walk = 4.0 * lr["drift_um_per_frame"] * math.sqrt(lr["frames"] - 1)
    margin = _MARGIN_UM + walk + max(abs(v) for v in lr["offset_um"])
    size = int(math.ceil((p["field_of_view_um"] + 2.0 * margin) / ps))
    return render_specimen(specimen, shape=(size, size), pixel_size_um=ps, rng=rng)


def _write_fov_files(
    lr_path: PathLike,
    hr_path: PathLike,
    truth_path: PathLike,
    *,
    lr: NDArray[np.uint16],
    hr: NDArray[np.uint16],
    truth: dict[str, Any],
    specimen: str,
    params: Mapping[str, Any],
) -> None:
    """The LR series, the HR target and the truth of one FOV, renamed into place together."""
    p = params
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
    sample = _fov_specimen(specimen, p, rng)
    t_render = time.perf_counter()
    hr = acquire_hr(sample, params=p, rng=rng)
    t_hr = time.perf_counter()
    lr, truth = acquire_lr_series(sample, params=p, rng=rng)
    t_lr = time.perf_counter()
    truth["specimen"] = specimen
    _write_fov_files(lr_path, hr_path, truth_path, lr=lr, hr=hr, truth=truth, specimen=specimen, params=p)
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
