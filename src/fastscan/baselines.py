"""Interpolation baselines and the method vocabulary shared by metrics and figures.

The learned generator sees the LR frame resized to the HR grid with
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. The
baselines here use the same pixel-area geometry, so that a difference between
"bilinear" and the generator is the network's contribution and not a half-pixel
shift between grids (which alone costs several dB of PSNR on sharp structures).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Final

import numpy as np
from scipy import ndimage

__all__ = [
    "BASELINE_ORDERS",
    "FINETUNE_PREFIX",
    "METHODS",
    "METHOD_COLOURS",
    "METHOD_LABELS",
    "finetune_pairs",
    "method_colour",
    "method_label",
    "method_sort_key",
    "upsample",
]

logger = logging.getLogger(__name__)

#: Every method a figure or table may show, in the order they are shown.
METHODS: Final[tuple[str, ...]] = ("bilinear", "bicubic", "classical", "mse", "gan", "finetuned")

#: Human-readable labels for :data:`METHODS`.
METHOD_LABELS: Final[dict[str, str]] = {
    "bilinear": "Bilinear",
    "bicubic": "Bicubic",
    "classical": "Classical cascade",
    "mse": "Generator (MSE)",
    "gan": "GAN",
    "finetuned": "GAN fine-tuned",
}

#: One fixed colour per method (Okabe-Ito palette, distinguishable with the common
#: colour-vision deficiencies), so a method looks the same in every figure.
METHOD_COLOURS: Final[dict[str, str]] = {
    "bilinear": "#999999",
    "bicubic": "#56B4E9",
    "classical": "#009E73",
    "mse": "#E69F00",
    "gan": "#D55E00",
    "finetuned": "#CC79A7",
}

#: Methods computed from the LR input rather than read from a restored store, with
#: the spline order :func:`upsample` uses for each.
BASELINE_ORDERS: Final[dict[str, int]] = {"bilinear": 1, "bicubic": 3}

_FALLBACK_COLOUR: Final[str] = "#000000"

#: Prefix of the GAN fine-tuned on another sample with ``N`` training pairs: ``finetune_{N}``.
FINETUNE_PREFIX: Final[str] = "finetune_"

_FINETUNE_PATTERN: Final[re.Pattern[str]] = re.compile(rf"{FINETUNE_PREFIX}(\d+)")

# Fine-tuned GANs share the hue of "finetuned" and darken with the number of pairs, on a log
# scale from 10 to 100 000 pairs, so that one N keeps its colour in every figure and run.
_FINETUNE_LIGHT: Final[tuple[int, int, int]] = (0xE8, 0xB4, 0xD4)
_FINETUNE_DARK: Final[tuple[int, int, int]] = (0x5E, 0x12, 0x4E)
_FINETUNE_LOG10_RANGE: Final[tuple[float, float]] = (1.0, 5.0)


def finetune_pairs(method: str) -> int | None:
    """Number of training pairs ``N`` of a ``finetune_{N}`` method, ``None`` for any other name."""
    match = _FINETUNE_PATTERN.fullmatch(method)
    return int(match.group(1)) if match else None


def method_label(method: str) -> str:
    """Return the human-readable label of `method` (the name itself if unknown).

    ``finetune_{N}`` reads "GAN fine-tuned (N pairs)".
    """
    pairs = finetune_pairs(method)
    if pairs is not None:
        return f"{METHOD_LABELS['finetuned']} ({pairs} pair{'' if pairs == 1 else 's'})"
    return METHOD_LABELS.get(method, method)


def method_colour(method: str) -> str:
    """Return the fixed colour of `method` (black if unknown).

    ``finetune_{N}`` gets a shade of the "finetuned" colour that depends on ``N``
    only (darker for more pairs), so it is the same in every figure.
    """
    pairs = finetune_pairs(method)
    if pairs is not None:
        lo, hi = _FINETUNE_LOG10_RANGE
        t = (math.log10(max(pairs, 1)) - lo) / (hi - lo)
        t = min(max(t, 0.0), 1.0)
        rgb = (round(a + t * (b - a)) for a, b in zip(_FINETUNE_LIGHT, _FINETUNE_DARK, strict=True))
        return "#" + "".join(f"{c:02X}" for c in rgb)
    return METHOD_COLOURS.get(method, _FALLBACK_COLOUR)


def method_sort_key(method: str) -> tuple[int, int, str]:
    """Sort key placing known methods in :data:`METHODS` order, unknown ones after, by name.

    ``finetune_{N}`` methods follow "finetuned", by increasing ``N``.
    """
    pairs = finetune_pairs(method)
    if pairs is not None:
        return (METHODS.index("finetuned"), pairs, "")
    try:
        return (METHODS.index(method), -1, "")
    except ValueError:
        return (len(METHODS), -1, method)


def upsample(image: np.ndarray, *, scale: int = 2, order: int = 1) -> np.ndarray:
    """Upsample an image or a stack of frames onto the HR grid.

    The geometry is pixel-area aligned, as ``torch.nn.functional.interpolate``
    with ``align_corners=False``: LR pixel ``i`` covers HR pixels
    ``scale*i ... scale*i + scale - 1``, so its centre lands at HR coordinate
    ``scale*i + (scale - 1)/2``. Outside the outermost LR pixel centres the edge
    value is repeated.

    Parameters
    ----------
    image : ndarray
        ``(Y, X)`` image or ``(N, Y, X)`` stack; a stack is upsampled frame by
        frame (never along ``N``).
    scale : int, optional
        HR pixels per LR pixel along each spatial axis.
    order : int, optional
        Spline order: 1 is bilinear, 3 is bicubic; 0 to 5 are accepted.

    Returns
    -------
    ndarray of float32
        ``(scale*Y, scale*X)`` or ``(N, scale*Y, scale*X)``.

    Raises
    ------
    ValueError
        If `image` is not 2-D or 3-D, `scale` is not a positive integer or
        `order` is outside 0..5.

    Notes
    -----
    This is ``scipy.ndimage.zoom(..., grid_mode=True, mode="nearest")``. For
    ``order=1`` it equals torch's bilinear interpolation exactly, borders
    included. ``order=3`` is cubic *spline* interpolation (with the spline
    prefilter), not the Keys cubic convolution (a = -0.75) of torch, PIL or
    MATLAB ``imresize``; it is slightly sharper and, like every cubic, may
    overshoot near edges. Values are not clipped so that the metrics see what
    the interpolant produces.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"upsample expects a (Y, X) image or an (N, Y, X) stack, got shape {arr.shape}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise ValueError(f"order must be an integer spline order in 0..5, got {order!r}")
    # float64 so that the spline prefilter of order > 1 does not accumulate float32 rounding.
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 2:
        return _upsample_frame(arr, scale=int(scale), order=int(order))
    out = np.empty((arr.shape[0], arr.shape[1] * scale, arr.shape[2] * scale), dtype=np.float32)
    for i, frame in enumerate(arr):
        out[i] = _upsample_frame(frame, scale=int(scale), order=int(order))
    return out


def _upsample_frame(frame: np.ndarray, *, scale: int, order: int) -> np.ndarray:
    if scale == 1:
        return frame.astype(np.float32)
    return ndimage.zoom(
        frame,
        zoom=scale,
        order=order,
        mode="nearest",
        grid_mode=True,
        prefilter=order > 1,
        output=np.float32,
    )
