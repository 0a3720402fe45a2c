"""The generator's input geometry: the fitted scan model is undone before the network sees a frame.

A resonant bidirectional frame is distorted along x by two things the registration measures for
every FOV: the line phase between forward and backward lines, and the sinusoidal mirror velocity
(the field fraction), which stretches the ends of each line. The paper lets the network learn both.
A U-Net trained on tiles cannot: it is translation-equivariant and a tile does not know where in
the field it was cut, while the resonant stretch depends on exactly that (the centre of a line is
sampled twice as densely as its ends at field fraction 0.8). Undoing the fitted scan model first
(:func:`correct_frames`, the geometric half of the classical cascade, with the scan model of
:mod:`fastscan.scan`) leaves the network the part
it can learn from tiles, denoising and super-resolution, and makes the restored frame land on the
geometry of the HR target everywhere in the field.

The choice is stored in the dataset attributes and in ``model.json`` under ``geometry``::

    {"correct": true, "field_fraction": 0.8}

``field_fraction`` is the median of the training FOVs' fitted values: a property of the scanner
setting, used for new sessions that have no HR target to fit it on (the line phase is estimated
from the series itself). A model without the section, or with ``correct: false``, takes frames as
they are (the paper's set-up, and the right thing for slides, which are not resonant scans).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastscan.scan import unwarp_resonant

log = logging.getLogger(__name__)

__all__ = ["correct_frames", "model_geometry", "prepare_frames"]


def correct_frames(frames: np.ndarray, *, line_phase_px: float, field_fraction: float) -> np.ndarray:
    """Undo the line phase (symmetrically) and the resonant warp of LR frames.

    Parameters
    ----------
    frames : (Y, X) or (T, Y, X) ndarray
        Frames in display order, row 0 a forward line, as the registered store holds them.
    line_phase_px : float
        Line phase of the odd rows in LR px (``registration.line_phase_px``).
    field_fraction : float
        Resonant field fraction (``registration.field_fraction``); 0 for a linear scan.

    Returns
    -------
    ndarray of float32, same shape
        On the nominal linear grid, midway between both scan directions: the geometry of the
        registered HR target (see :mod:`fastscan.classical` for why the correction is symmetric).
    """
    from fastscan.register import correct_line_phase

    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"frames must be (Y, X) or (T, Y, X), got shape {arr.shape}")
    if not math.isfinite(float(line_phase_px)):
        raise ValueError(f"line_phase_px must be finite, got {line_phase_px!r}")
    out = arr
    if float(line_phase_px) != 0.0:
        out = correct_line_phase(out, float(line_phase_px), symmetric=True).astype(np.float32, copy=False)
    return unwarp_resonant(out, field_fraction=float(field_fraction)).astype(np.float32, copy=False)


def model_geometry(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``geometry`` section of a model's (or dataset's) metadata when it asks for correction."""
    geo = meta.get("geometry") or {}
    return dict(geo) if geo.get("correct") else None


def prepare_frames(
    frames: np.ndarray,
    meta: Mapping[str, Any],
    *,
    line_phase_px: float | None = None,
    field_fraction: float | None = None,
) -> np.ndarray:
    """Put raw LR frames into the geometry a model was trained on.

    Parameters
    ----------
    frames : (Y, X) or (T, Y, X) ndarray
        Raw (not yet normalised) LR frames.
    meta : mapping
        ``model.json`` content.
    line_phase_px : float, optional
        Known line phase (a registered FOV's); estimated from ``frames`` otherwise
        (:func:`fastscan.register.estimate_line_phase` on their mean).
    field_fraction : float, optional
        Known field fraction; the model's (the training FOVs' median) otherwise.

    Returns
    -------
    ndarray of float32
        ``frames`` unchanged (as float32) for a model without input-geometry correction.
    """
    geo = model_geometry(meta)
    arr = np.asarray(frames, dtype=np.float32)
    if geo is None:
        return arr
    if line_phase_px is None:
        from fastscan.register import estimate_line_phase

        line_phase_px = estimate_line_phase(arr)
        log.info("line phase estimated from %d frame(s): %.3f px", 1 if arr.ndim == 2 else arr.shape[0], line_phase_px)
    ff = float(geo["field_fraction"]) if field_fraction is None else float(field_fraction)
    return correct_frames(arr, line_phase_px=float(line_phase_px), field_fraction=ff)
