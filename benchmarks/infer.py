"""Whole-slide inference: the naive per-tile loop vs fastscan's engine, side by side, plus peak memory.

One run, one slide (a crop of the real SVS in tests/data, green channel) and one model (``--model``,
or an untrained generator of the default architecture):

* ``naive fastai``: what the paper's code does, a fastai ``Learner.predict`` per tile, batch 1,
  fp32, tiles abutting without overlap or blending (seams included);
* ``naive loop``: the same without fastai, a plain model call per tile under ``torch.no_grad``;
* ``engine``: ``fastscan.restore.engine.TileEngine`` in memory as users get it (folded norms, batched,
  overlapping tiles blended with a raised-cosine window, tiling from the receptive field,
  ``precision="auto"``: bf16 weights where the processor has bf16 matrix units, AMX or
  AVX512-BF16, float32 elsewhere);
* ``engine fp32``: the same engine with ``precision="float32"``;
* ``restore_slide``: the engine end to end, TIFF in, OME-Zarr pyramid out (reading, writing,
  resumability markers and the pyramid included), default precision.

With ``--fov`` (a registered FOV store of the model's sample, e.g. the demo's
``results/register/mito/demo/fov04.zarr``) the held-out frames are also restored in float32 and
in the automatic precision and scored against the HR target, to show what the precision costs.

Every variant runs ``--repeats`` times, interleaved, and the fastest run counts, so a noisy
machine biases all of them alike. Throughput is output megapixels per second. The engine also
computes the overlaps the naive loops skip (that is the price of no seams).

Peak RSS is measured in child processes restoring slides of 1x, 4x and 16x the area of
``--rss-base`` (tiles of the same crop), so memory can be compared across slide sizes.

    .venv/bin/python benchmarks/infer.py --model results/models/mito --size 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SVS = ROOT / "tests" / "data" / "cmu1_small_region_he.svs"
BRIGHTFIELD = {"lr": [0.0, 255.0], "hr": [0.0, 1.0]}


def load(model_dir: str | None):
    """(model, model.json content) as a user gets them: fp32, weight norm and batch norm intact."""
    from fastscan.models import build_generator, load_generator

    if model_dir:
        return load_generator(model_dir)
    torch.manual_seed(0)
    return build_generator().eval(), {"scale": 2, "normalisation": BRIGHTFIELD}


def naive_loop(model, image: np.ndarray, *, tile: int, scale: int) -> np.ndarray:
    """One tile at a time, batch 1, fp32, tiles abutting without overlap."""
    ny, nx = image.shape
    out = np.zeros((scale * ny, scale * nx), np.float32)
    with torch.no_grad():
        for y in range(0, ny, tile):
            for x in range(0, nx, tile):
                t = torch.from_numpy(np.ascontiguousarray(image[y : y + tile, x : x + tile]))[None, None]
                out[scale * y : scale * (y + t.shape[-2]), scale * x : scale * (x + t.shape[-1])] = model(t)[0, 0].numpy()
    return out


def fastai_learner(model, tile: np.ndarray):
    """A fastai Learner around the generator, able to ``predict`` one LR tile."""
    from fastai.data.core import Datasets
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    from fastai.torch_core import TensorImage

    def to_tensor(x):
        return TensorImage(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)[None])

    dsets = Datasets([tile], tfms=[[to_tensor], [to_tensor]], n_inp=1, splits=([0], [0]))
    return Learner(dsets.dataloaders(bs=1, num_workers=0, device="cpu"), model, loss_func=MSELossFlat())


def naive_fastai(learn, image: np.ndarray, *, tile: int, scale: int) -> np.ndarray:
    """The paper's way: ``learn.predict`` on each tile."""
    ny, nx = image.shape
    out = np.zeros((scale * ny, scale * nx), np.float32)
    for y in range(0, ny, tile):
        for x in range(0, nx, tile):
            t = image[y : y + tile, x : x + tile]
            pred = learn.predict(t)[2]
            out[scale * y : scale * (y + t.shape[0]), scale * x : scale * (x + t.shape[1])] = np.asarray(pred).reshape(scale * t.shape[0], scale * t.shape[1])
    return out


