"""Interpolation baselines and the method vocabulary shared by metrics and figures.

The learned generator sees the LR frame resized to the HR grid with
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. The
baselines here use the same pixel-area geometry, so that a difference between
"bilinear" and the generator is the network's contribution and not a half-pixel
shift between grids (which alone costs several dB of PSNR on sharp structures).
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
from scipy import ndimage

__all__ = [
    "BASELINE_ORDERS",
    "METHODS",
    "METHOD_COLOURS",
    "METHOD_LABELS",
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


def method_label(method: str) -> str:
    """Return the human-readable label of `method` (the name itself if unknown)."""
    return METHOD_LABELS.get(method, method)


def method_colour(method: str) -> str:
    """Return the fixed colour of `method` (black if unknown)."""
    return METHOD_COLOURS.get(method, _FALLBACK_COLOUR)


def method_sort_key(method: str) -> tuple[int, str]:
    """Sort key placing known methods in :data:`METHODS` order, unknown ones after, by name."""
    try:
        return (METHODS.index(method), "")
    except ValueError:
        return (len(METHODS), method)


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
