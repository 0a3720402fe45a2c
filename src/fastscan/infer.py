"""Tiled restoration: whole slides and time series into OME-Zarr, FOV series for evaluation.

Engine
    :class:`TileEngine` cuts normalised LR images into overlapping tiles, runs them through the
    generator in batches and blends them with a raised-cosine window whose overlapping ramps add
    up to exactly one, so tile borders leave no seams; the halo at the image border is reflected,
    as in CSBDeep's tiled prediction. Tile size and overlap default to the generator's measured
    receptive field (:func:`receptive_radius`).
Slides
    :func:`restore_slide` reads a slide lazily, chunk-aligned region by region, and writes each
    region's chunks of the OME-Zarr image as soon as it is restored, so memory is bounded by the
    region size and never by the slide. The work goes into ``OUT.partial`` with one marker per
    finished region: a killed run resumes from the markers, and only :func:`finalize_slide`
    renames the store into place. :func:`prepare_slide`, ``restore_slide(part=...)`` and
    :func:`finalize_slide` are the scatter/gather steps the workflow runs as separate jobs.
Series
    :func:`restore_series` restores a video-rate ``(T, Y, X)`` series in frame batches into an
    OME-Zarr ``(t, y, x)`` image, after the model's input geometry has been applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from fastscan.atomic import atomic_path
from fastscan.lock import output_lock

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Numeric precisions of inference; ``auto`` is bf16 on CUDA (fp16 where bf16 is missing) and on
#: processors with bf16 matrix units, fp32 on other processors (:func:`resolve_precision`).
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
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
#: LR size of the probe image :func:`auto_tiling` measures the receptive field on.
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


# --------------------------------------------------------------------------------------------
# tile geometry


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


# --------------------------------------------------------------------------------------------
# model preparation, precision, automatic tiling


def native_bf16_cpu() -> bool:
    """Whether this processor multiplies bfloat16 in hardware (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bf16 and it is slower than float32.
    """
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    ``auto`` is bfloat16 on CUDA (float16 on GPUs without bf16) and on processors with bf16
    matrix units (:func:`native_bf16_cpu`), float32 on other processors, where bf16 is emulated
    and slower. bf16 changes a restored pixel by about 1e-3 of the normalised range (measured
    in ``benchmarks/infer.py``), far below the noise the network removes; ask for ``float32``
    for results that do not depend on the machine. Evaluations (:func:`restore_fov`) always
    run in float32.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if native_bf16_cpu() else torch.float32
    return getattr(torch, precision)


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold weight normalisation and batch normalisation into the convolution weights, in place.

    Weight norm recomputes every weight from its direction and norm on each forward pass, and an
    inference-time batch norm is an affine map a preceding convolution can absorb; both only cost
    time when the weights are fixed. Batch norms that follow a convolution directly (in a
    ``Sequential``, or as ``convN``/``bnN`` of a ResNet block) are folded; others are kept.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; it is modified and returned.
    """
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    for module in list(model.modules()):
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)
        elif parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
        if not (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats):
            return False
        if bn.running_mean is None or conv.out_channels != bn.num_features:
            return False
        with torch.no_grad():
            inv = torch.rsqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(inv)
            beta = bn.bias if bn.affine else torch.zeros_like(inv)
            factor = gamma * inv
            conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            new_bias = (bias - bn.running_mean) * factor + beta
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
        return True

    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                if fold(module._modules[a], module._modules[b]):
                    module._modules[b] = nn.Identity()
        for i in range(1, 4):
            conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
            if conv is not None and bn is not None and fold(conv, bn):
                setattr(module, f"bn{i}", nn.Identity())
    return model