def seam_contrast(img: np.ndarray, reference: np.ndarray, columns: list[int]) -> float:
    """Mean |d/dx| of ``img`` on the HR ``columns`` over that of ``reference`` on the same columns.

    ``reference`` restores the same image with tiles that meet elsewhere, so the image's own
    edges cancel out: 1 means no seam at ``columns``.
    """
    at = np.array([c - 1 for c in columns if 0 < c < img.shape[1]])
    if not at.size:
        return float("nan")
    grad = lambda a: np.abs(np.diff(a.astype(np.float64), axis=1)).mean(axis=0)[at].mean()  # noqa: E731
    return float(grad(img) / grad(reference))


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch
from benchmarks.infer import load
from fastscan.restore.slide import restore_slide
torch.set_num_threads({threads})
model, meta = load({model!r})
t0 = time.perf_counter()
prov = restore_slide({slide!r}, {out!r}, generator=(model, meta), tile={tile}, overlap={overlap}, region={region},
                     pyramid_levels=3, progress=False)
print(json.dumps({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "s": time.perf_counter() - t0}}))
"""


def rss_children(args, crop: np.ndarray, tile: int, overlap: int, workdir: Path) -> list[tuple[int, float, float, int]]:
    import tifffile

    rows = []
    base = crop[: args.rss_base, : args.rss_base]
    for factor in (1, 2, 4):
        slide = workdir / f"rss{factor}.tif"
        tifffile.imwrite(slide, np.tile(base, (factor, factor)), tile=(256, 256))
        script = workdir / f"child{factor}.py"
        script.write_text(
            CHILD.format(
                root=str(ROOT),
                threads=torch.get_num_threads(),
                model=args.model,
                slide=str(slide),
                out=str(workdir / f"rss{factor}.ome.zarr"),
                tile=tile,
                overlap=overlap,
                region=args.region,
            )
        )
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((factor * factor, res["maxrss_kb"] / 1024, res["s"], (factor * args.rss_base) ** 2))
    return rows


def precision_quality(args, workdir: Path) -> None:
    """PSNR/SSIM against the HR target of a registered FOV, restored in float32 and in ``auto``."""
    from fastscan.metrics import evaluate_restored
    from fastscan.restore.fov import restore_fov
    from fastscan.restore.prepare import resolve_precision

    auto = str(resolve_precision("auto", "cpu")).removeprefix("torch.")
    scores = {}
    for precision in ("float32", "auto"):
        out = workdir / f"fov_{precision}.zarr"
        restore_fov(
            args.fov, out, models={"model": args.model}, frames=args.fov_frames, tile=None, overlap=None, batch_size=None, classical=False, precision=precision
        )
        df = evaluate_restored(out, model="model", sample="", session="", fov=Path(args.fov).name)
        scores[precision] = df[df["method"] == "model"][["psnr", "ssim"]].to_numpy()
    f, a = scores["float32"], scores["auto"]
    print(
        f"held-out frames of {args.fov} ({len(f)}), against the HR target: float32 PSNR {f[:, 0].mean():.3f} dB, "
        f"SSIM {f[:, 1].mean():.4f}; auto ({auto}) PSNR {a[:, 0].mean():.3f} dB, SSIM {a[:, 1].mean():.4f}; "
        f"difference per frame: PSNR {np.abs(a[:, 0] - f[:, 0]).max():.4f} dB, SSIM {np.abs(a[:, 1] - f[:, 1]).max():.5f} at most"
    )


def main() -> None:
    import tifffile

    from fastscan.dataset import normalise
    from fastscan.restore.engine import TileEngine
    from fastscan.restore.prepare import prepare_generator
    from fastscan.restore.receptive import training_context
    from fastscan.restore.slide import restore_slide
    from fastscan.restore.tiling import tile_starts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: an untrained generator)")
    ap.add_argument("--size", type=int, default=512, help="LR size of the square slide crop")
    ap.add_argument("--naive-tile", type=int, default=128, help="tile of the naive loops (LR px)")
    ap.add_argument("--tile", type=int, default=None, help="largest engine tile (default: from the receptive field)")
    ap.add_argument("--overlap", type=int, default=None, help="engine overlap (default: from the receptive field)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--region", type=int, default=512, help="region of restore_slide (LR px)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rss-base", type=int, default=256, help="LR size of the 1x slide of the memory test (0: skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fov", default=None, help="registered FOV store: score float32 vs auto precision against its HR")
    ap.add_argument("--fov-frames", type=int, default=3)
    args = ap.parse_args()
    if args.fov and not args.model:
        ap.error("--fov needs --model (the model of the FOV's sample)")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, meta = load(args.model)
    fast, _ = load(args.model)
    fast = prepare_generator(fast)
    scale = int(meta["scale"])
    crop = tifffile.imread(SVS)[: args.size, : args.size, 1]
    image = normalise(crop, *meta["normalisation"]["lr"])
    engine = TileEngine(fast, scale=scale, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, context=training_context(meta))
    engine_fp32 = TileEngine(fast, scale=scale, tile=engine.tile, overlap=engine.overlap, batch_size=args.batch_size, precision="float32")
    learn = fastai_learner(model, image[: args.naive_tile, : args.naive_tile])
    out_mpx = (scale * args.size) ** 2 / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slide = tmp / "crop.tif"
        tifffile.imwrite(slide, crop, tile=(256, 256))

        def end_to_end():
            restore_slide(
                slide,
                tmp / "crop.ome.zarr",
                generator=(fast, meta),
                tile=engine.tile,
                overlap=engine.overlap,
                batch_size=args.batch_size,
                region=args.region,
                pyramid_levels=3,
                progress=False,
            )

        runs = {
            "naive fastai": lambda: naive_fastai(learn, image, tile=args.naive_tile, scale=scale),
            "naive loop": lambda: naive_loop(model, image, tile=args.naive_tile, scale=scale),
            "engine": lambda: engine.predict(image),
            "engine fp32": lambda: engine_fp32.predict(image),
            "restore_slide": end_to_end,
        }
        naive_loop(model, image[: args.naive_tile, : args.naive_tile], tile=args.naive_tile, scale=scale)  # warm-up
        engine.predict(image[:64, :64])
        engine_fp32.predict(image[:64, :64])
        times: dict[str, list[float]] = {k: [] for k in runs}
        outputs = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                outputs[name] = fn()
                times[name].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}

        print(
            f"device: cpu, {torch.get_num_threads()} threads; model: {args.model or 'untrained generator'}; "
            f"slide: SVS crop {args.size}x{args.size} LR -> {scale * args.size}x{scale * args.size} HR"
        )
        print(
            f"naive: tiles of {args.naive_tile} px, batch 1, fp32, no overlap; engine: tiles up to {engine.tile} px "
            f"(fitted: {engine.tile_shape((min(args.region, args.size),) * 2)}), overlap {engine.overlap} px, "
            f"batch {engine.batch_size or 'auto'}, precision {str(engine.dtype).removeprefix('torch.')}"
        )
        print(f"{'variant':14s} {'time s':>8s} {'out Mpx/s':>10s} {'vs fastai':>10s} {'vs loop':>8s}")
        for name in runs:
            print(
                f"{name:14s} {best[name]:8.2f} {out_mpx / best[name]:10.3f} {best['naive fastai'] / best[name]:9.2f}x {best['naive loop'] / best[name]:7.2f}x"
            )
        borders = [scale * x for x in range(args.naive_tile, args.size, args.naive_tile)]
        # The engine's blend zones, centred half an overlap before each tile start past the halo.
        o = engine.overlap
        starts = tile_starts(args.size + 2 * o, engine.tile_shape((args.size, args.size))[1], o)
        blends = [scale * (x - o // 2) for x in starts[1:]]
        other = TileEngine(fast, scale=scale, tile=engine.tile // 2 + 8 + o, overlap=o, batch_size=args.batch_size).predict(image)
        print(
            f"seams (|d/dx| where tiles meet / same columns of a restoration tiled elsewhere, 1 = none): "
            f"naive {seam_contrast(outputs['naive loop'], outputs['engine'], borders):.2f} at its tile borders, "
            f"engine {seam_contrast(outputs['engine'], other, blends):.2f} at its blend zones"
        )
        diff = np.abs(outputs["naive loop"] - outputs["engine"])
        print(f"naive vs engine: max |diff| {diff.max():.3f}, mean {diff.mean():.4f} (normalised units)")
        diff = np.abs(outputs["engine"] - outputs["engine fp32"])
        print(f"engine {str(engine.dtype).removeprefix('torch.')} vs fp32: max |diff| {diff.max():.4f}, mean {diff.mean():.5f}")
        if args.fov:
            precision_quality(args, tmp)

        if args.rss_base:
            rows = rss_children(args, crop, engine.tile, engine.overlap, tmp)
            print(f"peak RSS of restore_slide in a child process (region {args.region}):")
            for area, mb, sec, px in rows:
                print(f"  {area:2d}x area ({px / 1e6:5.2f} LR Mpx): {mb:7.0f} MB peak RSS, {sec:6.1f} s")
            print(f"  16x / 1x peak RSS: {rows[-1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main()
