"""Data-loader throughput against training-step throughput, side by side on this machine.

The loader must never be the bottleneck: the ratio (tiles/s the loader delivers over tiles/s a
training step consumes) should be at least 3. Both the in-memory and the tile-by-tile (lazy)
reading modes are measured. Without ``--dataset`` a small dataset is simulated first.

    .venv/bin/python benchmarks/loader.py                      # simulated dataset
    .venv/bin/python benchmarks/loader.py --dataset results/dataset/mito.zarr --size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def simulated_dataset(workdir: Path, *, fovs: int, frames: int, tile: int) -> Path:
    from fastscan.dataset import FovEntry, build_dataset
    from fastscan.io import ingest_fov
    from fastscan.register import register_fov
    from fastscan.simulate import write_fov

    entries = []
    for i in range(fovs):
        stem = workdir / f"fov{i}"
        write_fov(
            lr_path=f"{stem}_lr.ome.tif",
            hr_path=f"{stem}_hr.ome.tif",
            truth_path=f"{stem}.json",
            specimen="mitochondria",
            seed=i,
            params={"lr": {"frames": frames}},
        )
        ingest_fov(lr=f"{stem}_lr.ome.tif", hr=f"{stem}_hr.ome.tif", out=f"{stem}.zarr", sample="m", session="s", fov=f"f{i}")
        register_fov(f"{stem}.zarr", f"{stem}_reg.zarr")
        entries.append(FovEntry(f"{stem}_reg.zarr", "m", "s", f"f{i}", "val" if i == fovs - 1 else "train"))
    out = workdir / "dataset.zarr"
    build_dataset(entries, out, tile=tile, stride=tile)
    return out


def loader_rate(dls, batches: int) -> float:
    it = iter(dls.train)
    next(it)  # first batch includes worker start-up and shuffling
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            xb, _ = next(it)
        except StopIteration:
            it = iter(dls.train)
            xb, _ = next(it)
        n += xb.shape[0]
    return n / (time.perf_counter() - t0)


def train_rate(dls, batches: int) -> float:
    import torch
    from torch.nn import functional as F

    from fastscan.models import build_generator

    model = build_generator().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xb, yb = dls.one_batch()
    step = lambda: (opt.zero_grad(), F.mse_loss(model(xb), yb).backward(), opt.step())  # noqa: E731
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * xb.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    import torch

    from fastscan.dataset import make_dataloaders

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, help="existing dataset store (default: simulate one)")
    ap.add_argument("--size", type=int, default=64, help="LR crop size fed to the network")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=30, help="batches timed for the loader")
    ap.add_argument("--steps", type=int, default=5, help="training steps timed")
    ap.add_argument("--fovs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=10)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dataset = args.dataset or simulated_dataset(Path(tmp), fovs=args.fovs, frames=args.frames, tile=args.size)
        if args.dataset is None:
            print(f"simulated dataset built in {time.perf_counter() - t0:.1f} s")
        rates = {}
        for mode, mem in (("in-memory", 1e9), ("lazy (tile by tile)", 0.0)):
            dls = make_dataloaders(dataset, size=args.size, batch_size=args.batch_size, max_memory_mb=mem)
            rates[mode] = loader_rate(dls, args.batches)
        step = train_rate(dls, args.steps)
    print(f"device: cpu, torch threads {torch.get_num_threads()}, batch {args.batch_size}, LR tiles {args.size}x{args.size}")
    print(f"training step consumes {step:9.1f} tiles/s")
    for mode, rate in rates.items():
        print(f"loader {mode:20s} {rate:9.1f} tiles/s   ratio loader/training {rate / step:7.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
