"""Tiled inference throughput: the naive per-tile loop vs fastscan's batched, blended engine.

Both run side by side in one process on the same image and the same (randomly initialised)
generator, so the ratio is meaningful even on a noisy machine; absolute numbers are not.

    .venv/bin/python benchmarks/infer.py --size 256 --tile 128 --overlap 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def naive(model, image: np.ndarray, *, tile: int, scale: int) -> np.ndarray:
    """What a user would write first: one tile at a time, batch 1, no overlap, fp32."""
    ny, nx = image.shape
    out = np.zeros((scale * ny, scale * nx), np.float32)
    with torch.no_grad():
        for y in range(0, ny, tile):
            for x in range(0, nx, tile):
                t = torch.from_numpy(np.ascontiguousarray(image[y : y + tile, x : x + tile]))[None, None]
                p = model(t)[0, 0].numpy()
                out[scale * y : scale * (y + t.shape[-2]), scale * x : scale * (x + t.shape[-1])] = p
    return out


def main() -> None:
    from fastscan.infer import predict_image
    from fastscan.models import build_generator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="LR image size (square)")
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = build_generator().eval()
    image = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    out_mpx = (2 * args.size) ** 2 / 1e6
    naive(model, image[: args.tile, : args.tile], tile=args.tile, scale=2)  # warm-up
    timings = {"naive": [], "engine": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        naive(model, image, tile=args.tile, scale=2)
        timings["naive"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict_image(model, image, scale=2, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
        timings["engine"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in timings.items()}
    print(f"device: cpu, threads {torch.get_num_threads()}, LR {args.size}x{args.size} -> HR {2 * args.size}x{2 * args.size}")
    for k in ("naive", "engine"):
        print(f"{k:7s} {out_mpx / best[k]:8.3f} output Mpx/s  ({best[k]:.2f} s)")
    print(f"engine / naive throughput ratio: {best['naive'] / best['engine']:.2f}x "
          f"(the engine also computes the {args.overlap}-px overlaps the naive loop skips)")


if __name__ == "__main__":
    main()