def prepare_generator(model: torch.nn.Module, *, device: str | torch.device = "cpu", channels_last: bool = True, fuse: bool = True) -> torch.nn.Module:
    """Make a loaded generator ready for inference: eval mode, folded norms, device, memory format.

    NHWC (``channels_last``) suits tensor cores on CUDA and oneDNN on the CPU (measured on the
    ResNet34 U-Net, one CPU thread: 13 % faster in fp32, 1.8 times in bf16).
    """
    import torch

    model = model.eval()
    if fuse:
        fuse_for_inference(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


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


def input_frames(model: torch.nn.Module) -> int:
    """Input channels of a generator: the frames of its temporal window (1 for single frames)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return int(m.in_channels)
    return 1


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


def auto_tiling(
    model: torch.nn.Module,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
    input_scale: int = 2,
    context: int | None = None,
) -> tuple[int, int]:
    """Fill in a missing tile size or overlap from the generator's receptive field.

    A generator whose receptive field is local (it ends well inside the probe of
    :func:`receptive_radius`) gets an overlap of its radius rounded up to 8 px within
    :data:`AUTO_OVERLAP`, and tiles of :data:`AUTO_MAX_INPUT` or four overlaps, whichever is
    larger: tiles then restore like the whole image. Both bounds are in pixels of the U-Net's
    input, ``input_scale`` per LR pixel (the result is in LR px).

    With self-attention (or a receptive field as deep as the lowres variant's on the LR grid)
    every output pixel depends on the whole tile, and no overlap makes tiles restore like the
    whole image. Such a generator, when the LR ``context`` it was trained on is known
    (:func:`training_context`), restores in tiles of that context with a quarter of it as overlap:
    larger tiles take it away from what it was trained on (see :data:`AUTO_CONTEXT_TILES`). The
    radius is measured once per model (until its weights change), so restoring frame after frame
    measures once.
    """
    if tile is not None and overlap is not None:
        return int(tile), int(overlap)
    lo, hi = (max(8, b // int(input_scale)) for b in AUTO_OVERLAP)
    radius = _measured_radius(model, device)
    # A field reaching the probe's last tenth spans the tile: global, not a large local field.
    attention = radius >= 0.9 * (RADIUS_PROBE // 2)
    if attention and context:
        overlap = max(8, int(context) // 4) if overlap is None else overlap
        tile = max(AUTO_CONTEXT_TILES * int(context), 4 * overlap) if tile is None else tile
        log.info(
            "receptive field spans the whole tile (self-attention or a deep field): tiles of %d px, overlap %d px, from the %d-px training crops",
            tile,
            overlap,
            context,
        )
        return int(tile), int(overlap)
    if overlap is None:
        overlap = int(min(hi, max(lo, 8 * math.ceil(radius / 8))))
        log.info("receptive field: %d px hold %.0f%% of the input gradient -> overlap %d px", radius, 100 * RECEPTIVE_FRACTION, overlap)
    if tile is None:
        tile = max(AUTO_MAX_INPUT // int(input_scale), 4 * overlap)
    return int(tile), int(overlap)


#: U-Net input pixels per forward pass on the CPU (four 256-px inputs). A fixed pixel budget keeps
#: memory flat while small tiles are batched enough to amortise the per-call cost of the deep
#: layers: on 2 cores a lowres GAN with 64-px LR tiles restored a 256-px frame in 0.76 s at batch 4,
#: 0.58 s at 16 and 0.54 s at 36, while the faithful generator (128-px inputs) took 1.73 s at
#: batch 4 and 1.74 s at 16.
CPU_BATCH_PIXELS = 4 * 256 * 256


def default_batch_size(device: str | torch.device, tile_shape: tuple[int, int], scale: int, *, input_scale: int | None = None) -> int:
    """Tiles per forward pass: a fixed pixel budget on the CPU, about half the free memory on CUDA.

    On the CPU the batch holds :data:`CPU_BATCH_PIXELS` pixels of the U-Net's input (``input_scale``
    per LR pixel, ``scale`` if None), at most 64 tiles. The GPU estimate assumes about 3 kB of
    activations per HR pixel (the ResNet34 U-Net under bf16).
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        k = int(scale if input_scale is None else input_scale)
        return int(max(1, min(64, CPU_BATCH_PIXELS // (k * k * tile_shape[0] * tile_shape[1]))))
    free, _ = torch.cuda.mem_get_info(dev)
    per_tile = 3e3 * scale**2 * tile_shape[0] * tile_shape[1]
    return int(max(1, min(64, 0.5 * free // per_tile)))


# --------------------------------------------------------------------------------------------
# the engine


class TileEngine:
    """Batched, blended tiled inference of a generator on normalised LR images.

    Parameters
    ----------
    model : torch.nn.Module
        Generator mapping ``(N, 1, h, w)`` LR tiles to ``(N, 1, scale*h, scale*w)``, in eval mode
        on ``device`` (see :func:`prepare_generator`).
    scale : int
        HR pixels per LR pixel.
    tile, overlap : int, optional
        Largest LR tile and the overlap between neighbours; None measures them
        (:func:`auto_tiling`).
    batch_size : int, optional
        Tiles per forward pass; None chooses from the device (:func:`default_batch_size`).
    device : str
    precision : {"auto", "float32", "bfloat16", "float16"}
        Compute dtype (:func:`resolve_precision`): autocast on CUDA, a bf16 copy of the model on
        the CPU; the blend is always accumulated in float32.
    channels_last : bool, optional
        Feed tiles in NHWC layout; the default follows the model's own layout.
    prefetch : bool, optional
        Cut (and on CUDA pin) the next batch in a background thread while the model runs on the
        current one; the default is on for CUDA, where the host is otherwise idle.
    context : int, optional
        LR size of the crops the generator was trained on (:func:`training_context`); sets the
        automatic tiling of generators with self-attention (:func:`auto_tiling`).

    Attributes
    ----------
    tiles_run : int
        Tiles computed so far (for tests and benchmarks).
    input_scale : int
        The U-Net's input pixels per LR pixel (the model's ``input_scale``, else ``scale``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        scale: int,
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        channels_last: bool | None = None,
        prefetch: bool | None = None,
        context: int | None = None,
    ) -> None:
        import torch

        from fastscan.models import is_channels_last

        self.model = model
        self.scale = int(scale)
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.channels_last = is_channels_last(model) if channels_last is None else bool(channels_last)
        self.prefetch = self.device.type == "cuda" if prefetch is None else bool(prefetch)
        # A generator that runs its U-Net on the LR grid affords tiles ``scale`` times larger.
        self.input_scale = int(getattr(model, "input_scale", self.scale))
        self.tile, self.overlap = auto_tiling(model, tile=tile, overlap=overlap, device=self.device, input_scale=self.input_scale, context=context)
        if self.overlap < 0 or self.tile - self.overlap <= 0:
            raise ValueError(f"overlap {self.overlap} must be at least 0 and smaller than the tile size {self.tile}")
        self.batch_size = batch_size
        self.tiles_run = 0
        self._buffers: list[torch.Tensor] = []
        # On the CPU the network runs with bf16 copies of its weights (the model itself is not
        # changed): about 1.6 times faster than bf16 autocast, which casts every weight on every
        # call and keeps the operations between convolutions in float32 (ResNet34 U-Net,
        # 256-px tiles). CUDA keeps autocast.
        self._autocast = self.dtype != torch.float32
        self._lowp_state: dict[str, torch.Tensor] | None = None
        self._cast_input = False
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            named = [*model.named_parameters(), *model.named_buffers()]
            self._lowp_state = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in named}
            self._autocast = False
            self._cast_input = not getattr(model, "float32_io", False)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._lowp_state is None:
            return self.model(x)
        from torch.func import functional_call

        return functional_call(self.model, self._lowp_state, (x,))

    def _buffer(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        """A zeroed accumulator, reused between calls: fresh large allocations cost page faults
        that, for a small generator, take longer than the blending itself."""
        import torch

        while len(self._buffers) <= index:
            self._buffers.append(torch.empty(0, device=self.device))
        buf = self._buffers[index]
        if buf.numel() < shape[0] * shape[1]:
            buf = self._buffers[index] = torch.empty(shape[0] * shape[1], dtype=torch.float32, device=self.device)
        return buf[: shape[0] * shape[1]].view(shape).zero_()

    def tile_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """LR tile size used for images of interior ``shape`` (:func:`fit_tile` per axis)."""
        return fit_tile(shape[0], self.tile, self.overlap), fit_tile(shape[1], self.tile, self.overlap)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Restore one normalised ``(Y, X)`` image, or the ``(frames, Y, X)`` temporal window of
        a generator with temporal context; returns ``(scale*Y, scale*X)`` float32."""
        return self.predict_stack(np.asarray(image, dtype=np.float32)[None])[0]

    def predict_stack(self, images: np.ndarray) -> np.ndarray:
        """Restore ``(N, Y, X)`` normalised frames (or ``(N, frames, Y, X)`` temporal windows);
        their tiles share batches.

        Returns
        -------
        ndarray, shape (N, scale*Y, scale*X), float32
        """
        images = np.asarray(images, dtype=np.float32)
        o = self.overlap
        lead = ((0, 0),) * (images.ndim - 3)
        blocks = [_pad(f, (*lead, (o, o), (o, o))) for f in images]
        ny, nx = images.shape[-2:]
        out = self.predict_blocks(blocks, tile_shape=self.tile_shape((ny, nx)))
        return np.stack(out) if out else np.zeros((0, self.scale * ny, self.scale * nx), np.float32)

    def predict_blocks(self, blocks: Sequence[np.ndarray], *, tile_shape: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Restore blocks that already carry a halo of ``overlap`` px of context on every side.

        Parameters
        ----------
        blocks : sequence of ndarray, each (Y + 2*overlap, X + 2*overlap)
            Normalised LR blocks; sizes may differ. A generator with temporal context takes
            ``(frames, Y + 2*overlap, X + 2*overlap)`` windows, the restored frame in the middle.
        tile_shape : (int, int), optional
            LR tile size to use for every block (default: fitted to the largest block). Whole
            slides pass the size fitted to a full region, so all regions share one tile shape.

        Returns
        -------
        list of ndarray, each (scale*Y, scale*X) float32
            The restored interiors.
        """
        import torch

        o, s = self.overlap, self.scale
        if not blocks:
            return []
        if tile_shape is None:
            tile_shape = self.tile_shape((max(b.shape[-2] for b in blocks) - 2 * o, max(b.shape[-1] for b in blocks) - 2 * o))
        ty, tx = tile_shape
        bs = self.batch_size or default_batch_size(self.device, tile_shape, s, input_scale=self.input_scale)
        padded, grids, accs = [], [], []
        for b in blocks:
            if b.shape[-2] <= 2 * o or b.shape[-1] <= 2 * o:
                raise ValueError(f"block {b.shape} has no interior inside its {o}-px halo")
            sy, sx = tile_starts(b.shape[-2], ty, o), tile_starts(b.shape[-1], tx, o)
            # The last tile may reach past the halo; what it sees there only feeds discarded pixels.
            extra = (sy[-1] + ty - b.shape[-2], sx[-1] + tx - b.shape[-1])
            lead = ((0, 0),) * (b.ndim - 2)
            padded.append(_pad(np.asarray(b, dtype=np.float32), (*lead, (0, max(0, extra[0])), (0, max(0, extra[1])))))
            grids.append((sy, sx))
            accs.append(self._buffer(len(accs), (s * (sy[-1] + ty), s * (sx[-1] + tx))))
        wy = torch.from_numpy(blend_window(s * ty, s * o)).to(self.device)
        wx = torch.from_numpy(blend_window(s * tx, s * o)).to(self.device)
        win = wy[:, None] * wx[None, :]
        items = [(i, y, x) for i, (sy, sx) in enumerate(grids) for y in sy for x in sx]
        cuda = self.device.type == "cuda"

        def assemble(batch: list[tuple[int, int, int]]) -> torch.Tensor:
            arr = np.stack([padded[i][..., y : y + ty, x : x + tx] for i, y, x in batch])
            if arr.ndim == 3:  # single frames: one input channel
                arr = arr[:, None]
            t = torch.from_numpy(arr)
            return t.pin_memory() if cuda else t

        batches = [items[k : k + bs] for k in range(0, len(items), bs)]
        autocast = torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self._autocast)
        # With prefetch the next batch is cut (and pinned) on the host while the model runs.
        with contextlib.ExitStack() as stack, torch.inference_mode(), autocast:
            pool = stack.enter_context(ThreadPoolExecutor(1)) if self.prefetch and len(batches) > 1 else None
            nxt = pool.submit(assemble, batches[0]) if pool else None
            for k, batch in enumerate(batches):
                host = nxt.result() if pool else assemble(batch)
                if pool and k + 1 < len(batches):
                    nxt = pool.submit(assemble, batches[k + 1])
                xb = host.to(self.device, non_blocking=True)
                if self._cast_input:
                    xb = xb.to(self.dtype)
                if self.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                pred = self._run(xb)
                if pred.shape[-2:] != (s * ty, s * tx):
                    raise ValueError(f"generator returned tiles of {tuple(pred.shape[-2:])} for LR tiles of {(ty, tx)} at scale {s}")
                pred = pred[:, 0].float() * win
                for (i, y, x), p in zip(batch, pred):
                    accs[i][s * y : s * (y + ty), s * x : s * (x + tx)] += p
                self.tiles_run += len(batch)
        out = []
        for (sy, sx), acc, b in zip(grids, accs, blocks):
            # The window sum is separable; inside the halo it is 1 up to rounding.
            sum_y = torch.zeros(acc.shape[0], device=self.device)
            sum_x = torch.zeros(acc.shape[1], device=self.device)
            for y in sy:
                sum_y[s * y : s * (y + ty)] += wy
            for x in sx:
                sum_x[s * x : s * (x + tx)] += wx
            ny, nx = b.shape[-2] - 2 * o, b.shape[-1] - 2 * o
            interior = acc[s * o : s * (o + ny), s * o : s * (o + nx)]
            interior = interior / (sum_y[s * o : s * (o + ny), None] * sum_x[None, s * o : s * (o + nx)])
            out.append(interior.cpu().numpy())
        if len(self._buffers) > len(blocks):  # keep only what one call of this size needs
            del self._buffers[len(blocks) :]
        return out


def predict_image(
    model,
    image: np.ndarray,
    *,
    scale: int,
    tile: int | None = 128,
    overlap: int | None = 32,
    batch_size: int | None = 4,
    device: str = "cpu",
    precision: str = "float32",
    channels_last: bool | None = False,
    context: int | None = None,
) -> np.ndarray:
    """Restore one normalised 2-D LR image with overlapping, blended tiles.

    Parameters
    ----------
    model : torch.nn.Module
        Generator mapping ``(N, 1, t, t)`` LR tiles to ``(N, 1, scale*t, scale*t)``, on ``device``.
    image : ndarray, shape (Y, X)
        Normalised LR image.
    scale : int
    tile, overlap : int or None
        Largest LR tile and overlap between neighbouring tiles (LR px); None measures them from
        the generator's receptive field (:func:`auto_tiling`).
    batch_size : int or None
        None chooses from the device.
    device : str
    precision : str
        See :func:`resolve_precision`; float32 unless asked, so evaluations stay exact.
    channels_last : bool or None
        NHWC input tiles (None: when the model's weights are NHWC). The model is not changed here.
    context : int or None
        LR training crop of the generator, for the automatic tiling (see :class:`TileEngine`).

    Returns
    -------
    ndarray, shape (scale*Y, scale*X), float32
    """
    model.eval()
    engine = TileEngine(
        model,
        scale=scale,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        precision=precision,
        channels_last=channels_last,
        context=context,
    )
    return engine.predict(image)


def restore_fov(
    registered: str | os.PathLike,
    out: str | os.PathLike,
    *,
    models: dict[str, str | os.PathLike],
    frames: int = 2,
    tile: int | None = 128,
    overlap: int | None = 32,
    batch_size: int | None = 4,
    device: str = "cpu",
    threads: int | None = None,
    classical: bool = True,
    precision: str = "float32",
) -> dict[str, Any]:
    """Restore the first ``frames`` frames of a registered FOV with each model, for evaluation.

    Parameters
    ----------
    registered : path-like
        Registered FOV store.
    out : path-like
        Restored FOV store (written atomically), see docs/architecture.md.
    models : dict
        Method name (``mse``, ``gan``) -> model directory. All must share one normalisation.
    tile, overlap, batch_size : int or None
        Tiling of :class:`TileEngine`; None chooses from each model (its training crops or
        receptive field) and the device.
    classical : bool
        Also store the classical cascade (:func:`fastscan.classical.restore_classical`) with the
        line phase and field fraction registration fitted for this FOV, as method ``classical``.
    precision : str
        Compute dtype of the generators (:func:`resolve_precision`). Evaluations default to
        float32, so reported metrics do not depend on the machine.
    """
    import torch

    from fastscan.dataset import normalise
    from fastscan.geometry import model_geometry
    from fastscan.models import load_generator, model_frames

    if threads:
        torch.set_num_threads(int(threads))
    g = zarr.open_group(str(registered), mode="r")
    attrs = dict(g.attrs.get("fastscan", {}))
    n = min(int(frames), g["lr"].shape[0])
    loaded = {name: load_generator(path, device=device) for name, path in models.items()}
    norms = {name: meta["normalisation"] for name, (_, meta) in loaded.items()}
    norm = next(iter(norms.values()))
    if any(v["lr"] != norm["lr"] or v["hr"] != norm["hr"] for v in norms.values()):
        raise ValueError(f"models {list(models)} were trained with different normalisations; compare models of one dataset")
    scale = int(next(iter(loaded.values()))[1]["scale"])
    geometries = {name: model_geometry(meta) is not None for name, (_, meta) in loaded.items()}
    reg = attrs.get("registration", {})
    total = g["lr"].shape[0]
    # Generators with temporal context also read the frames after the last restored one.
    windows = {name: model_frames(meta) for name, (_, meta) in loaded.items()}
    read = min(total, n + max(windows.values()) // 2)
    raw_all = np.asarray(g["lr"][:read], dtype=np.float32)
    lr_all = normalise(raw_all, *norm["lr"])
    lr = lr_all[:n]
    hr = normalise(g["hr"][...], *norm["hr"])
    # The networks see the frames in the geometry they were trained on; this FOV's own fitted
    # scan model is used, as for the classical cascade. ``lr`` keeps the scan geometry: it is
    # the input of the interpolation baselines.
    corrected_all = None
    if any(geometries.values()):
        from fastscan.geometry import correct_frames

        corrected_all = normalise(
            correct_frames(raw_all, line_phase_px=float(reg.get("line_phase_px", 0.0)), field_fraction=float(reg.get("field_fraction", 0.0))),
            *norm["lr"],
        )
    meta = {
        "kind": "restored_fov",
        "frames": list(range(n)),
        "methods": (["classical"] if classical else []) + list(models),
        "scale": scale,
        "normalisation": norm,
        "geometry": {name: loaded[name][1].get("geometry", {"correct": False}) for name in loaded},
        "models": {k: str(v) for k, v in models.items()},
        "source": str(registered),
        **{k: attrs[k] for k in ("sample", "session", "fov", "lr_pixel_size_um", "hr_pixel_size_um") if k in attrs},
    }
    with atomic_path(out) as tmp:
        og = zarr.open_group(tmp, mode="w")
        og.create_array("lr", data=lr, chunks=(1,) + lr.shape[1:])
        og.create_array("hr", data=hr)
        if classical:
            from fastscan.classical import restore_classical

            reg = attrs.get("registration", {})
            # The series' photon calibration (registration.photons, in ADU) lets the cascade
            # denoise in the variance-stabilised domain; ``lr`` is normalised, hence the range.
            pred = restore_classical(
                lr,
                line_phase_px=float(reg.get("line_phase_px", 0.0)),
                field_fraction=float(reg.get("field_fraction", 0.0)),
                scale=scale,
                calibration=reg.get("photons"),
                normalisation=norm["lr"],
            )
            og.create_array("classical", data=pred, chunks=(1,) + pred.shape[1:])
        for name, (model, _) in loaded.items():
            t0 = time.time()
            source = corrected_all if geometries[name] else lr_all
            inputs = temporal_stack(source, range(n), frames=windows[name], total=total)
            # One engine for all frames: tiling, buffers (and any low-precision weights) once.
            engine = TileEngine(
                model.eval(),
                scale=scale,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                device=device,
                precision=precision,
                channels_last=False,
                context=training_context(loaded[name][1]),
            )
            pred = np.stack([engine.predict(f) for f in inputs])
            og.create_array(name, data=pred, chunks=(1,) + pred.shape[1:])
            log.info("restored %d frame(s) of %s with %s in %.1f s", n, registered, name, time.time() - t0)
        og.attrs["fastscan"] = meta
    return meta


# --------------------------------------------------------------------------------------------
# resumable OME-Zarr stores


class RestoreError(ValueError):
    """A restoration cannot start or finish; the message names the file and the problem."""


def parse_channels(spec: int | str | Sequence[int] | None) -> int | list[int] | str:
    """Channel selection of a slide: an index, a list of indices, or ``"all"``.

    Accepts what the slide sheet and the command line hold: ``0``, ``"2"``, ``"0,2"``, ``"all"``
    or a list. A single index gives a 2-D ``(y, x)`` output; a list or ``"all"`` gives
    ``(c, y, x)`` with every channel restored as its own grayscale plane.
    """
    if spec is None or spec == "":
        return 0
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError(f"channel must be 0 or more, got {spec}")
        return int(spec)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"channel must be an index, a comma-separated list of indices or 'all', got {spec!r}")
        return int(parts[0]) if len(parts) == 1 else [int(p) for p in parts]
    values = [int(v) for v in spec]
    if not values or min(values) < 0:
        raise ValueError(f"channel list must hold indices of 0 or more, got {spec!r}")
    return values


def _state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, shapes and values)."""
    import torch

    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        arr = value.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(arr.shape)}:{arr.dtype}".encode())
        if arr.numel():
            h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load_model(
    model_dir: str | os.PathLike | None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None,
    *,
    device: str | torch.device,
    channels_last: bool = True,
) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The prepared generator, its ``model.json`` content and a description for provenance."""
    if (model_dir is None) == (generator is None):
        raise ValueError("give exactly one of model_dir and generator")
    if generator is not None:
        model, meta = generator
        meta = dict(meta)
        path = None
    else:
        from fastscan.models import load_generator

        model, meta = load_generator(model_dir, device="cpu")
        path = str(model_dir)
    for key in ("scale", "normalisation"):
        if key not in meta:
            raise RestoreError(f"model {path or type(model).__name__}: model.json has no {key!r}")
    model = prepare_generator(model, device=device, channels_last=channels_last)
    # Digest of the folded weights: the same whether or not the module given was prepared before.
    desc = {"path": path, "digest": _state_digest(model), "scale": int(meta["scale"]), "normalisation": meta["normalisation"]}
    return model, meta, desc


def _partial(out: str | os.PathLike) -> Path:
    """Where a restoration is written until it is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _progress_dir(partial: Path) -> Path:
    return partial / ".progress"


def check_restore_output(out: str | os.PathLike, *, kind: str, inputs: Sequence[str | os.PathLike], overwrite: bool = False) -> None:
    """Refuse, before any work, an output path that a restoration must not write.

    ``out`` (and ``OUT.partial``) must not equal, contain or lie inside an input: replacing it
    would delete the input. Something already at ``out`` is replaced only when it is a clean
    fastscan store (:func:`fastscan.atomic.replaceable`) and either records the same output
    (same ``kind`` of restoration of the same input: a re-run) or ``overwrite`` is set. A user's
    folder or file is never replaced, ``overwrite`` or not.

    Parameters
    ----------
    out : path-like
    kind : str
        ``fastscan.kind`` of the store about to be written (``restored_slide``, ``restored_series``).
    inputs : sequence of path-like
        The files and folders read (the image or the frames of a glob, the model directory).
    overwrite : bool
        Replace a fastscan store of another restoration.
    """
    from fastscan.atomic import OutputError, check_replaceable, foreign_entries, store_attributes

    out = Path(out)
    mine = [out.resolve(), _partial(out).resolve()]
    for source in inputs:
        src = Path(source).resolve()
        for target in mine:
            if target == src or target in src.parents or src in target.parents:
                how = "is" if target == src else ("contains" if target in src.parents else "lies inside")
                raise RestoreError(f"{out}: the output {how} the input {source}; writing it would destroy the input. Choose an output path outside the inputs")
    check_replaceable(out, store=True)
    partial = _partial(out)
    # A partial store of fastscan's is a Zarr group (its zarr.json is written first) with chunks
    # and .progress/; a run that is setting one up right now passes this check and meets the lock.
    if partial.is_symlink() or partial.is_file() or (partial.is_dir() and any(partial.iterdir()) and foreign_entries(partial)):
        raise OutputError(f"{partial}: refusing to use it: it is not a partial restoration of fastscan's. Choose another output path, or move it away yourself")
    attrs = store_attributes(out) if out.is_dir() else None
    if attrs is None or overwrite:
        return
    same_input = bool(inputs) and Path(str(attrs.get("input", ""))).resolve() == Path(inputs[0]).resolve()
    if attrs.get("kind") != kind or not same_input:
        raise OutputError(
            f"{out}: already holds another fastscan output ({attrs.get('kind')} of {attrs.get('input')}). "
            "Pass --overwrite (overwrite=True) to replace it, or choose another output path"
        )
    log.info("%s: replacing the earlier %s of %s when this one is complete", out, kind, inputs[0])


def _marker(partial: Path, key: Sequence[int]) -> Path:
    # One directory level per key component keeps every directory small, however large the slide.
    return _progress_dir(partial).joinpath("done", *(str(k) for k in key))


def _done_keys(partial: Path, depth: int) -> set[tuple[int, ...]]:
    """Keys of the work units marked finished."""
    root = _progress_dir(partial) / "done"
    found: set[tuple[int, ...]] = set()

    def walk(path: Path, prefix: tuple[int, ...]) -> None:
        with os.scandir(path) as it:
            for entry in it:
                if not entry.name.isdigit():  # temporaries of a killed marker write
                    continue
                key = prefix + (int(entry.name),)
                if len(key) == depth:
                    if entry.is_file():
                        found.add(key)
                elif entry.is_dir():
                    walk(Path(entry.path), key)

    if root.is_dir():
        walk(root, ())
    return found


def _mark_done(partial: Path, key: Sequence[int]) -> None:
    from fastscan.atomic import write_text

    write_text(_marker(partial, key), "")


def _read_plan(partial: Path) -> dict[str, Any] | None:
    path = _progress_dir(partial) / "plan.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _open_partial(out: str | os.PathLike, plan: dict[str, Any], create: Callable[[zarr.Group], None]) -> tuple[Path, bool]:
    """Open ``OUT.partial`` for ``plan``: resume it when its plan is the same, else start afresh.

    The plan file is written last, so a store without one was never completely set up.

    Returns
    -------
    partial : Path
    resumed : bool
    """
    from fastscan.atomic import remove, write_text

    partial = _partial(out)
    plan = json.loads(json.dumps(plan))
    old = _read_plan(partial)
    if old == plan:
        return partial, True
    if partial.exists():
        why = "it was set up for other inputs or settings" if old else "it was never completely set up"
        log.warning("%s: discarding the partial restoration (%s)", partial, why)
        remove(partial)
    root = zarr.open_group(partial, mode="w", zarr_format=3)
    create(root)
    write_text(_progress_dir(partial) / "plan.json", json.dumps(plan, indent=1))
    return partial, False


# A restoration estimated to take longer than this is announced with a warning, so that a user
# who started a whole slide on the wrong device (or level) learns it after one region, not in a week.
LONG_RESTORATION_S = 24 * 3600.0


def _duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 45 s, 12 min, 3.5 h, 9.2 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class _Progress:
    """A tqdm bar on an interactive terminal; otherwise a log line every ``every_s`` seconds and at
    every tenth of the work, so a job's log shows where it is.

    After the first unit computed in this run, the time for the rest is estimated from it and
    logged (with a warning beyond :data:`LONG_RESTORATION_S`). The first unit also pays for
    warm-up, so the estimate errs on the long side.
    """

    def __init__(self, total: int, *, desc: str, initial: int = 0, enabled: bool | None = None, every_s: float = 60.0) -> None:
        self.total, self.done, self.desc, self.every_s = total, initial, desc, every_s
        self.t0 = self.last = time.monotonic()
        self.start = initial
        interactive = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="unit", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        if before == self.start and self.done < self.total:
            self._estimate(time.monotonic() - self.t0)
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        tenth = max(1, self.total // 10)
        if self.done == self.total or self.done // tenth > before // tenth or now - self.last >= self.every_s:
            self.last = now
            rate = (self.done - self.start) / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            log.info("%s: %d/%d done (%.1f%%, %.2f/s, about %.0f s left)", self.desc, self.done, self.total, 100 * self.done / max(self.total, 1), rate, eta)

    def _estimate(self, elapsed: float) -> None:
        first = self.done - self.start
        left = elapsed / first * (self.total - self.done)
        finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left))
        message = "%s: the first %d unit(s) took %s; the remaining %d will take about %s (until about %s)"
        args = (self.desc, first, _duration(elapsed), self.total - self.done, _duration(left), finish)
        if left > LONG_RESTORATION_S:
            log.warning(
                message + ". That is more than a day: consider a GPU (--device cuda), a coarser input level "
                "(--level), or scattering the regions over cluster jobs (restore.parts)",
                *args,
            )
        else:
            log.info(message, *args)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _overlap_io(device: torch.device) -> bool:
    """Whether reads and writes should run in background threads beside the computation.

    They pay off when something is left to run them: a GPU computing, or CPU cores torch does not
    use. When torch already has every core, the extra threads only compete with its thread pool
    (measured on 2 cores: 40 % slower).
    """
    import torch

    return device.type == "cuda" or torch.get_num_threads() < (os.cpu_count() or 1)


def _run_units(
    units: Sequence[tuple[int, ...]],
    *,
    read: Callable[[tuple[int, ...]], Any],
    compute: Callable[[Any], Any],
    write: Callable[[tuple[int, ...], Any], None],
    partial: Path,
    progress: _Progress,
    background: bool = True,
) -> None:
    """Read, restore and write work units, with reads and writes overlapping the computation when
    ``background`` is set.

    One unit is read ahead and at most two finished units wait to be written, so memory stays
    bounded by a few units. A unit is marked done only after its chunks are written: a unit that
    was being written when the job died is recomputed on the next run.
    """

    def write_and_mark(key: tuple[int, ...], value: Any) -> None:
        write(key, value)
        _mark_done(partial, key)

    if not units:
        return
    if not background:
        for key in units:
            write_and_mark(key, compute(read(key)))
            progress.update()
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        pending: deque = deque()
        nxt = reader.submit(read, units[0])
        for i, key in enumerate(units):
            data = nxt.result()
            if i + 1 < len(units):
                nxt = reader.submit(read, units[i + 1])
            result = compute(data)
            del data
            pending.append(writer.submit(write_and_mark, key, result))
            del result
            while len(pending) > 1 or (pending and pending[0].done()):
                pending.popleft().result()
                progress.update()
        while pending:
            pending.popleft().result()
            progress.update()


def _downsample_level(prev: zarr.Array, arr: zarr.Array) -> None:
    """``arr`` = 2x2 mean of ``prev`` over the last two axes, one output chunk at a time."""
    lead = prev.shape[:-2]
    ny, nx = arr.shape[-2:]
    cy, cx = arr.chunks[-2:]
    for idx in np.ndindex(*lead) if lead else [()]:
        for y0 in range(0, ny, cy):
            for x0 in range(0, nx, cx):
                y1, x1 = min(ny, y0 + cy), min(nx, x0 + cx)
                src = np.asarray(prev[idx + (slice(2 * y0, 2 * y1), slice(2 * x0, 2 * x1))], dtype=np.float32)
                arr[idx + (slice(y0, y1), slice(x0, x1))] = src.reshape(y1 - y0, 2, x1 - x0, 2).mean(axis=(1, 3))


def _finalize(
    out: str | os.PathLike,
    *,
    axes: list[dict[str, str]],
    pixel_size: Sequence[float] | None,
    pyramid_levels: int,
    name: str,
    provenance: dict[str, Any],
) -> None:
    """Build the pyramid and the NGFF metadata in ``OUT.partial``, then rename it into place.

    ``pixel_size`` is the level-0 size (µm) of the last two axes, or None when the input does not
    record one (the transforms are then in input pixels and the axes carry no unit).
    """
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    from fastscan.atomic import remove

    partial = _partial(out)
    root = zarr.open_group(partial, mode="r+", zarr_format=3)
    prev = root["0"]
    keys = ["0"]
    for lev in range(1, pyramid_levels):
        shape = prev.shape[:-2] + (prev.shape[-2] // 2, prev.shape[-1] // 2)
        if min(shape[-2:]) < 1:
            break
        arr = root.create_array(str(lev), shape=shape, chunks=prev.chunks, dtype="float32", dimension_names=prev.metadata.dimension_names, overwrite=True)
        _downsample_level(prev, arr)
        prev = arr
        keys.append(str(lev))
    # Levels left by an earlier finish with more levels; listing the group would trip over .progress.
    for stale in range(len(keys), 32):
        remove(partial / str(stale))
    lead = len(root["0"].shape) - 2
    base = list(pixel_size) if pixel_size else [1.0 / provenance["scale"]] * 2
    datasets = [
        {"path": k, "coordinateTransformations": [{"type": "scale", "scale": [1.0] * lead + [base[0] * 2 ** int(k), base[1] * 2 ** int(k)]}]} for k in keys
    ]
    if not pixel_size:
        axes = [{key: value for key, value in a.items() if key != "unit"} for a in axes]
    omero = omero_metadata(root[keys[-1]], channels=provenance.get("channel") if axes[0]["name"] == "c" else None, name=name)
    write_multiscales_metadata(root, datasets, fmt=FormatV05(), axes=axes, name=name, metadata={"omero": omero})
    root.attrs["fastscan"] = json.loads(json.dumps(provenance, default=str))
    with atomic_path(out) as tmp:
        os.replace(partial, tmp)
    remove(Path(out) / ".progress")


#: OMERO colours of restored channels by channel index (the planes of an RGB slide show as red,
#: green and blue); a single plane is white.
OMERO_COLOURS = ("FF0000", "00FF00", "0000FF", "FF00FF", "00FFFF", "FFFF00")
#: Most pixels per channel read to find a store's intensity range for the OMERO window.
OMERO_SAMPLE_PIXELS = 1 << 22


def omero_metadata(level: zarr.Array, *, channels: Sequence[int] | None, name: str) -> dict[str, Any]:
    """OMERO rendering metadata of a restored store, so viewers open it with sensible contrast.

    The display window is 0..1 of the model's normalised HR units, the range between the training
    HR targets' low and high percentiles (``model.json`` ``normalisation.hr``); ``min`` and
    ``max`` (the slider's range) span that and the values found in ``level`` (the smallest
    pyramid level, sampled down to :data:`OMERO_SAMPLE_PIXELS` per channel).

    Parameters
    ----------
    level : zarr.Array
        ``(C, Y, X)`` with ``channels`` (one index per plane), else ``(Y, X)`` or ``(T, Y, X)``.
    channels : sequence of int or None
        Input channel of each plane of a ``c`` axis; None for one plane.
    name : str
    """
    planes = list(channels) if channels is not None else [None]
    step = max(1, math.ceil(math.sqrt(level.shape[-2] * level.shape[-1] / OMERO_SAMPLE_PIXELS)))
    out = []
    for i, ch in enumerate(planes):
        lead = (i,) if channels is not None else ((0,) if level.ndim == 3 else ())
        sample = np.asarray(level[lead + (slice(None, None, step), slice(None, None, step))], dtype=np.float32)
        finite = sample[np.isfinite(sample)]
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        hi = max(1.0, float(finite.max())) if finite.size else 1.0
        out.append(
            {
                "label": "restored" if ch is None else f"channel {ch}",
                "color": "FFFFFF" if ch is None else OMERO_COLOURS[int(ch) % len(OMERO_COLOURS)],
                "active": True,
                "inverted": False,
                "coefficient": 1.0,
                "family": "linear",
                "window": {"min": lo, "max": hi, "start": 0.0, "end": 1.0},
            }
        )
    return {"name": name, "channels": out, "rdefs": {"model": "greyscale" if channels is None else "color", "defaultT": 0, "defaultZ": 0}}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("fastscan", "torch", "zarr", "ome-zarr"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------------------------
# whole slides


def _input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an input for resuming: path, size and modification time (content is too big)."""
    p = Path(path)
    stats = [p.stat()] + [(p / n).stat() for n in ("zarr.json", ".zattrs", ".zarray", ".zgroup") if (p / n).is_file()]
    return {"path": str(p.resolve()), "size": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}


def _open_planes(path: str | os.PathLike, channels: int | list[int] | str, level: int) -> tuple[list, list[int] | None, dict[str, Any]]:
    """The slide's planes to restore, the channel list (None for a single 2-D plane) and metadata."""
    from fastscan.io import open_slide

    first = channels if isinstance(channels, int) else (channels[0] if isinstance(channels, list) else 0)
    plane, smeta = open_slide(path, channel=first, level=level)
    if isinstance(channels, int):
        return [plane], None, smeta
    chans = list(range(int(smeta["channels"]))) if channels == "all" else list(channels)
    planes = [plane if c == first else open_slide(path, channel=c, level=level)[0] for c in chans]
    return planes, chans, smeta


def _inputs(path: str | os.PathLike, model_dir: str | os.PathLike | None) -> list[str | os.PathLike]:
    """What a restoration reads: the image (or each frame of a glob) and the model directory."""
    from fastscan.io import _glob_files, _is_glob

    images = _glob_files(str(path)) if _is_glob(path) else []
    return [path, *images, *([model_dir] if model_dir is not None else [])]


def _slide_units(plan: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    ny, nx = plan["lr_shape"]
    r = plan["region"]
    n_c = len(plan["channels"]) if plan["channels"] is not None else 1
    return [(c, iy, ix) for c in range(n_c) for iy in range(math.ceil(ny / r)) for ix in range(math.ceil(nx / r))]


def _part_units(units: Sequence, part: tuple[int, int] | None) -> list:
    """Units of part ``index`` of ``count``: contiguous runs, so each job reads neighbouring tiles."""
    if part is None:
        return list(units)
    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"part {index} does not exist among {count} parts")
    n = len(units)
    return list(units[index * n // count : (index + 1) * n // count])


def _slide_plan(
    path: str | os.PathLike,
    *,
    desc: Mapping[str, Any],
    engine: TileEngine,
    channels: list[int] | None,
    level: int,
    lr_shape: Sequence[int],
    region: int,
    pyramid_levels: int,
    precision: str,
    smeta: Mapping[str, Any],
) -> dict[str, Any]:
    ny, nx = lr_shape
    return {
        "format": "fastscan-restore/1",
        "kind": "slide",
        "input": _input_fingerprint(path),
        "model": dict(desc),
        "channels": channels,
        "level": int(level),
        "lr_shape": [int(ny), int(nx)],
        "scale": engine.scale,
        "tile": engine.tile,
        "overlap": engine.overlap,
        "tile_shape": list(engine.tile_shape((min(region, ny), min(region, nx)))),
        "region": int(region),
        "chunk": engine.scale * int(region),
        "precision": precision,
        "pyramid_levels": int(pyramid_levels),
        "input_pixel_size_um": smeta.get("pixel_size_um"),
    }


def _create_slide_store(plan: Mapping[str, Any]) -> Callable[[zarr.Group], None]:
    def create(root: zarr.Group) -> None:
        s, (ny, nx), chunk = plan["scale"], plan["lr_shape"], plan["chunk"]
        lead = (len(plan["channels"]),) if plan["channels"] is not None else ()
        # NaN marks chunks no region has written yet.
        root.create_array(
            "0",
            shape=lead + (s * ny, s * nx),
            chunks=(1,) * len(lead) + (chunk, chunk),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=("c", "y", "x") if lead else ("y", "x"),
        )

    return create


def _setup_slide(
    path, out, *, model_dir, generator, channel, level, tile, overlap, batch_size, region, pyramid_levels, device, precision, threads, part
) -> tuple[dict[str, Any], TileEngine, list, dict[str, Any], Path, bool]:
    import torch

    from fastscan.models import model_frames

    if threads:
        torch.set_num_threads(int(threads))
    channels = parse_channels(channel)
    planes, chans, smeta = _open_planes(path, channels, level)
    model, meta, desc = _load_model(model_dir, generator, device=device)
    window = model_frames(meta)
    if window > 1:
        raise RestoreError(
            f"model {desc['path'] or type(model).__name__} restores each frame from a window of {window} frames of a "
            f"video-rate series; a slide ({path}) has no neighbouring frames. Restore series with it (fastscan restore "
            "--series), and slides with a single-frame model (train.architecture.frames: 1)"
        )
    partial = _partial(out)
    old = _read_plan(partial)
    same_work = old is not None and old.get("model", {}).get("digest") == desc["digest"] and old.get("input") == _input_fingerprint(path)
    if part is not None:
        if not same_work:
            raise RestoreError(f"{partial}: no restoration of {path} with this model is set up; run the plan step (prepare_slide) before the parts")
        # Every part uses the tiling the plan step resolved, whatever this device would measure.
        tile, overlap = old["tile"], old["overlap"]
    elif same_work:
        tile = old["tile"] if tile is None else tile
        overlap = old["overlap"] if overlap is None else overlap
    engine = TileEngine(
        model,
        scale=int(meta["scale"]),
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        precision=precision,
        context=training_context(meta),
    )
    plan = _slide_plan(
        path,
        desc=desc,
        engine=engine,
        channels=chans,
        level=level,
        lr_shape=planes[0].shape,
        region=region,
        pyramid_levels=pyramid_levels,
        precision=precision,
        smeta=smeta,
    )
    if part is not None and json.loads(json.dumps(plan)) != old:
        changed = sorted(k for k in plan if json.loads(json.dumps(plan[k])) != old.get(k))
        raise RestoreError(f"{partial}: was set up with other settings ({', '.join(changed)}); run the plan step again")
    partial, resumed = _open_partial(out, plan, _create_slide_store(plan))
    return plan, engine, planes, meta, partial, resumed


def _read_region(plane, plan: Mapping[str, Any], key: tuple[int, int, int], norm: Sequence[float]) -> np.ndarray:
    """Region ``key`` of ``plane`` with a halo of ``overlap`` px, reflected at the slide border."""
    from fastscan.dataset import normalise

    _, iy, ix = key
    r, o = plan["region"], plan["overlap"]
    ny, nx = plane.shape
    y0, x0 = iy * r, ix * r
    y1, x1 = min(ny, y0 + r), min(nx, x0 + r)
    ry0, ry1, rx0, rx1 = max(0, y0 - o), min(ny, y1 + o), max(0, x0 - o), min(nx, x1 + o)
    block = np.asarray(plane[ry0:ry1, rx0:rx1].compute(scheduler="synchronous"))
    block = normalise(block, *norm)
    return _pad(block, ((o - (y0 - ry0), o - (ry1 - y1)), (o - (x0 - rx0), o - (rx1 - x1))))


def _restore_slide_units(
    plan: Mapping[str, Any], engine: TileEngine, planes: list, meta: Mapping[str, Any], partial: Path, units: Sequence, *, path, progress: bool | None
) -> dict[str, int]:
    done = _done_keys(partial, 3)
    todo = [u for u in units if u not in done]
    level0 = zarr.open_array(partial / "0", mode="r+")
    s, r = plan["scale"], plan["region"]
    ny, nx = plan["lr_shape"]
    stacked = plan["channels"] is not None
    tile_shape = tuple(plan["tile_shape"])
    norm = meta["normalisation"]["lr"]

    def write(key: tuple[int, int, int], hr: np.ndarray) -> None:
        c, iy, ix = key
        sl = (slice(s * iy * r, s * min(ny, (iy + 1) * r)), slice(s * ix * r, s * min(nx, (ix + 1) * r)))
        level0[((c,) + sl) if stacked else sl] = hr

    log.info(
        "%s: %d region(s) of %d LR px (%d already done), tiles %s with %d px overlap, batch %s, on %s in %s",
        path,
        len(units),
        r,
        len(units) - len(todo),
        tile_shape,
        plan["overlap"],
        engine.batch_size or "auto",
        engine.device,
        plan["precision"],
    )
    bar = _Progress(len(units), desc=f"restoring {Path(path).name}", initial=len(units) - len(todo), enabled=progress)
    t0 = time.monotonic()
    try:
        _run_units(
            todo,
            read=lambda key: _read_region(planes[key[0]], plan, key, norm),
            compute=lambda block: engine.predict_blocks([block], tile_shape=tile_shape)[0],
            write=write,
            partial=partial,
            progress=bar,
            background=_overlap_io(engine.device),
        )
    finally:
        bar.close()
    if todo:
        log.info("%s: restored %d region(s) in %.1f s (%d were already done)", path, len(todo), time.monotonic() - t0, len(units) - len(todo))
    return {"units": len(units), "computed": len(todo), "skipped": len(units) - len(todo)}


def slide_options(restore: Mapping[str, Any], *, batch: bool = True) -> dict[str, Any]:
    """Keyword arguments of :func:`restore_slide` / :func:`prepare_slide` from the config's
    ``restore`` section, so the single-job, plan and part jobs of a slide read it one way.

    ``batch=False`` leaves out ``batch_size`` (:func:`prepare_slide` has none). The device is not
    included: the plan job measures the tiling on the CPU, the others resolve ``restore.device``.
    """
    keys = ("level", "tile", "overlap", "region", "pyramid_levels", "precision") + (("batch_size",) if batch else ())
    return {k: restore[k] for k in keys}


def prepare_slide(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    channel: int | str | Sequence[int] = 0,
    level: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
    region: int = 512,
    pyramid_levels: int = 3,
    device: str = "cpu",
    precision: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict[str, Any]:
    """Set up (or keep, when resuming) ``OUT.partial`` for a scattered restoration.

    The scatter step of the workflow: it resolves the tiling once, so every part job uses the same
    one, and creates the empty level-0 array that the parts fill. Parameters are those of
    :func:`restore_slide`.

    Returns
    -------
    dict
        The plan (also stored as ``OUT.partial/.progress/plan.json``) plus ``regions`` (the number
        of work units) and ``resumed``.
    """
    check_restore_output(out, kind="restored_slide", inputs=_inputs(path, model_dir), overwrite=overwrite)
    with output_lock(out, wait=wait, what="restore_slide plan"):
        plan, *_, partial, resumed = _setup_slide(
            path,
            out,
            model_dir=model_dir,
            generator=generator,
            channel=channel,
            level=level,
            tile=tile,
            overlap=overlap,
            batch_size=1,
            region=region,
            pyramid_levels=pyramid_levels,
            device=device,
            precision=precision,
            threads=threads,
            part=None,
        )
    n = len(_slide_units(plan))
    log.info(
        "%s: %s %s, %d region(s) of %d px, tiles %s with %d px overlap",
        path,
        "resuming" if resumed else "set up",
        partial,
        n,
        plan["region"],
        plan["tile_shape"],
        plan["overlap"],
    )
    return {**plan, "regions": n, "resumed": resumed}


def restore_slide(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    channel: int | str | Sequence[int] = 0,
    level: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    region: int = 512,
    pyramid_levels: int = 3,
    device: str = "cpu",
    precision: str = "auto",
    threads: int | None = None,
    part: tuple[int, int] | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict[str, Any]:
    """Restore a whole slide region by region into an OME-Zarr multiscale image.

    Parameters
    ----------
    path : path-like
        Slide (TIFF/OME-TIFF/SVS/OIB/OIF/Zarr/OME-Zarr), read lazily region by region.
    out : path-like
        ``.ome.zarr`` to write. Work goes into ``OUT.partial`` and is renamed to ``out`` only when
        complete; a run that was killed continues from the regions already written, provided the
        input, model and settings are unchanged.
    model_dir : path-like, optional
        Trained model directory (``generator.pth`` + ``model.json``).
    generator : (torch.nn.Module, dict), optional
        A generator and its ``model.json`` content, instead of ``model_dir``.
    channel : int, str or list of int
        A channel index (2-D output), a list of indices or ``"all"`` (``(c, y, x)`` output, each
        channel restored as its own grayscale plane). RGB samples count as channels.
    level : int
        Pyramid level of the input (0 is full resolution).
    tile, overlap : int, optional
        Largest LR tile and tile overlap; None derives them from the receptive field.
    batch_size : int, optional
        Tiles per forward pass (None: chosen for the device).
    region : int
        LR size of the square regions processed at once (bounds memory). Output chunks are
        ``scale * region`` px, so every region writes whole chunks.
    pyramid_levels : int
        Resolution levels, each halving the previous one.
    device : str
    precision : {"auto", "float32", "bfloat16", "float16"}
    threads : int, optional
        CPU threads of torch.
    part : (int, int), optional
        Restore only part ``index`` of ``count`` (contiguous runs of regions) into the store set up
        by :func:`prepare_slide`, and stop; :func:`finalize_slide` completes it.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal; otherwise periodic log lines).
    overwrite : bool
        Replace a fastscan store of another restoration at ``out`` (never anything else: see
        :func:`check_restore_output`).
    wait : bool
        Wait for another restoration of the same ``out`` to finish instead of failing at once
        (:func:`fastscan.lock.output_lock`; part jobs share the lock with each other).

    Returns
    -------
    dict
        Provenance written to the ``fastscan`` attribute (without ``part``) or, with ``part``,
        the counts of regions: ``units``, ``computed``, ``skipped``.
    """
    check_restore_output(out, kind="restored_slide", inputs=_inputs(path, model_dir), overwrite=overwrite)
    what = f"restore_slide part {part[0]} of {part[1]}" if part is not None else "restore_slide"
    with output_lock(out, shared=part is not None, wait=wait, what=what):
        plan, engine, planes, meta, partial, _ = _setup_slide(
            path,
            out,
            model_dir=model_dir,
            generator=generator,
            channel=channel,
            level=level,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            region=region,
            pyramid_levels=pyramid_levels,
            device=device,
            precision=precision,
            threads=threads,
            part=part,
        )
        units = _part_units(_slide_units(plan), part)
        stats = _restore_slide_units(plan, engine, planes, meta, partial, units, path=path, progress=progress)
        if part is not None:
            return {**stats, "part": list(part)}
        return _finalize_slide(out, stats=stats)


def finalize_slide(out: str | os.PathLike, *, stats: Mapping[str, Any] | None = None, wait: bool = False) -> dict[str, Any]:
    """The gather step: check every region is written, build the pyramid, rename into place.

    Parameters
    ----------
    out : path-like
        The final ``.ome.zarr``; ``OUT.partial`` must hold a restoration whose regions are all done.
    stats : dict, optional
        Counts to record in the provenance.
    wait : bool
        Wait for part jobs still holding the lock of ``out`` instead of failing at once.

    Returns
    -------
    dict
        The provenance written to the ``fastscan`` attribute.
    """
    with output_lock(out, wait=wait, what="restore_slide gather"):
        return _finalize_slide(out, stats=stats)


def _finalize_slide(out: str | os.PathLike, *, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    partial = _partial(out)
    plan = _read_plan(partial)
    if plan is None:
        raise RestoreError(f"{partial}: no restoration in progress to finish (was it set up by the plan step?)")
    units = _slide_units(plan)
    missing = sorted(set(units) - _done_keys(partial, 3))
    if missing:
        raise RestoreError(f"{partial}: {len(missing)} of {len(units)} region(s) are not restored yet, e.g. {missing[:3]} (channel, row, column)")
    s = plan["scale"]
    px = plan["input_pixel_size_um"]
    prov = {
        "kind": "restored_slide",
        "input": plan["input"]["path"],
        "model": plan["model"]["path"],
        "model_digest": plan["model"]["digest"],
        "channel": plan["channels"] if plan["channels"] is not None else None,
        "level": plan["level"],
        "scale": s,
        "input_pixel_size_um": px,
        "pixel_size_um": [p / s for p in px] if px else None,
        "tile": plan["tile"],
        "overlap": plan["overlap"],
        "tile_shape": plan["tile_shape"],
        "region": plan["region"],
        "precision": plan["precision"],
        "normalisation": plan["model"]["normalisation"],
        "regions": len(units),
        "stats": dict(stats or {}),
        "versions": _versions(),
    }
    space = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    axes = ([{"name": "c", "type": "channel"}] if plan["channels"] is not None else []) + space
    _finalize(
        out,
        axes=axes,
        pixel_size=[p / s for p in px] if px else None,
        pyramid_levels=plan["pyramid_levels"],
        name=Path(plan["input"]["path"]).stem,
        provenance=prov,
    )
    log.info("wrote %s", out)
    return prov


# --------------------------------------------------------------------------------------------
# time series


def restore_series(
    lr: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    channel: int = 0,
    max_frames: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    frames_per_chunk: int = 8,
    pyramid_levels: int = 1,
    device: str = "cpu",
    precision: str = "auto",
    threads: int | None = None,
    pixel_size_um: float | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict[str, Any]:
    """Restore a video-rate series frame batch by frame batch into an OME-Zarr ``(t, y, x)`` image.

    The raw frames are put into the model's input geometry first
    (:func:`fastscan.geometry.prepare_frames`: line phase estimated from the series, resonant
    warp undone with the model's field fraction; nothing for a model without a geometry
    section), then normalised with the model's statistics exactly as in training. The tiles of
    ``frames_per_chunk`` frames share batches; each batch of frames is written, and marked done,
    as soon as it is restored, so a killed run resumes where it stopped.

    Parameters
    ----------
    lr : path-like
        Series (multi-page TIFF/OME-TIFF, OIB/OIF or a glob of frames), read whole.
    out : path-like
        ``.ome.zarr`` to write (via ``OUT.partial``, renamed when complete).
    model_dir, generator
        As in :func:`restore_slide`.
    channel : int
        Channel of multi-channel files.
    max_frames : int, optional
        Restore only the first frames.
    frames_per_chunk : int
        Frames per work unit (restored, written and marked together).
    pyramid_levels : int
        Resolution levels over y and x (t is never downsampled).
    pixel_size_um : float, optional
        LR pixel size when the file records none.
    overwrite, wait : bool
        As in :func:`restore_slide`.

    Returns
    -------
    dict
        Provenance written to the ``fastscan`` attribute.
    """
    check_restore_output(out, kind="restored_series", inputs=_inputs(lr, model_dir), overwrite=overwrite)
    with output_lock(out, wait=wait, what="restore_series"):
        return _restore_series(
            lr,
            out,
            model_dir=model_dir,
            generator=generator,
            channel=channel,
            max_frames=max_frames,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            frames_per_chunk=frames_per_chunk,
            pyramid_levels=pyramid_levels,
            device=device,
            precision=precision,
            threads=threads,
            pixel_size_um=pixel_size_um,
            progress=progress,
        )


def _restore_series(
    lr,
    out,
    *,
    model_dir,
    generator,
    channel,
    max_frames,
    tile,
    overlap,
    batch_size,
    frames_per_chunk,
    pyramid_levels,
    device,
    precision,
    threads,
    pixel_size_um,
    progress,
) -> dict[str, Any]:
    import torch

    from fastscan.dataset import normalise
    from fastscan.geometry import model_geometry, prepare_frames
    from fastscan.io import read_series
    from fastscan.models import model_frames

    if threads:
        torch.set_num_threads(int(threads))
    raw, smeta = read_series(lr, channel=channel)
    if max_frames:
        raw = raw[: int(max_frames)]
    model, meta, desc = _load_model(model_dir, generator, device=device)
    # The geometry is fitted to the raw intensities, before normalisation, as in training.
    frames = normalise(prepare_frames(raw, meta), *meta["normalisation"]["lr"])
    del raw
    engine = TileEngine(
        model,
        scale=int(meta["scale"]),
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        precision=precision,
        context=training_context(meta),
    )
    n_t, ny, nx = frames.shape
    s = engine.scale
    fpc = max(1, int(frames_per_chunk))
    px = smeta.get("pixel_size_um") or ([float(pixel_size_um)] * 2 if pixel_size_um else None)
    chunk = min(1024, s * max(ny, nx))
    plan = {
        "format": "fastscan-restore/1",
        "kind": "series",
        "input": {"path": str(lr), "digest": hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()},
        "model": desc,
        "channel": int(channel),
        "lr_shape": [n_t, ny, nx],
        "scale": s,
        "tile": engine.tile,
        "overlap": engine.overlap,
        "tile_shape": list(engine.tile_shape((ny, nx))),
        "frames_per_chunk": fpc,
        "chunk": chunk,
        "precision": precision,
        "pyramid_levels": int(pyramid_levels),
        "input_pixel_size_um": px,
    }

    def create(root: zarr.Group) -> None:
        root.create_array(
            "0",
            shape=(n_t, s * ny, s * nx),
            chunks=(1, min(chunk, s * ny), min(chunk, s * nx)),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=("t", "y", "x"),
        )

    partial, _ = _open_partial(out, plan, create)
    units = [(k,) for k in range(math.ceil(n_t / fpc))]
    done = _done_keys(partial, 1)
    todo = [u for u in units if u not in done]
    level0 = zarr.open_array(partial / "0", mode="r+")
    tile_shape = tuple(plan["tile_shape"])
    o = engine.overlap

    # A generator with temporal context restores each frame from its window of neighbours,
    # reflected at the ends of the series as in training.
    window = model_frames(meta)
    lead = ((0, 0),) if window > 1 else ()
    drift = None
    if window > 1 and n_t > 1:
        from fastscan.register import estimate_drift

        # Training windows came from registered frames: the neighbours are moved onto each
        # restored frame the same way (a rigid drift of the whole field; what moves within the
        # field stays for the network, which learnt to restore the centre frame).
        drift = estimate_drift(frames, iterations=1)
        log.info("%s: drift of the series for its %d-frame windows: rms %.2f px", lr, window, float(np.sqrt(np.mean(np.sum(drift**2, axis=1)))))

    def read(key: tuple[int]) -> np.ndarray:
        return temporal_stack(frames, range(key[0] * fpc, min(n_t, (key[0] + 1) * fpc)), frames=window, drift=drift)

    def compute(batch: np.ndarray) -> np.ndarray:
        return np.stack(engine.predict_blocks([_pad(f, (*lead, (o, o), (o, o))) for f in batch], tile_shape=tile_shape))

    def write(key: tuple[int], hr: np.ndarray) -> None:
        level0[key[0] * fpc : key[0] * fpc + hr.shape[0]] = hr

    log.info(
        "%s: %d frame(s) in %d batch(es) of %d (%d already done), tiles %s with %d px overlap, on %s in %s",
        lr,
        n_t,
        len(units),
        fpc,
        len(units) - len(todo),
        tile_shape,
        o,
        engine.device,
        precision,
    )
    bar = _Progress(len(units), desc=f"restoring {Path(str(lr)).name}", initial=len(units) - len(todo), enabled=progress)
    t0 = time.monotonic()
    try:
        _run_units(todo, read=read, compute=compute, write=write, partial=partial, progress=bar, background=_overlap_io(engine.device))
    finally:
        bar.close()
    log.info("%s: restored %d frame batch(es) in %.1f s (%d were already done)", lr, len(todo), time.monotonic() - t0, len(units) - len(todo))
    prov = {
        "kind": "restored_series",
        "input": str(lr),
        "model": desc["path"],
        "model_digest": desc["digest"],
        "channel": int(channel),
        "frames": n_t,
        "scale": s,
        "input_pixel_size_um": px,
        "pixel_size_um": [p / s for p in px] if px else None,
        "geometry": model_geometry(meta),
        "temporal_window": window,
        "tile": engine.tile,
        "overlap": engine.overlap,
        "tile_shape": plan["tile_shape"],
        "precision": precision,
        "normalisation": meta["normalisation"],
        "stats": {"units": len(units), "computed": len(todo), "skipped": len(units) - len(todo)},
        "versions": _versions(),
    }
    axes = [{"name": "t", "type": "time"}, {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    _finalize(
        out,
        axes=axes,
        pixel_size=[p / s for p in px] if px else None,
        pyramid_levels=pyramid_levels,
        name=Path(str(lr)).stem,
        provenance=prov,
    )
    log.info("wrote %s", out)
    return prov
