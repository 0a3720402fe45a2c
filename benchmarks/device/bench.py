#!/usr/bin/env python3
"""fastscan on a GPU in one call: inference variants, end to end, training stages, the data loader.

Everything is measured side by side in one process and written to ``OUT/device.json`` after each
measurement, so a run stopped by its time limit still returns what it measured. Each measurement
is guarded: one that fails (``torch.compile`` without a C compiler, an out-of-memory batch, ...)
records its error and the run goes on. Numbers are printed next to the project's targets, which
are never asserted.

Sections, in the order they run (the fragile ``torch.compile`` last):

``inference``
    The bare generators (faithful and lowres, see ``fastscan.models``; randomly initialised, norms
    folded as ``prepare_generator`` does) on LR tiles of 64/128/256/512 px at the engine's
    automatic batch (``default_batch_size``): fp32, bf16 autocast, bf16 + channels_last, and late
    in the run (``graphs``, ``compile``) the latter replayed as a CUDA graph and under
    ``torch.compile`` with and without CUDA graphs.
    Output megapixels per second (HR pixels), timed with CUDA events after a warm-up, and peak
    GPU memory.
``end_to_end``
    ``restore_slide`` of a synthetic 8192 x 8192 uint16 Zarr slide into OME-Zarr and
    ``restore_series`` of a 100-frame 256 x 256 series, each from a model directory as the
    workflow writes it, next to the bare ``TileEngine`` on the same pixels in memory.
``training``
    Steps and tiles per second of the three stages (generator MSE, critic, GAN) built as
    ``fastscan.train`` builds them, at batch 16 and 64, with the accelerations of
    ``train.accelerate`` (bf16 + channels_last on CUDA).
``loader``
    Tiles per second of ``make_dataloaders`` (in memory and tile by tile) on a synthetic dataset
    store, as a ratio to the fastest training step that reads it.

    python3 benchmarks/device/bench.py --out OUT              # on the GPU machine (via run.sh)
    python3 benchmarks/device/bench.py --out OUT --smoke      # the same code paths, tiny, on the CPU
    python3 benchmarks/device/bench.py --table OUT/device.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: What the project aims at (printed beside the results, never asserted).
TARGETS = {
    "faithful_bf16_mpx_s": 320.0,
    "lowres_over_faithful": 3.0,
    "end_to_end_over_engine": 0.70,
    "series_over_realtime": 40.0,
    "loader_over_step": 3.0,
}
REALTIME_FPS = 30.0

#: Sizes of a full run and of a smoke run (CPU, same code paths).
FULL = {
    "tiles": [64, 128, 256, 512],
    "variant_s": 1.5,  # timed seconds per inference variant (after warm-up)
    "warmup": 2,
    "min_calls": 3,
    "slide": 8192,
    "slide_probe": 2048,
    "regions": [512, 2048],
    "series": (100, 256),
    "train_fovs": (3, 256, 16),  # training FOVs, LR size, frames
    "train_tile": 64,
    "train_batches": [16, 64],
    "train_s": 5.0,
    "loader_s": 3.0,
    "e2e_tile": None,  # automatic tiling, as users get it
    "budget": {"inference": 90, "end_to_end": 80, "training": 60, "loader": 15, "graphs": 25},
}
SMOKE = {
    "tiles": [32],
    "variant_s": 0.0,
    "warmup": 0,
    "min_calls": 1,
    "slide": 64,
    "slide_probe": 64,
    "regions": [64],
    "series": (2, 32),
    "train_fovs": (2, 64, 2),
    "train_tile": 32,
    "train_batches": [2],
    "train_s": 0.0,
    "loader_s": 0.0,
    "e2e_tile": (32, 8),
    "budget": {"inference": 60, "end_to_end": 60, "training": 60, "loader": 30, "graphs": 10},
}
GENERATORS = ("faithful", "lowres")
SECTIONS = ("inference", "end_to_end", "training", "loader", "graphs", "compile")


# --------------------------------------------------------------------------------------------
# results


def _finite(value):
    """JSON has no NaN or infinity: they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Report:
    """The results, rewritten atomically to ``device.json`` after every change."""

    def __init__(self, out: Path, *, mode: str, budget: float) -> None:
        self.path = out / "device.json"
        self.data = {
            "format": "fastscan-device-bench/1",
            "mode": mode,
            "budget_s": budget,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "finished": None,
            "env": {},
            "inference": [],
            "end_to_end": [],
            "training": [],
            "loader": [],
            "engine_compile": [],
            "targets": {},
            "skipped": [],
            "errors": [],
        }
        self.save()

    def add(self, section: str, row: dict) -> dict:
        self.data[section].append(row)
        self.save()
        return row

    def skip(self, what: str, why: str) -> None:
        print(f"  skipped {what}: {why}", flush=True)
        self.data["skipped"].append({"what": what, "why": why})
        self.save()

    def error(self, what: str, exc: BaseException) -> str:
        msg = f"{type(exc).__name__}: {exc}".strip()[:2000]
        print(f"  ERROR in {what}: {msg}", flush=True)
        self.data["errors"].append({"what": what, "error": msg, "traceback": traceback.format_exc()[-4000:]})
        self.save()
        return msg

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_finite(self.data), indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


class Budget:
    """Seconds left to a section, within the run's overall limit."""

    def __init__(self, total: float) -> None:
        self.t0 = time.monotonic()
        self.total = float(total)

    def left(self) -> float:
        return self.total - (time.monotonic() - self.t0)

    def section(self, seconds: float) -> Section:
        return Section(self, seconds)


