"""The generator's receptive field and training crops, and the one tiling decision they inform.

:func:`resolve_tiling` decides a restoration's :class:`Tiling` once: the tile size and overlap the
caller gave, else those an earlier plan of the same restoration recorded, else from the measured
receptive field (:func:`receptive_radius`, kept per model) or, for generators whose every output
pixel depends on the whole tile, from the crops the generator was trained on
(:func:`training_context`).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fastscan.restore.temporal import input_frames

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)


#: Largest tile chosen automatically, in pixels of the U-Net's own input (LR px times the
#: generator's ``input_scale``: 2 for the paper's generator, which runs on the HR grid, 1 for the
#: low-resolution variant). The self-attention grows with the square of the tile area: on the CPU
#: the cost per pixel of the paper's generator is flat up to LR tiles of about 220 px and 25 %
#: higher at 300.
AUTO_MAX_INPUT = 512


#: Bounds of the automatic overlap, in pixels of the U-Net's input like :data:`AUTO_MAX_INPUT`
#: (LR px: 8 to 32 for the paper's generator). The upper bound matters for generators with
#: self-attention, whose output depends a little on the whole tile: on the demo's trained GAN, 99 %
#: of the input gradient lies beyond the largest measurable radius, and tiles differed from the
#: whole-frame restoration by at most 0.031 with 32 LR px of overlap and 0.022 with 64, while
#: PSNR and SSIM against the HR target were the same or better with the smaller overlap
#: (24.363 dB / 0.750 at 256-px tiles with 32 px, 24.358 dB / 0.748 with 64 px, 24.356 dB / 0.745
#: whole) and 64 px cost 1.5 times the time.
AUTO_OVERLAP = (16, 64)


#: Share of the generator's input gradient the automatic overlap must contain.
RECEPTIVE_FRACTION = 0.99


#: LR size of the probe image :func:`resolve_tiling` measures the receptive field on.
RADIUS_PROBE = 128


#: Automatic tiles of a generator whose receptive field spans the probe, in multiples of its
#: training crops. Self-attention averages over every position of the tile; and a U-Net whose
#: deepest features were only 2-4 px on its training crops learnt them from the zero padding at the
#: crop's border. Either way, tiles larger than the crops it was trained on take it away from what
#: it learnt. On the quality benchmark's 8 held-out frames (models trained on 64-px LR crops) tiles
#: of the crop size with a quarter of it as overlap were never worse and sometimes far better than
#: twice the crop (128 px, overlap 16): faithful GAN 25.50 dB / SSIM 0.825 against 0.817; a lowres
#: generator trained 12 epochs 25.31 dB / 0.738 against 24.00 dB / 0.272 (on one frame restored
#: whole: 20.25 dB / 0.069); the same lowres GAN without self-attention 25.28 dB / 0.761 against
#: 24.84 dB / 0.444 at twice the crop (overlap 32) and 21.09 dB / 0.052 restored whole.
AUTO_CONTEXT_TILES = 1


def receptive_radius(
    model: torch.nn.Module, *, size: int = 128, fraction: float = RECEPTIVE_FRACTION, device: str | torch.device = "cpu", seed: int = 0
) -> int:
    """Radius (LR px) of the square around a pixel that holds ``fraction`` of its input gradient.

    The theoretical receptive field of a ResNet U-Net spans hundreds of pixels, but almost all of
    an output pixel's dependence on its input is close by; the gradient of one output pixel with
    respect to a textured probe image measures how close (Luo et al., 2016, effective receptive
    field). Tiles whose overlap covers this radius restore like the whole image.

    Parameters
    ----------
    model : torch.nn.Module
        Generator in eval mode on ``device``.
    size : int
        LR size of the probe; radii up to ``size // 2`` can be measured.
    fraction : float
        Share of the absolute gradient inside the returned radius.
    seed : int
        Seed of the probe image.

    Returns
    -------
    int
    """
    import torch
    from scipy import ndimage as ndi

    # A smooth random texture in [0, 1] resembles normalised images; white noise would understate
    # the field (measured on a trained generator: 12 px against 30 px for the texture, and tiles
    # needed 32 px of overlap to restore within 1e-2 of the whole image).
    texture = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    # A generator with temporal context sees the same texture in every frame of its window.
    frames = input_frames(model)
    probe = torch.from_numpy(texture.astype(np.float32))[None, None].expand(1, frames, size, size).to(device)
    with torch.inference_mode(False), torch.enable_grad():
        x = probe.clone().requires_grad_(True)
        y = model(x)
        cy, cx = y.shape[-2] // 2, y.shape[-1] // 2
        (grad,) = torch.autograd.grad(y[0, 0, cy, cx].float(), x)
    mass = grad[0].abs().sum(dim=0).double().cpu().numpy()
    total = mass.sum()
    if not np.isfinite(total) or total <= 0:
        log.warning("receptive field probe gave no gradient; assuming %d px", size // 4)
        return size // 4
    iy, ix = np.indices(mass.shape)
    dist = np.maximum(np.abs(iy - size // 2), np.abs(ix - size // 2))
    per_ring = np.bincount(dist.ravel(), weights=mass.ravel())
    radius = int(np.searchsorted(np.cumsum(per_ring), fraction * total))
    if radius >= size // 2 - 1:
        # Normal for generators with self-attention (see AUTO_OVERLAP), hence not a warning.
        log.info("the generator's receptive field reaches the edge of the %d px probe", size)
    return radius


_RADIUS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _torch_device(device: str | torch.device) -> torch.device:
    import torch

    return torch.device(device)


def training_context(meta: Mapping[str, Any]) -> int | None:
    """LR size of the crops a generator was last trained on, from its ``model.json``.

    The dataset's tile, or, for a stage-1 (MSE) generator whose last progressive-resizing phase
    used smaller crops, that size; None if unknown.
    """
    tile = (meta.get("dataset") or {}).get("tile")
    if not tile:
        return None
    sizes = ((meta.get("config") or {}).get("generator") or {}).get("sizes") or []
    if meta.get("stage") == "mse" and sizes and sizes[-1]:
        return min(int(tile), int(sizes[-1]))
    return int(tile)


def _measured_radius(model: torch.nn.Module, device: str | torch.device) -> int:
    """:func:`receptive_radius`, kept per model until its weights change."""
    key = (str(_torch_device(device)), tuple(p._version for p in model.parameters()))
    cached = _RADIUS_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    radius = receptive_radius(model, size=RADIUS_PROBE, device=device)
    _RADIUS_CACHE[model] = (key, radius)
    return radius


#: Where a value of a :class:`Tiling` came from (:func:`resolve_tiling`).
GIVEN = "given"
PLAN = "plan"
TRAINING_CROPS = "training crops"
RECEPTIVE_FIELD = "receptive field"


@dataclass(frozen=True)
class Tiling:
    """The tile size and overlap (LR px) of one restoration, and where each came from.

    ``tile_from`` and ``overlap_from`` are :data:`GIVEN` (the caller: ``restore.tile``,
    ``--tile``, an argument), :data:`PLAN` (the ``plan.json`` of an earlier run of the same
    restoration), :data:`TRAINING_CROPS` (``model.json``'s training crops, for a generator whose
    every output pixel depends on the whole tile) or :data:`RECEPTIVE_FIELD` (the measured
    effective receptive field).
    """

    tile: int
    overlap: int
    tile_from: str = GIVEN
    overlap_from: str = GIVEN

    def __post_init__(self) -> None:
        if self.overlap < 0 or self.tile - self.overlap <= 0:
            raise ValueError(f"overlap {self.overlap} must be at least 0 and smaller than the tile size {self.tile}")


def unet_input_scale(model: torch.nn.Module, scale: int) -> int:
    """The U-Net's input pixels per LR pixel: the model's ``input_scale``, else ``scale`` (the
    paper's generator runs on the LR frame resized to the HR grid)."""
    return int(getattr(model, "input_scale", scale))


def resolve_tiling(
    model: torch.nn.Module,
    *,
    tile: int | None,
    overlap: int | None,
    input_scale: int,
    context: int | None = None,
    planned: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Tiling:
    """The one decision of a restoration's tile size and overlap.

    Each value is taken, first found, from: the caller (``tile``, ``overlap``; the config's
    ``restore.tile`` and ``restore.overlap``, the command line's ``--tile`` and ``--overlap``);
    ``planned``, the ``tile`` and ``overlap`` an earlier run of the same restoration recorded in
    its ``plan.json``, so a resumed run (and every part of a scattered one) keeps the tiling its
    regions were restored with; and otherwise the generator itself.

    A generator whose receptive field is local (it ends well inside the probe of
    :func:`receptive_radius`) gets an overlap of its radius rounded up to 8 px within
    :data:`AUTO_OVERLAP`, and tiles of :data:`AUTO_MAX_INPUT` or four overlaps, whichever is
    larger: tiles then restore like the whole image. Both bounds are in pixels of the U-Net's
    input, ``input_scale`` per LR pixel (:func:`unet_input_scale`; the result is in LR px).

    With self-attention (or a receptive field as deep as the lowres variant's on the LR grid)
    every output pixel depends on the whole tile, and no overlap makes tiles restore like the
    whole image. Such a generator, when the LR ``context`` it was trained on is known
    (:func:`training_context` of its ``model.json``), restores in tiles of that context with a
    quarter of it as overlap: larger tiles take it away from what it was trained on (see
    :data:`AUTO_CONTEXT_TILES`). The radius is measured (on ``device``) only when a value is
    still open, and once per model until its weights change, so restoring frame after frame
    measures once.

    Raises
    ------
    ValueError
        When the overlap is negative or not smaller than the tile.
    """
    tile_from = overlap_from = GIVEN
    if tile is None and planned is not None and planned.get("tile") is not None:
        tile, tile_from = planned["tile"], PLAN
    if overlap is None and planned is not None and planned.get("overlap") is not None:
        overlap, overlap_from = planned["overlap"], PLAN
    if tile is not None and overlap is not None:
        return Tiling(int(tile), int(overlap), tile_from, overlap_from)
    lo, hi = (max(8, b // int(input_scale)) for b in AUTO_OVERLAP)
    radius = _measured_radius(model, device)
    # A field reaching the probe's last tenth spans the tile: global, not a large local field.
    attention = radius >= 0.9 * (RADIUS_PROBE // 2)
    if attention and context:
        if overlap is None:
            overlap, overlap_from = max(8, int(context) // 4), TRAINING_CROPS
        if tile is None:
            tile, tile_from = max(AUTO_CONTEXT_TILES * int(context), 4 * overlap), TRAINING_CROPS
        log.info(
            "receptive field spans the whole tile (self-attention or a deep field): tiles of %d px, overlap %d px, from the %d-px training crops",
            tile,
            overlap,
            context,
        )
        return Tiling(int(tile), int(overlap), tile_from, overlap_from)
    if overlap is None:
        overlap, overlap_from = int(min(hi, max(lo, 8 * math.ceil(radius / 8)))), RECEPTIVE_FIELD
        log.info("receptive field: %d px hold %.0f%% of the input gradient -> overlap %d px", radius, 100 * RECEPTIVE_FRACTION, overlap)
    if tile is None:
        tile, tile_from = max(AUTO_MAX_INPUT // int(input_scale), 4 * overlap), RECEPTIVE_FIELD
    return Tiling(int(tile), int(overlap), tile_from, overlap_from)


def model_tiling(
    model: torch.nn.Module,
    meta: Mapping[str, Any],
    *,
    scale: int,
    tile: int | None,
    overlap: int | None,
    planned: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Tiling:
    """:func:`resolve_tiling` for a loaded generator and its ``model.json`` (``meta``), as every
    restoration (FOVs, slides, series) asks it: the U-Net's input scale from the model, the training
    context from ``meta``."""
    return resolve_tiling(
        model,
        tile=tile,
        overlap=overlap,
        input_scale=unet_input_scale(model, scale),
        context=training_context(meta),
        planned=planned,
        device=device,
    )


def auto_tiling(
    model: torch.nn.Module,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
    input_scale: int = 2,
    context: int | None = None,
) -> tuple[int, int]:
    """``(tile, overlap)`` of :func:`resolve_tiling` without an earlier plan: what a restoration
    of this generator chooses for the values left open (``fastscan info`` and the bioimage.io
    package report it)."""
    tiling = resolve_tiling(model, tile=tile, overlap=overlap, input_scale=input_scale, context=context, device=device)
    return tiling.tile, tiling.overlap
