"""Temporal windows: the frames a generator with temporal context sees for each restored frame."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def temporal_stack(
    series: np.ndarray,
    indices: Iterable[int],
    *,
    frames: int = 1,
    total: int | None = None,
    offset: int = 0,
    drift: np.ndarray | None = None,
) -> np.ndarray:
    """The generator inputs for frames ``indices`` of a series: the frames, or temporal windows.

    Parameters
    ----------
    series : ndarray, shape (M, Y, X)
        Consecutive frames ``offset .. offset + M - 1`` of the series, including every frame a
        window reaches.
    indices : iterable of int
        Frames to restore (indices in the whole series).
    frames : int
        Window length of the generator (odd); 1 returns the frames themselves.
    total : int, optional
        Length of the whole series (default ``offset + M``). Windows are reflected at its ends
        (:func:`fastscan.dataset.reflect_frame`), as in training.
    drift : ndarray, shape (total, 2), optional
        Drift of every frame of the series (:func:`fastscan.register.estimate_drift`). Each
        neighbour is then moved onto the restored frame's position, as the registered frames
        of training were: a drifting specimen does not appear doubled in the window.

    Returns
    -------
    ndarray, shape (N, Y, X) or (N, frames, Y, X)
    """
    from fastscan.dataset import reflect_frame

    indices = list(indices)
    total = offset + len(series) if total is None else int(total)
    if frames == 1:
        return series[[t - offset for t in indices]]
    half = frames // 2
    rows = [[reflect_frame(t + d, total) - offset for d in range(-half, half + 1)] for t in indices]
    if any(r < 0 or r >= len(series) for row in rows for r in row):
        raise ValueError(f"temporal windows of frames {indices[0]}..{indices[-1]} reach outside the frames {offset}..{offset + len(series) - 1} given")
    out = series[np.asarray(rows)]
    if drift is not None:
        from fastscan.register import apply_shifts

        drift = np.asarray(drift, dtype=np.float64)
        for i, (t, row) in enumerate(zip(indices, rows)):
            # apply_shifts(frame, drift[n]) registers frame n to the reference; subtracting
            # drift[t] puts it where frame t has the specimen.
            shifts = drift[[r + offset for r in row]] - drift[t]
            if np.any(shifts):
                out[i] = apply_shifts(out[i], shifts).astype(out.dtype, copy=False)
    return out


def lone_frame_window(image: np.ndarray, frames: int) -> np.ndarray:
    """A lone 2-D frame (a slide's region, a sample image) as a generator's input: the frame
    itself, or for a generator with temporal context the window of a one-frame series, which
    repeats the frame (:func:`temporal_stack` reflecting at both ends of a series of one)."""
    return image if frames == 1 else temporal_stack(image[None], [0], frames=frames)[0]


def input_frames(model: torch.nn.Module) -> int:
    """Input channels of a generator: the frames of its temporal window (1 for single frames)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return int(m.in_channels)
    return 1