class Section:
    def __init__(self, budget: Budget, seconds: float) -> None:
        self.budget = budget
        self.end = time.monotonic() + max(0.0, min(float(seconds), budget.left()))

    def left(self) -> float:
        return min(self.end - time.monotonic(), self.budget.left())


# --------------------------------------------------------------------------------------------
# device helpers


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def time_calls(fn, device, *, seconds: float, warmup: int = 2, min_calls: int = 3, max_calls: int = 10_000) -> tuple[float, int]:
    """(seconds per call, calls timed): ``warmup`` untimed calls, then calls until ``seconds`` have
    passed (at least ``min_calls``). CUDA time comes from events around the timed calls."""
    import torch

    for _ in range(warmup):
        fn()
    sync(device)
    cuda = device.type == "cuda"
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    n = 0
    while n < max_calls:
        fn()
        n += 1
        if n >= min_calls:
            sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
    if cuda:
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n, n
    return (time.perf_counter() - t0) / n, n


# --------------------------------------------------------------------------------------------
# environment


def environment(device, smoke: bool) -> dict:
    import importlib.metadata as md
    import importlib.util

    import torch

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "smoke": smoke,
        "triton": importlib.util.find_spec("triton") is not None,
        "c_compiler": next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "fastscan_src": str(Path(__import__("fastscan").__file__).parent),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    versions = {}
    for name in ("fastai", "fastcore", "torchvision", "numpy", "scipy", "pandas", "zarr", "numcodecs", "dask", "ome-zarr", "tifffile"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    env["versions"] = versions
    return env


# --------------------------------------------------------------------------------------------
# inference: the bare generator


def generator_state(variant: str, smoke: bool):
    """A randomly initialised generator (``pretrained: false``): (the generator prepared for
    inference on the CPU, its architecture, its state dict as training saves it)."""
    import torch

    from fastscan.models import build_generator, resolve_architecture
    from fastscan.restore.prepare import prepare_generator

    arch = resolve_architecture({"variant": variant, **({"img_size": [64, 64]} if smoke else {})})
    torch.manual_seed(0)
    model = build_generator(arch, pretrained=False).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return prepare_generator(model, channels_last=False), arch, state


def on_device(model, device, *, channels_last: bool):
    """The prepared generator on ``device`` in the given memory format (changed in place: the
    variants share one module, so every variant runs the same weights)."""
    import torch

    model = model.to(device)
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def autocast(device, enabled: bool, *, cache: bool = True):
    import torch

    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def forward_fn(model, x, device, *, bf16: bool, channels_last: bool, graph: bool = False):
    """A no-argument callable running one batch, and what it keeps alive."""
    import torch

    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if not graph:

        def run():
            with torch.inference_mode(), autocast(device, bf16):
                return model(x)

        return run
    # CUDA graph: warm up on a side stream, capture once, then each call replays the graph on
    # the static input (autocast's weight cache must be off inside a capture).
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream), torch.inference_mode(), autocast(device, bf16, cache=False):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream(device).wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode(), autocast(device, bf16, cache=False), torch.cuda.graph(g):
        out = model(x)

    def replay():
        g.replay()
        return out

    return replay


