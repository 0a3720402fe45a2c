"""Tile geometry: where tiles start on an axis, how large they are, how they are blended.

Pure functions of sizes, one axis at a time (the engine combines two); no model, no store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def blend_window(size: int, overlap: int, *, margin: int | None = None) -> np.ndarray:
    """1-D blending weights of one tile: 0 on the outer ``margin`` px, a raised-cosine ramp over the
    rest of the ``overlap``, 1 in the middle.

    The outer ``margin`` of a tile sees zero padding inside the network, so it is discarded
    (CSBDeep crops the halo for the same reason); the ramps of two neighbours overlapping by
    ``overlap`` px add up to exactly 1, so blending never changes intensities and leaves no seam.
    ``margin`` defaults to a quarter of the overlap.
    """
    if margin is None:
        margin = overlap // 4
    if overlap and not 0 <= 2 * margin < overlap:
        raise ValueError(f"margin {margin} must be less than half the overlap {overlap}")
    w = np.ones(size, dtype=np.float32)
    if overlap > 0:
        n = overlap - 2 * margin
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n)
        edge = np.concatenate([np.zeros(margin, np.float32), ramp, np.ones(margin, np.float32)])
        w[:overlap] = edge
        w[size - overlap :] = edge[::-1]
    return w


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of ``tile`` px stepping ``tile - overlap`` over a padded axis."""
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    n = max(1, math.ceil((size - overlap) / step))
    return [i * step for i in range(n)]


def fit_tile(length: int, tile: int, overlap: int, *, align: int = 8) -> int:
    """Tile size that covers ``length`` px plus a halo of ``overlap`` on each side with the fewest
    tiles of at most ``tile`` px, each as small as that number of tiles allows.

    A fixed tile wastes up to a whole tile of padding at the far edge; spreading the same number
    of tiles evenly keeps the computed area close to the image. The size is rounded up to a
    multiple of ``align`` so the U-Net's down- and up-sampling stay exact.

    Parameters
    ----------
    length : int
        Interior length of the axis (LR px).
    tile, overlap : int
        Largest tile and the overlap between neighbours (LR px).
    align : int
        Granularity of the result.

    Returns
    -------
    int
    """
    if tile - overlap <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    n = max(1, math.ceil((length + overlap) / (tile - overlap)))
    t = math.ceil((length + overlap) / n) + overlap
    return int(align * math.ceil(t / align))


def _pad(block: np.ndarray, pad: Sequence[tuple[int, int]]) -> np.ndarray:
    """Reflection padding; axes too short to reflect repeat their edge instead."""
    if not any(p for pair in pad for p in pair):
        return block
    short = any(n < 2 for n, (a, b) in zip(block.shape, pad, strict=True) if a or b)
    return np.pad(block, pad, mode="edge" if short else "reflect")
