"""Tiled inference in memory.

:class:`TileEngine` cuts normalised LR images into overlapping tiles, runs them through the
generator in batches and blends them with a raised-cosine window whose overlapping ramps add up
to exactly one, so tile borders leave no seams; the halo at the image border is reflected, as in
CSBDeep's tiled prediction. Its :class:`~fastscan.restore.receptive.Tiling` (tile size and overlap) is
decided once, by :func:`fastscan.restore.receptive.resolve_tiling`: by the restoration that builds the
engine, or by the engine itself from ``tile``, ``overlap`` and ``context``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from fastscan.restore.prepare import compile_generator, resolve_precision, torch_as_subclass
from fastscan.restore.receptive import Tiling, resolve_tiling, unet_input_scale
from fastscan.restore.tiling import _pad, blend_window, fit_tile, tile_starts

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

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


#: ``restore.ensemble`` values: none, or the flip self-ensemble (see :class:`TileEngine`).
ENSEMBLES = ("none", "flips")
#: The spatial flips of the self-ensemble, as ``torch.flip`` dims of an NCHW batch.
FLIPS = ((), (-1,), (-2,), (-2, -1))


def _known_ensemble(ensemble: str) -> str:
    if ensemble not in ENSEMBLES:
        raise ValueError(f"restore.ensemble must be one of {list(ENSEMBLES)}, got {ensemble!r}")
    return ensemble


def check_ensemble(ensemble: str, meta: dict, *, model_dir) -> str:
    """The self-ensemble a generator (``model.json`` ``meta``, in ``model_dir``) restores with:
    ``ensemble``, or ``none`` with a warning for a generator not trained on geometry-corrected frames.

    A flip is a symmetry of the specimen only on geometry-corrected frames: on the raw scan
    geometry it reverses the resonant sweep and swaps the odd and even lines' line phase, which
    such a generator has learnt to undo in one direction only (as ``train.augment.flips``). The
    setting is a project-wide default (``config/config.yaml``), so a model it does not fit (one
    trained with ``dataset.correct_geometry: false``, or before models recorded their geometry)
    restores without it rather than failing.
    """
    from fastscan.geometry import model_geometry

    if _known_ensemble(ensemble) == "flips" and model_geometry(meta) is None:
        log.warning(
            "%s: restoring without restore.ensemble 'flips': the generator was not trained on geometry-corrected frames, "
            "and on the raw scan geometry a flip reverses the sweep and swaps the lines' phase",
            model_dir,
        )
        return "none"
    return ensemble


class TileEngine:
    """Batched, blended tiled inference of a generator on normalised LR images.

    Parameters
    ----------
    model : torch.nn.Module
        Generator mapping ``(N, 1, h, w)`` LR tiles to ``(N, 1, scale*h, scale*w)``, in eval mode
        on ``device`` (see :func:`fastscan.restore.prepare.prepare_generator`).
    scale : int
        HR pixels per LR pixel.
    tile, overlap : int, optional
        Largest LR tile and the overlap between neighbours; None measures them
        (:func:`fastscan.restore.receptive.resolve_tiling`).
    tiling : Tiling, optional
        A tiling the restoration already decided (:func:`fastscan.restore.receptive.resolve_tiling`),
        instead of ``tile``, ``overlap`` and ``context``.
    batch_size : int, optional
        Tiles per forward pass; None chooses from the device (:func:`default_batch_size`).
    device : str
    precision : {"auto", "float32", "bfloat16", "float16"}
        Compute dtype (:func:`fastscan.restore.prepare.resolve_precision`): autocast on CUDA, a
        bf16 copy of the model on the CPU; the blend is always accumulated in float32.
    channels_last : bool, optional
        Feed tiles in NHWC layout; the default follows the model's own layout.
    prefetch : bool, optional
        Cut (and on CUDA pin) the next batch in a background thread while the model runs on the
        current one; the default is on for CUDA, where the host is otherwise idle.
    context : int, optional
        LR size of the crops the generator was trained on
        (:func:`fastscan.restore.receptive.training_context`); sets the automatic tiling of
        generators with self-attention (:func:`fastscan.restore.receptive.resolve_tiling`).
    compile : {"off", "auto"}
        ``restore.compile`` (:func:`fastscan.restore.prepare.compile_generator`): ``auto`` runs
        the generator through ``torch.compile`` on CUDA, every batch padded to the full batch
        size so that one tile shape compiles once; a compilation that fails falls back to the
        eager generator with a warning.
    ensemble : {"none", "flips"}
        ``restore.ensemble``: ``flips`` restores every tile four times, as it is and flipped
        left-right, up-down and both, and averages the four predictions flipped back (a
        self-ensemble: the generator's errors that do not follow the specimen's flips average
        out; four times the compute). Only for generators trained on geometry-corrected frames
        (:func:`check_ensemble`).

    Attributes
    ----------
    tiling : Tiling
        The tile size and overlap used, and where they came from; ``tile`` and ``overlap`` are
        its values.
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
        tiling: Tiling | None = None,
        compile: str = "off",
        ensemble: str = "none",
    ) -> None:
        import torch

        from fastscan.models import is_channels_last

        self.ensemble = _known_ensemble(ensemble)
        self.model = model
        self.scale = int(scale)
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.channels_last = is_channels_last(model) if channels_last is None else bool(channels_last)
        self.prefetch = self.device.type == "cuda" if prefetch is None else bool(prefetch)
        # A generator that runs its U-Net on the LR grid affords tiles ``scale`` times larger.
        self.input_scale = unet_input_scale(model, self.scale)
        if tiling is None:
            tiling = resolve_tiling(model, tile=tile, overlap=overlap, input_scale=self.input_scale, context=context, device=self.device)
        elif (tile, overlap, context) != (None, None, None):
            raise ValueError("give a decided tiling or tile, overlap and context, not both")
        self.tiling = tiling
        self.tile, self.overlap = tiling.tile, tiling.overlap
        self.batch_size = batch_size
        self.tiles_run = 0
        self._flat: torch.Tensor | None = None
        self._batch: int | None = None
        # The automatic batch per tile shape, decided once: on CUDA it follows the free memory,
        # which the engine's own allocations lower after the first call, and a compiled
        # generator would compile again for every new batch size.
        self._auto_batch: dict[tuple[int, int], int] = {}
        #: Whether a batch's tiles are added to their accumulators by one indexed add (CUDA) or
        #: by a loop of slice adds (the CPU, where that is faster); see :meth:`_accumulate`.
        self.indexed_add = self.device.type == "cuda"
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
        self._compiled = compile_generator(model, compile=compile, device=self.device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            return self._run_compiled(x)
        if self._lowp_state is None:
            return self.model(x)
        from torch.func import functional_call

        return functional_call(self.model, self._lowp_state, (x,))

    def _run_flips(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the generator's predictions of ``x`` flipped by each of :data:`FLIPS`,
        each flipped back; accumulated in float32."""
        import torch

        out = None
        for dims in FLIPS:
            pred = self._run(torch.flip(x, dims) if dims else x)
            pred = (torch.flip(pred, dims) if dims else pred).float()
            out = pred if out is None else out.add_(pred)
        return out / len(FLIPS)

    def _run_compiled(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled generator on ``x``, padded to the full batch (a new shape would compile
        again); the eager generator from now on if compilation fails."""
        import torch

        n = x.shape[0]
        full = self._batch or n
        if n < full:
            x = torch.cat([x, x[-1:].expand(full - n, *x.shape[1:])])
            if self.channels_last:  # torch.cat of an NHWC batch may return NCHW: another compilation
                x = x.contiguous(memory_format=torch.channels_last)
        try:
            with torch_as_subclass():
                return self._compiled(x)[:n]
        except Exception as exc:  # noqa: BLE001  (any compiler failure: restore without it)
            log.warning("torch.compile of the generator failed (%s: %s); restoring without it", type(exc).__name__, exc)
            self._compiled = None
            return self._run(x[:n])

    def _accumulators(self, shapes: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Zeroed HR accumulators of ``shapes``, views into one flat buffer reused between calls.

        One buffer lets a whole batch of tiles be added with a single indexed add, whatever block
        each tile belongs to; reusing it spares the page faults of fresh large allocations, which
        for a small generator take longer than the blending itself.
        """
        import torch

        total = sum(h * w for h, w in shapes)
        # A buffer over twice what this call needs (left by a larger call) is given back.
        if self._flat is None or self._flat.numel() < total or self._flat.numel() > 2 * total:
            self._flat = torch.empty(total, dtype=torch.float32, device=self.device)
        flat = self._flat[:total].zero_()
        views, start = [], 0
        for h, w in shapes:
            views.append(flat[start : start + h * w].view(h, w))
            start += h * w
        return flat, views

    def tile_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """LR tile size used for images of interior ``shape``
        (:func:`fastscan.restore.tiling.fit_tile` per axis)."""
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
        key = (int(ty), int(tx))
        if not self.batch_size and key not in self._auto_batch:
            self._auto_batch[key] = default_batch_size(self.device, tile_shape, s, input_scale=self.input_scale)
        bs = self.batch_size or self._auto_batch[key]
        self._batch = bs
        padded, grids = self._lay_out(blocks, tile_shape)
        flat, accs = self._accumulators([(s * (sy[-1] + ty), s * (sx[-1] + tx)) for sy, sx in grids])
        wy = torch.from_numpy(blend_window(s * ty, s * o)).to(self.device)
        wx = torch.from_numpy(blend_window(s * tx, s * o)).to(self.device)
        self._accumulate(padded, grids, flat, accs, tile_shape=tile_shape, window=wy[:, None] * wx[None, :], batch_size=bs)
        return [self._interior(acc, grid, b, tile_shape=tile_shape, wy=wy, wx=wx) for grid, acc, b in zip(grids, accs, blocks)]

    def _lay_out(self, blocks: Sequence[np.ndarray], tile_shape: tuple[int, int]) -> tuple[list[np.ndarray], list[tuple[list[int], list[int]]]]:
        """Each block padded to whole tiles, and its tile starts per axis."""
        o = self.overlap
        ty, tx = tile_shape
        padded, grids = [], []
        for b in blocks:
            if b.shape[-2] <= 2 * o or b.shape[-1] <= 2 * o:
                raise ValueError(f"block {b.shape} has no interior inside its {o}-px halo")
            sy, sx = tile_starts(b.shape[-2], ty, o), tile_starts(b.shape[-1], tx, o)
            # The last tile may reach past the halo; what it sees there only feeds discarded pixels.
            extra = (sy[-1] + ty - b.shape[-2], sx[-1] + tx - b.shape[-1])
            lead = ((0, 0),) * (b.ndim - 2)
            padded.append(_pad(np.asarray(b, dtype=np.float32), (*lead, (0, max(0, extra[0])), (0, max(0, extra[1])))))
            grids.append((sy, sx))
        return padded, grids

    def _accumulate(
        self,
        padded: Sequence[np.ndarray],
        grids: Sequence[tuple[list[int], list[int]]],
        flat: torch.Tensor,
        accs: Sequence[torch.Tensor],
        *,
        tile_shape: tuple[int, int],
        window: torch.Tensor,
        batch_size: int,
    ) -> None:
        """Run every tile through the generator in batches and add it, weighted by ``window``, to
        its block's accumulator (``accs``, views of ``flat``)."""
        import torch

        s = self.scale
        ty, tx = tile_shape
        items = [(i, y, x) for i, (sy, sx) in enumerate(grids) for y in sy for x in sx]
        cuda = self.device.type == "cuda"
        # On CUDA one indexed add per batch places all its tiles, where a Python loop would launch
        # one small add per tile, each as long as a small tile's whole forward pass. An HR pixel
        # of a tile lands in ``flat`` at the tile's first pixel plus its row times the block's
        # width plus its column. On the CPU the loop of slice adds stays: a batch of 64 tiles of
        # 128 px took 0.9 ms by slices and 18 ms by index_add_ (2 threads).
        index: tuple[np.ndarray, np.ndarray] | None = None
        if self.indexed_add:
            starts = np.cumsum([0] + [a.numel() for a in accs[:-1]])
            widths = np.array([a.shape[1] for a in accs])
            first = np.array([starts[i] + s * y * widths[i] + s * x for i, y, x in items], dtype=np.int64)
            index = (first, widths[[i for i, _, _ in items]].astype(np.int64))
            rows = torch.arange(s * ty, device=self.device).view(1, -1, 1)
            cols = torch.arange(s * tx, device=self.device).view(1, 1, -1)

        def assemble(k: int) -> list[torch.Tensor]:
            """The LR tiles of the batch from item ``k`` (and, for the indexed add, each tile's
            first HR pixel in ``flat`` and its block's width)."""
            batch = items[k : k + batch_size]
            arr = np.stack([padded[i][..., y : y + ty, x : x + tx] for i, y, x in batch])
            if arr.ndim == 3:  # single frames: one input channel
                arr = arr[:, None]
            host = [torch.from_numpy(arr)] + ([torch.from_numpy(a[k : k + batch_size]) for a in index] if index else [])
            return [t.pin_memory() for t in host] if cuda else host

        starts_k = list(range(0, len(items), batch_size))
        autocast = torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self._autocast)
        # With prefetch the next batch is cut (and pinned) on the host while the model runs.
        with contextlib.ExitStack() as stack, torch.inference_mode(), autocast:
            pool = stack.enter_context(ThreadPoolExecutor(1)) if self.prefetch and len(starts_k) > 1 else None
            nxt = pool.submit(assemble, starts_k[0]) if pool else None
            for j, k in enumerate(starts_k):
                host, *where = nxt.result() if pool else assemble(k)
                if pool and j + 1 < len(starts_k):
                    nxt = pool.submit(assemble, starts_k[j + 1])
                pred = self._forward(host, tile_shape) * window
                if where:
                    first_b, width_b = (t.to(self.device, non_blocking=True).view(-1, 1, 1) for t in where)
                    flat.index_add_(0, (first_b + rows * width_b + cols).view(-1), pred.reshape(-1))
                else:
                    for (i, y, x), p in zip(items[k : k + batch_size], pred):
                        accs[i][s * y : s * (y + ty), s * x : s * (x + tx)] += p
                self.tiles_run += len(host)

    def _forward(self, host: torch.Tensor, tile_shape: tuple[int, int]) -> torch.Tensor:
        """The generator's float32 HR tiles ``(N, s*ty, s*tx)`` for the LR tiles ``host`` (on the host)."""
        import torch

        s = self.scale
        ty, tx = tile_shape
        xb = host.to(self.device, non_blocking=True)
        if self._cast_input:
            xb = xb.to(self.dtype)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        pred = self._run(xb) if self.ensemble == "none" else self._run_flips(xb)
        if pred.shape[-2:] != (s * ty, s * tx):
            raise ValueError(f"generator returned tiles of {tuple(pred.shape[-2:])} for LR tiles of {(ty, tx)} at scale {s}")
        return pred[:, 0].float()

    def _interior(
        self,
        acc: torch.Tensor,
        grid: tuple[list[int], list[int]],
        block: np.ndarray,
        *,
        tile_shape: tuple[int, int],
        wy: torch.Tensor,
        wx: torch.Tensor,
    ) -> np.ndarray:
        """The restored interior of ``block``: its accumulator divided by the sum of the windows."""
        import torch

        o, s = self.overlap, self.scale
        ty, tx = tile_shape
        sy, sx = grid
        # The window sum is separable; inside the halo it is 1 up to rounding.
        sum_y = torch.zeros(acc.shape[0], device=self.device)
        sum_x = torch.zeros(acc.shape[1], device=self.device)
        for y in sy:
            sum_y[s * y : s * (y + ty)] += wy
        for x in sx:
            sum_x[s * x : s * (x + tx)] += wx
        ny, nx = block.shape[-2] - 2 * o, block.shape[-1] - 2 * o
        interior = acc[s * o : s * (o + ny), s * o : s * (o + nx)]
        interior = interior / (sum_y[s * o : s * (o + ny), None] * sum_x[None, s * o : s * (o + nx)])
        return interior.cpu().numpy()


def predict_image(
    model,
    image: np.ndarray,
    *,
    scale: int,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "float32",
    channels_last: bool | None = False,
    context: int | None = None,
) -> np.ndarray:
    """Restore one normalised 2-D LR image (or temporal window) with overlapping, blended tiles.

    Parameters
    ----------
    model : torch.nn.Module
        Generator mapping ``(N, k, t, t)`` LR tiles (k = 1, or the frames of its temporal
        window) to ``(N, 1, scale*t, scale*t)``, on ``device``.
    image : ndarray, shape (Y, X) or (k, Y, X)
        Normalised LR image, or the temporal window of a generator with temporal context (the
        restored frame in the middle).
    scale : int
    tile, overlap : int or None
        Largest LR tile and overlap between neighbouring tiles (LR px); None measures them from
        the generator's receptive field (:func:`fastscan.restore.receptive.resolve_tiling`).
    batch_size : int or None
        None chooses from the device (as ``restore.batch_size``).
    device : str
        A torch device (``cpu``, ``cuda:0``), not the config's ``auto``: callers resolve that
        (:func:`fastscan.train.resolve_device`); the CPU by default, so results do not depend on
        the machine.
    precision : str
        See :func:`fastscan.restore.prepare.resolve_precision`; float32 unless asked, so
        evaluations stay exact.
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