def measure_variant(
    report, *, name, gen, tile, model, device, scale, input_scale, cfg, section, bf16, channels_last, graph=False, compile_mode=None, compile_backend="inductor"
) -> dict | None:
    """One row of the inference table, with out-of-memory batches halved and retried."""
    import torch

    from fastscan.restore.engine import default_batch_size

    what = f"inference {gen} tile {tile} {name}"
    row = {"generator": gen, "tile": tile, "variant": name, "status": "ok"}
    if section.left() <= 0:
        report.skip(what, "over the inference budget")
        return None
    batch = 2 if cfg is SMOKE else default_batch_size(device, (tile, tile), scale, input_scale=input_scale)
    row["auto_batch"] = batch
    attempts = 0
    while True:
        attempts += 1
        try:
            free_memory(device)
            reset_peak(device)
            x = torch.rand(batch, 1, tile, tile, device=device)
            net = model
            if compile_mode is not None:
                torch._dynamo.reset()
                net = torch.compile(model, mode=None if compile_mode == "default" else compile_mode, dynamic=False, backend=compile_backend)
                t0 = time.perf_counter()
                fn = forward_fn(net, x, device, bf16=bf16, channels_last=channels_last)
                fn()
                sync(device)
                row["compile_s"] = round(time.perf_counter() - t0, 2)
            else:
                fn = forward_fn(net, x, device, bf16=bf16, channels_last=channels_last, graph=graph)
            per_call, calls = time_calls(
                fn, device, seconds=min(cfg["variant_s"], max(0.0, section.left())), warmup=cfg["warmup"] + bool(compile_mode), min_calls=cfg["min_calls"]
            )
            out_px = batch * (scale * tile) ** 2
            row.update(
                batch=batch,
                calls=calls,
                ms_per_batch=round(per_call * 1e3, 3),
                tiles_per_s=batch / per_call,
                mpx_per_s=out_px / per_call / 1e6,
                peak_gib=peak_gib(device),
            )
            break
        except Exception as exc:  # noqa: BLE001  (any failure is a result here)
            if is_oom(exc) and batch > 1 and attempts < 6:
                batch = max(1, batch // 2)
                row["oom_retries"] = attempts
                continue
            row.update(status="error", error=report.error(what, exc))
            break
        finally:
            x = fn = net = None  # noqa: F841
            free_memory(device)
    if row.get("status") == "ok":
        print(
            f"  {gen:8s} tile {tile:4d} {name:22s} batch {row['batch']:3d}  {row['mpx_per_s']:9.1f} MP/s  "
            f"{row['tiles_per_s']:8.1f} tiles/s  peak {row['peak_gib'] or 0:6.1f} GiB",
            flush=True,
        )
    return report.add("inference", row)


def inference_section(report, models, device, cfg, budget, *, graphs: bool = False) -> None:
    """The eager variants, or (``graphs``) bf16 + channels_last replayed as a CUDA graph: a failed
    capture can leave the CUDA context unusable, so the graphs run after everything but compile."""
    section = budget.section(cfg["budget"]["graphs" if graphs else "inference"])
    variants = [("fp32", False, False, False), ("bf16", True, False, False), ("bf16+cl", True, True, False)]
    if graphs:
        variants = [("bf16+cl+graph", True, True, True)]
    for gen in GENERATORS:
        base, arch, _ = models[gen]
        scale, input_scale = int(arch["scale"]), int(base.input_scale)
        for name, bf16, cl, graph in variants:
            model = on_device(base, device, channels_last=cl)
            for tile in cfg["tiles"]:
                measure_variant(
                    report,
                    name=name,
                    gen=gen,
                    tile=tile,
                    model=model,
                    device=device,
                    scale=scale,
                    input_scale=input_scale,
                    cfg=cfg,
                    section=section,
                    bf16=bf16,
                    channels_last=cl,
                    graph=graph,
                )
        base.to("cpu")
        free_memory(device)


def compile_section(report, models, device, cfg, budget, *, backend: str) -> None:
    """``torch.compile`` (default mode, then with CUDA graphs) at the engine's default tiles first."""

    from fastscan.restore.prepare import torch_as_subclass

    # The knob first (the decision it informs), if the run has time for two compilations.
    if cfg is SMOKE or budget.left() > 120:
        engine_compile_rows(report, models, device, cfg)
    else:
        report.skip("engine compile", f"{budget.left():.0f} s left")
    with torch_as_subclass():
        _compile_section(report, models, device, cfg, budget, backend=backend)
    for base, _, _ in models.values():
        base.to("cpu")


def engine_compile_rows(report, models, device, cfg) -> None:
    """``restore.compile``: the engine on a video-rate series with ``compile="off"`` and ``"auto"``.

    The first call of ``auto`` includes the compilation; the steady rate is what a long
    restoration gets. The knob pays when the compilation time is won back on restorations of the
    size users run (``fastscan.restore.prepare.COMPILE``).
    """
    from fastscan.restore.engine import TileEngine

    frames, size = cfg["series"]
    stack = synthetic_image(size, 4, frames=frames).astype("float32") / 4095.0
    for gen in GENERATORS:
        base = models[gen][0]
        model = on_device(base, device, channels_last=True)
        for mode in ("off", "auto"):
            what = f"engine {gen} compile {mode}"
            row = {"generator": gen, "compile": mode, "frames": frames, "lr_size": size, "status": "ok"}
            try:
                tile, overlap = cfg["e2e_tile"] or (512 // int(base.input_scale), 32 // int(base.input_scale))
                engine = TileEngine(model, scale=2, tile=tile, overlap=overlap, device=device, compile=mode)
                t0 = time.perf_counter()
                engine.predict_stack(stack[:2])
                sync(device)
                row["first_call_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                engine.predict_stack(stack)
                sync(device)
                dt = time.perf_counter() - t0
                row.update(compiled=engine._compiled is not None, fps=frames / dt, mpx_per_s=frames * (2 * size) ** 2 / 1e6 / dt)
                print(f"  engine {gen:8s} compile {mode:4s}: first call {row['first_call_s']:.1f} s, {row['fps']:.1f} frames/s", flush=True)
            except Exception as exc:  # noqa: BLE001
                row.update(status="error", error=report.error(what, exc))
            report.add("engine_compile", row)
        base.to("cpu")
        free_memory(device)


def _compile_section(report, models, device, cfg, budget, *, backend: str) -> None:
    import torch

    section = budget.section(budget.left())
    if not hasattr(torch, "compile"):
        report.skip("inference torch.compile", f"torch {torch.__version__} has no torch.compile")
        return
    order = []
    for gen in GENERATORS:
        base = models[gen][0]
        default = 512 // int(base.input_scale) if cfg is FULL else cfg["tiles"][0]
        order.append((gen, default))
    for tile in cfg["tiles"]:
        order += [(gen, tile) for gen in GENERATORS if (gen, tile) not in order]
    modes = [("bf16+cl+compile", "default")]
    if device.type == "cuda":
        modes.append(("bf16+cl+compile+graphs", "reduce-overhead"))
    plan = [(gen, tile, name, mode) for name, mode in modes for gen, tile in (order if mode == "default" else order[:2])]
    if cfg is SMOKE:
        plan = plan[:1]
    compiled = {}
    last_compile = 0.0
    worked, failed = set(), set()
    for gen, tile, name, mode in plan:
        what = f"inference {gen} tile {tile} {name}"
        if mode in failed:
            # The compiler is missing or broken: every other shape would fail the same way.
            report.skip(what, "the first torch.compile of this mode failed")
            continue
        if section.left() < 1.5 * last_compile + cfg["variant_s"]:
            report.skip(what, f"{section.left():.0f} s left, the last compile took {last_compile:.0f} s")
            continue
        base, arch, _ = models[gen]
        if gen not in compiled:
            for other in compiled.values():
                other.to("cpu")
            compiled = {gen: on_device(base, device, channels_last=True)}
            free_memory(device)
        row = measure_variant(
            report,
            name=name,
            gen=gen,
            tile=tile,
            model=compiled[gen],
            device=device,
            scale=int(arch["scale"]),
            input_scale=int(base.input_scale),
            cfg=cfg,
            section=section,
            bf16=True,
            channels_last=True,
            compile_mode=mode,
            compile_backend=backend,
        )
        if row:
            row["compile_backend"] = backend
            report.save()
            last_compile = float(row.get("compile_s") or last_compile)
            (worked if row.get("status") == "ok" else failed if mode not in worked else set()).add(mode)


# --------------------------------------------------------------------------------------------
# end to end


def write_model_dir(path: Path, state: dict, arch: dict, *, lr_range=(0.0, 4095.0)) -> Path:
    """A model directory as training writes it: ``generator.pth`` (a state dict) + ``model.json``."""
    import torch

    from fastscan.models import write_model_json

    path.mkdir(parents=True, exist_ok=True)
    torch.save(state, path / "generator.pth")
    write_model_json(
        path,
        {
            "format": "fastscan-model/1",
            "stage": "gan",
            "architecture": arch,
            "scale": int(arch["scale"]),
            "normalisation": {"lr": list(lr_range), "hr": [0.0, 1.0]},
        },
    )
    return path


def synthetic_image(size: int, seed: int = 0, *, frames: int | None = None):
    """Smooth 12-bit structure plus shot-like noise, uint16: (size, size) or (frames, size, size)."""
    import numpy as np
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    base_size = min(size, 1024)
    base = ndi.gaussian_filter(rng.random((base_size, base_size), dtype=np.float32), 3.0)
    base = (base - base.min()) / (base.max() - base.min())
    reps = -(-size // base_size)
    img = np.tile(base, (reps, reps))[:size, :size] * 3000 + 300
    if frames is None:
        return (img + rng.integers(0, 200, img.shape, dtype=np.uint16)).astype(np.uint16)
    return np.stack([(img + rng.integers(0, 400, img.shape, dtype=np.uint16)).astype(np.uint16) for _ in range(frames)])


def end_to_end_section(report, models, device, cfg, budget, work: Path, engine_rates: dict) -> None:
    import tifffile
    import zarr

    from fastscan.dataset import normalise
    from fastscan.models import load_generator
    from fastscan.restore.engine import TileEngine
    from fastscan.restore.prepare import prepare_generator
    from fastscan.restore.receptive import training_context
    from fastscan.restore.series import restore_series
    from fastscan.restore.slide import restore_slide

    section = budget.section(cfg["budget"]["end_to_end"])
    dev = str(device)
    engines = {}

    def engine_for(gen):
        """The bare engine as restore_* build it, from the same model directory."""
        if gen not in engines:
            _, arch, state = models[gen]
            mdir = write_model_dir(work / f"model_{gen}", state, arch)
            # What every restore_* call pays before its first tile: load, fold, measure the tiling.
            t0 = time.perf_counter()
            model, meta = load_generator(mdir)
            model = prepare_generator(model, device=device)
            tile, overlap = cfg["e2e_tile"] or (None, None)
            engine = TileEngine(model, scale=int(meta["scale"]), tile=tile, overlap=overlap, device=device, context=training_context(meta))
            sync(device)
            engines[gen] = (engine, mdir, meta, time.perf_counter() - t0)
        return engines[gen]

    def slide(gen, region):
        what = f"end_to_end slide {gen} region {region}"
        if section.left() <= 5 and cfg is FULL:
            report.skip(what, "over the end-to-end budget")
            return
        row = {"kind": "slide", "generator": gen, "region": region, "status": "ok"}
        try:
            engine, mdir, meta, setup_s = engine_for(gen)
            row.update(tile=engine.tile, overlap=engine.overlap, setup_s=setup_s)
            size = cfg["slide"]
            if cfg is FULL:
                # The engine's rate on a smaller slide first, to size the full one to the budget:
                # restore_slide at 25 % of the engine's rate, plus the engine, in a third of what is left.
                probe = normalise(synthetic_image(cfg["slide_probe"], 1), *meta["normalisation"]["lr"])
                engine.predict(probe[:128, :128])
                sync(device)
                t0 = time.perf_counter()
                engine.predict(probe)
                sync(device)
                probe_rate = (2 * cfg["slide_probe"]) ** 2 / 1e6 / (time.perf_counter() - t0)
                while size > cfg["slide_probe"] and 5 * (2 * size) ** 2 / 1e6 / probe_rate > section.left() / 3:
                    size //= 2
            if size != cfg["slide"]:
                row["reduced_from"] = cfg["slide"]
            row["lr_size"] = size
            row["out_mpx"] = (2 * size) ** 2 / 1e6
            raw = synthetic_image(size, 2)
            zpath = work / f"slide_{gen}_{region}.zarr"
            arr = zarr.create_array(str(zpath), shape=raw.shape, chunks=(min(size, 1024),) * 2, dtype="uint16")
            arr[...] = raw
            image = normalise(raw, *meta["normalisation"]["lr"])
            del raw
            sync(device)
            t0 = time.perf_counter()
            engine.predict(image)
            sync(device)
            row["engine_s"] = time.perf_counter() - t0
            row["engine_mpx_s"] = row["out_mpx"] / row["engine_s"]
            del image
            out = work / f"slide_{gen}_{region}.ome.zarr"
            t0 = time.perf_counter()
            prov = restore_slide(
                zpath, out, model_dir=mdir, device=dev, tile=engine.tile, overlap=engine.overlap, region=region, pyramid_levels=3, progress=False
            )
            row["restore_s"] = time.perf_counter() - t0
            row["mpx_per_s"] = row["out_mpx"] / row["restore_s"]
            row["over_engine"] = row["mpx_per_s"] / row["engine_mpx_s"]
            row["regions"] = prov["regions"]
            row["tile_shape"] = prov["tile_shape"]
            engine_rates.setdefault(gen, row["engine_mpx_s"])
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(zpath, ignore_errors=True)
            print(
                f"  slide {gen:8s} {size}^2 LR region {region}: restore_slide {row['mpx_per_s']:8.1f} MP/s "
                f"({row['restore_s']:.1f} s), engine {row['engine_mpx_s']:8.1f} MP/s -> {row['over_engine']:.2f}",
                flush=True,
            )
        except Exception as exc:  # noqa: BLE001
            row.update(status="error", error=report.error(what, exc))
        report.add("end_to_end", row)

    def series(gen):
        what = f"end_to_end series {gen}"
        if section.left() <= 3 and cfg is FULL:
            report.skip(what, "over the end-to-end budget")
            return
        frames, size = cfg["series"]
        row = {"kind": "series", "generator": gen, "frames": frames, "lr_size": size, "status": "ok"}
        try:
            engine, mdir, meta, setup_s = engine_for(gen)
            row["setup_s"] = setup_s
            raw = synthetic_image(size, 3, frames=frames)
            lr = work / f"series_{gen}.ome.tif"
            tifffile.imwrite(lr, raw, metadata={"axes": "TYX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4}, ome=True)
            stack = normalise(raw, *meta["normalisation"]["lr"])
            if cfg is FULL:
                engine.predict_stack(stack[:2])
                sync(device)
            t0 = time.perf_counter()
            engine.predict_stack(stack)
            sync(device)
            row["engine_s"] = time.perf_counter() - t0
            out = work / f"series_{gen}.ome.zarr"
            tile, overlap = cfg["e2e_tile"] or (None, None)
            t0 = time.perf_counter()
            prov = restore_series(lr, out, model_dir=mdir, device=dev, tile=tile, overlap=overlap, pyramid_levels=1, progress=False)
            row["restore_s"] = time.perf_counter() - t0
            out_mpx = frames * (2 * size) ** 2 / 1e6
            row.update(
                tile=prov["tile"],
                overlap=prov["overlap"],
                out_mpx=out_mpx,
                fps=frames / row["restore_s"],
                over_realtime=frames / row["restore_s"] / REALTIME_FPS,
                mpx_per_s=out_mpx / row["restore_s"],
                engine_mpx_s=out_mpx / row["engine_s"],
                engine_fps=frames / row["engine_s"],
            )
            row["over_engine"] = row["mpx_per_s"] / row["engine_mpx_s"]
            shutil.rmtree(out, ignore_errors=True)
            print(
                f"  series {gen:8s} {frames} x {size}^2: {row['fps']:8.1f} frames/s = {row['over_realtime']:.1f}x real time "
                f"(engine {row['engine_fps']:.1f} frames/s)",
                flush=True,
            )
        except Exception as exc:  # noqa: BLE001
            row.update(status="error", error=report.error(what, exc))
        report.add("end_to_end", row)

    plan = [("slide", "faithful", cfg["regions"][0]), ("series", "faithful", None), ("series", "lowres", None), ("slide", "lowres", cfg["regions"][0])] + [
        ("slide", "faithful", r) for r in cfg["regions"][1:]
    ]
    if cfg is SMOKE:
        plan = plan[:2]
    for kind, gen, region in plan:
        slide(gen, region) if kind == "slide" else series(gen)
    engines.clear()
    free_memory(device)


# --------------------------------------------------------------------------------------------
# training and the loader


def write_registered(path: Path, *, seed: int, frames: int, size: int, scale: int = 2) -> Path:
    """A registered FOV store (layout of docs/architecture.md) with correlated LR/HR."""
    import numpy as np
    from scipy import ndimage as ndi

    from fastscan import stores

    rng = np.random.default_rng(seed)
    hr = (ndi.gaussian_filter(rng.random((scale * size, scale * size)), 2) * 4000).astype(np.float32)
    base = hr.reshape(size, scale, size, scale).mean(axis=(1, 3))
    lr = np.stack([base + rng.normal(0, 30, base.shape) for _ in range(frames)]).astype(np.float32)
    attrs = {"scale": scale, "lr_pixel_size_um": [0.4, 0.4], "hr_pixel_size_um": [0.2, 0.2]}
    return stores.write_registered(path, lr=lr, hr=hr, attrs=attrs, registration=stores.Registration.aligned(frames))


def synthetic_dataset(work: Path, cfg) -> Path:
    from fastscan.dataset import FovEntry, build_dataset

    n, size, frames = cfg["train_fovs"]
    entries = [FovEntry(str(write_registered(work / f"reg{i}.zarr", seed=i, frames=frames, size=size)), "m", "s", f"f{i}", "train") for i in range(n)]
    # A small validation split: fastai validates after every epoch, which is not what is timed.
    entries.append(FovEntry(str(write_registered(work / "regval.zarr", seed=99, frames=1, size=size)), "m", "s", "fval", "val"))
    out = work / "dataset.zarr"
    build_dataset(entries, out, tile=cfg["train_tile"], stride=cfg["train_tile"], background=0.0)
    return out


def step_timer(*, warmup: int, seconds: float, min_steps: int, device):
    """A fastai callback timing training steps (``before_batch`` to ``after_batch``, synchronised)
    after ``warmup`` steps, and cancelling the fit after ``seconds`` (at least ``min_steps``)."""
    from fastai.callback.core import Callback, CancelFitException

    class StepTimer(Callback):
        order = 100
        run_valid = False

        def __init__(self):
            self.seen, self.steps, self.tiles, self.step_s = 0, 0, 0, 0.0
            self.first = self.last = None

        def before_batch(self):
            sync(device)
            self.t = time.perf_counter()
            if self.seen == warmup:
                self.first = self.t

        def after_batch(self):
            sync(device)
            now = time.perf_counter()
            self.seen += 1
            if self.seen > warmup:
                self.steps += 1
                self.tiles += int(self.learn.xb[0].shape[0])
                self.step_s += now - self.t
                self.last = now
                if self.steps >= min_steps and now - self.first >= seconds:
                    raise CancelFitException()

    return StepTimer()


def training_section(report, device, cfg, budget, work: Path, step_rates: dict) -> Path | None:
    import numpy as np

    from fastscan import train as tr
    from fastscan.dataset import make_dataloaders
    from fastscan.models import build_critic

    section = budget.section(cfg["budget"]["training"])
    dev = str(device)
    try:
        dataset = synthetic_dataset(work, cfg)
    except Exception as exc:  # noqa: BLE001
        report.error("training dataset", exc)
        return None
    accel_cfg = {"channels_last": True, "mixed_precision": True}
    size = cfg["train_tile"]
    smoke_arch = {"img_size": [64, 64]} if cfg is SMOKE else {}

    modules = {}

    def generator():
        """One generator and one critic serve every stage: building a ResNet34 U-Net costs more
        than a few steps, and the weights a stage leaves do not change the next one's speed."""
        from fastscan.models import build_generator

        if "generator" not in modules:
            modules["generator"] = build_generator(smoke_arch, pretrained=False)
        return modules["generator"].train().requires_grad_(True)  # the GAN stage freezes them in turn

    def critic():
        if "critic" not in modules:
            modules["critic"] = build_critic(nf=128)
        return modules["critic"].train().requires_grad_(True)

    def learner(stage, bs):
        from functools import partial

        from fastai.data.core import DataLoaders
        from fastai.optimizer import Adam
        from fastai.vision.gan import AdaptiveGANSwitcher, GANLearner

        if stage == "critic":
            # As train_critic: real HR tiles (label 1) against generated ones (label 0).
            from fastscan.dataset import TileDataset

            ds = TileDataset(dataset, "train", size=size)
            real = np.stack([ds[i][1][0].numpy() for i in range(len(ds))])
            fake = real + np.random.default_rng(0).normal(0, 0.05, real.shape).astype(np.float32)
            data = tr._CriticData(real, fake)
            dls = DataLoaders.from_dsets(data, data, bs=bs, drop_last=(len(data) > bs, False), device=dev)
            return tr._critic_learner(dls, critic())
        dls = make_dataloaders(dataset, size=size, batch_size=bs, device=dev)
        gen_learn = tr._generator_learner(dls, generator(), lr_wd=1e-3)
        if stage == "mse":
            return gen_learn
        # As train_gan: the generator and critic learners joined with the adaptive switcher.
        crit_learn = tr._critic_learner(dls, critic())
        return GANLearner.from_learners(
            gen_learn,
            crit_learn,
            weights_gen=(1.0, 50.0),
            switcher=AdaptiveGANSwitcher(critic_thresh=0.65),
            show_img=False,
            opt_func=partial(Adam, mom=0.0),
            metrics=[tr.valid_psnr],
        )

    for bs in cfg["train_batches"]:
        for stage in ("mse", "critic", "gan"):
            what = f"training {stage} batch {bs}"
            if section.left() <= 0:
                report.skip(what, "over the training budget")
                continue
            row = {"stage": stage, "batch": bs, "lr_tile": size, "status": "ok"}
            learn = None
            try:
                free_memory(device)
                reset_peak(device)
                learn = learner(stage, bs)
                row["accelerations"] = tr.accelerate(learn, device=dev, config=accel_cfg)
                tr._quiet(learn)
                timer = step_timer(
                    warmup=cfg["warmup"] + (cfg is FULL), seconds=min(cfg["train_s"], max(0.0, section.left())), min_steps=cfg["min_calls"], device=device
                )
                learn.fit(10_000, 1e-4, cbs=[timer])
                row.update(
                    steps=timer.steps,
                    steps_per_s=timer.steps / timer.step_s,
                    tiles_per_s=timer.tiles / timer.step_s,
                    loop_tiles_per_s=timer.tiles / (timer.last - timer.first) if timer.last and timer.last > timer.first else None,
                    peak_gib=peak_gib(device),
                )
                if stage != "critic":
                    step_rates[bs] = max(step_rates.get(bs, 0.0), row["tiles_per_s"])
                print(
                    f"  {stage:6s} batch {bs:3d}: {row['steps_per_s']:7.2f} steps/s {row['tiles_per_s']:9.1f} tiles/s "
                    f"(with loading {row['loop_tiles_per_s'] or 0:9.1f})  {', '.join(row['accelerations']) or 'fp32'}",
                    flush=True,
                )
            except Exception as exc:  # noqa: BLE001
                row.update(status="error", error=report.error(what, exc))
            finally:
                learn = None
            report.add("training", row)
    free_memory(device)
    return dataset


def loader_section(report, device, cfg, budget, dataset: Path | None, step_rates: dict) -> None:
    from fastscan.dataset import make_dataloaders

    section = budget.section(cfg["budget"]["loader"])
    if dataset is None:
        report.skip("loader", "no dataset (the training section failed to build one)")
        return
    for bs in cfg["train_batches"]:
        for mode, mem in (("in-memory", 1e9), ("tile by tile", 0.0)):
            what = f"loader {mode} batch {bs}"
            if section.left() <= 0:
                report.skip(what, "over the loader budget")
                continue
            row = {"mode": mode, "batch": bs, "status": "ok"}
            try:
                dls = make_dataloaders(dataset, size=cfg["train_tile"], batch_size=bs, device=str(device), max_memory_mb=mem)
                it = iter(dls.train)
                next(it)  # the first batch includes shuffling
                n, batches, t0 = 0, 0, time.perf_counter()
                seconds = min(cfg["loader_s"], max(0.0, section.left()))
                while batches < 3 or time.perf_counter() - t0 < seconds:
                    try:
                        xb, _ = next(it)
                    except StopIteration:
                        it = iter(dls.train)
                        xb, _ = next(it)
                    n += xb.shape[0]
                    batches += 1
                sync(device)
                row["tiles_per_s"] = n / (time.perf_counter() - t0)
                step = step_rates.get(bs)
                row["step_tiles_per_s"] = step
                row["over_step"] = row["tiles_per_s"] / step if step else None
                print(
                    f"  loader {mode:12s} batch {bs:3d}: {row['tiles_per_s']:9.1f} tiles/s" + (f" = {row['over_step']:.1f}x the fastest step" if step else ""),
                    flush=True,
                )
            except Exception as exc:  # noqa: BLE001
                row.update(status="error", error=report.error(what, exc))
            report.add("loader", row)


# --------------------------------------------------------------------------------------------
# targets and the table


def best(rows, **match) -> dict | None:
    ok = [r for r in rows if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items())]
    return max(ok, key=lambda r: r.get("mpx_per_s") or 0.0, default=None)


def evaluate_targets(data: dict) -> dict:
    inf = [r for r in data["inference"] if str(r.get("variant", "")).startswith("bf16")]
    faithful, lowres = best(inf, generator="faithful"), best(inf, generator="lowres")
    slides = [r for r in data["end_to_end"] if r.get("kind") == "slide" and r.get("status") == "ok"]
    series = [r for r in data["end_to_end"] if r.get("kind") == "series" and r.get("status") == "ok"]
    loaders = [r for r in data["loader"] if r.get("status") == "ok" and r.get("over_step")]

    def target(value, goal, what):
        return {"value": value, "target": goal, "met": None if value is None else bool(value >= goal), "what": what}

    f = faithful and faithful["mpx_per_s"]
    lo = lowres and lowres["mpx_per_s"]
    return {
        "faithful_bf16_mpx_s": target(
            f, TARGETS["faithful_bf16_mpx_s"], f"faithful, best bf16 variant ({faithful['variant']}, tile {faithful['tile']})" if faithful else "faithful bf16"
        ),
        "lowres_over_faithful": target(lo / f if f and lo else None, TARGETS["lowres_over_faithful"], "lowres / faithful, best bf16 variants"),
        "end_to_end_over_engine": target(
            min((r["over_engine"] for r in slides), default=None), TARGETS["end_to_end_over_engine"], "restore_slide / bare engine, worst slide"
        ),
        "series_over_realtime": target(
            min((r["over_realtime"] for r in series), default=None), TARGETS["series_over_realtime"], "restore_series frames/s / 30, slowest generator"
        ),
        "loader_over_step": target(
            min((r["over_step"] for r in loaders if r["mode"] == "in-memory"), default=None),
            TARGETS["loader_over_step"],
            "in-memory loader / fastest training step, worst batch",
        ),
    }


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def table(data: dict) -> str:
    """The results as text (also printed for a partial device.json)."""
    lines = []
    env = data.get("env", {})
    lines.append(
        f"fastscan device benchmark ({data.get('mode')}): {env.get('gpu') or env.get('device')}, torch {env.get('torch')}, "
        f"CUDA {env.get('cuda')}, python {env.get('python')}" + ("" if data.get("finished") else "  [INCOMPLETE]")
    )
    lines.append("")
    lines.append("inference, output MP/s (HR px) at the automatic batch; peak GiB")
    inf = data.get("inference", [])
    variants = list(dict.fromkeys(r["variant"] for r in inf))
    for gen in GENERATORS:
        tiles = sorted({r["tile"] for r in inf if r["generator"] == gen})
        if not tiles:
            continue
        lines.append(f"  {gen:8s} {'variant':24s}" + "".join(f"{'tile ' + str(t):>20s}" for t in tiles))
        for v in variants:
            cells = []
            for t in tiles:
                r = next((r for r in inf if r["generator"] == gen and r["tile"] == t and r["variant"] == v), None)
                if r is None:
                    cells.append(f"{'':>20s}")
                elif r.get("status") != "ok":
                    cells.append(f"{'error':>20s}")
                else:
                    cells.append(f"{_fmt(r['mpx_per_s']):>9s} b{r['batch']:<3d}{_fmt(r.get('peak_gib')):>6s}G")
            lines.append(f"  {'':8s} {v:24s}" + "".join(cells))
        comp = [r for r in inf if r["generator"] == gen and r.get("compile_s")]
        if comp:
            lines.append(f"  {'':8s} compile s: " + ", ".join(f"{r['variant']} tile {r['tile']} {r['compile_s']}" for r in comp))
    lines.append("")
    lines.append("end to end")
    for r in data.get("end_to_end", []):
        if r.get("status") != "ok":
            lines.append(f"  {r['kind']} {r['generator']}: {r.get('error', 'error')[:150]}")
        elif r["kind"] == "slide":
            lines.append(
                f"  slide  {r['generator']:8s} {r['lr_size']}^2 LR region {r['region']:5d} tile {r['tile']}/{r['overlap']}: "
                f"{_fmt(r['mpx_per_s'])} MP/s ({_fmt(r['restore_s'])} s), engine {_fmt(r['engine_mpx_s'])} MP/s, ratio {_fmt(r['over_engine'], '.2f')}, "
                f"model load+tiling {_fmt(r.get('setup_s'), '.2f')} s"
            )
        else:
            lines.append(
                f"  series {r['generator']:8s} {r['frames']} x {r['lr_size']}^2 tile {r['tile']}/{r['overlap']}: {_fmt(r['fps'])} frames/s = "
                f"{_fmt(r['over_realtime'])}x real time, {_fmt(r['mpx_per_s'])} MP/s, engine {_fmt(r['engine_fps'])} frames/s, ratio {_fmt(r['over_engine'], '.2f')}"
            )
    for r in data.get("engine_compile", []):
        if r.get("status") != "ok":
            lines.append(f"  engine {r['generator']} compile {r['compile']}: {r.get('error', 'error')[:150]}")
        else:
            lines.append(
                f"  engine {r['generator']:8s} compile {r['compile']:4s} ({'compiled' if r['compiled'] else 'eager'}): {_fmt(r['fps'])} frames/s, "
                f"{_fmt(r['mpx_per_s'])} MP/s, first call {_fmt(r['first_call_s'], '.1f')} s"
            )
    lines.append("")
    lines.append("training (steps timed before_batch..after_batch; 'loop' includes loading)")
    for r in data.get("training", []):
        if r.get("status") != "ok":
            lines.append(f"  {r['stage']:6s} batch {r['batch']:3d}: {r.get('error', 'error')[:150]}")
        else:
            lines.append(
                f"  {r['stage']:6s} batch {r['batch']:3d}: {_fmt(r['steps_per_s'], '.2f'):>7s} steps/s {_fmt(r['tiles_per_s']):>9s} tiles/s "
                f"loop {_fmt(r.get('loop_tiles_per_s')):>9s}  peak {_fmt(r.get('peak_gib'))} GiB  {'+'.join(r.get('accelerations') or []) or 'fp32'}"
            )
    for r in data.get("loader", []):
        if r.get("status") != "ok":
            lines.append(f"  loader {r['mode']} batch {r['batch']}: {r.get('error', 'error')[:150]}")
        else:
            lines.append(f"  loader {r['mode']:12s} batch {r['batch']:3d}: {_fmt(r['tiles_per_s']):>9s} tiles/s, {_fmt(r.get('over_step'))}x the fastest step")
    lines.append("")
    lines.append("targets (not asserted)")
    for key, t in (data.get("targets") or evaluate_targets(data)).items():
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  {key:24s} {_fmt(t['value'], '.2f'):>9s}  target >= {t['target']:<6g} {mark:6s}  {t['what']}")
    if data.get("skipped"):
        lines.append(f"skipped: {len(data['skipped'])} (see device.json)")
    if data.get("errors"):
        lines.append(f"errors: {len(data['errors'])}")
        for e in data["errors"]:
            lines.append(f"  {e['what']}: {e['error'][:200]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="folder for device.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the code paths, not the numbers")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 330, smoke 240)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; smoke: eager)")
    ap.add_argument("--table", type=Path, help="print the table of an existing device.json and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text(encoding="utf-8"))))
        return 0
    if args.out is None:
        ap.error("--out is required")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))

    cfg = SMOKE if args.smoke else FULL
    total = args.budget or (240.0 if args.smoke else 330.0)
    budget = Budget(total)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, mode="smoke" if args.smoke else "full", budget=total)
    sections = set(args.sections.split(","))
    work = Path(tempfile.mkdtemp(prefix="fastscan-device-"))
    try:
        import torch

        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        elif args.smoke:
            torch.set_num_threads(min(2, torch.get_num_threads()))
        report.data["env"] = environment(device, args.smoke)
        report.save()
        print(json.dumps(report.data["env"], indent=1), flush=True)

        models = {gen: generator_state(gen, args.smoke) for gen in GENERATORS}
        engine_rates: dict = {}
        step_rates: dict = {}
        dataset = None
        report.data["sections_s"] = {}
        for name in SECTIONS:
            if name not in sections:
                continue
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            if name == "inference":
                inference_section(report, models, device, cfg, budget)
            elif name == "end_to_end":
                end_to_end_section(report, models, device, cfg, budget, work, engine_rates)
            elif name == "training":
                dataset = training_section(report, device, cfg, budget, work, step_rates)
            elif name == "loader":
                loader_section(report, device, cfg, budget, dataset, step_rates)
            elif name == "graphs":
                if device.type == "cuda":
                    inference_section(report, models, device, cfg, budget, graphs=True)
                else:
                    report.skip("inference bf16+cl+graph", "CUDA graphs need a CUDA device")
            else:
                compile_section(report, models, device, cfg, budget, backend=args.compile_backend or ("eager" if args.smoke else "inductor"))
            report.data["sections_s"][name] = round(time.monotonic() - t0, 1)
            report.save()
        report.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    except BaseException as exc:  # noqa: BLE001  (a timeout's SIGTERM included: keep what was measured)
        report.error("run", exc)
        if not isinstance(exc, Exception):
            raise
    finally:
        report.data["elapsed_s"] = round(time.monotonic() - budget.t0, 1)
        report.data["targets"] = evaluate_targets(report.data)
        with contextlib.suppress(Exception):
            sys.path.insert(0, str(HERE))
            import device_env

            report.data["env"]["imported_distributions"] = device_env.imported_distributions()
        report.save()
        shutil.rmtree(work, ignore_errors=True)
        print("\n" + table(report.data), flush=True)
    return 1 if report.data["errors"] and not report.data["finished"] else 0


if __name__ == "__main__":
    sys.exit(main())
