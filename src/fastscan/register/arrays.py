"""Array conventions shared by every registration step: working precision and input checks.

Separate so that shifting, correlating and the drivers agree on one float dtype rule and one way
of rejecting bad arguments, without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _float_dtype(dtype: np.dtype | type) -> np.dtype:
    """Working precision for ``dtype``: float64 stays float64, everything else is float32.

    float32 is exact for the 12- and 16-bit integer data of the scanners, and halves memory.
    """
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _as_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"{name} must be a (T, Y, X) array, got shape {frames.shape}")
    return frames
