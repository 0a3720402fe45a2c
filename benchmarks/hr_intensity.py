"""HR targets of unequal brightness: ``dataset.match_hr_intensity`` against the targets as acquired.

Simulated mitochondria FOVs whose HR targets were each acquired at their own detector gain (a
factor drawn log-uniformly in [1/2.5, 2.5], the LR series untouched), as when a lab changes the
PMT voltage of the slow scan from FOV to FOV or exports every target with its own display range.
Registration measures each FOV's line (``lr_per_hr``, ``lr_at_zero_hr``); two stage-1 generators
are trained with the same schedule on the same tiles, one on the targets as acquired and one on
the targets matched into their series' units, and both restore the same held-out FOVs.

Printed side by side, per method, mean PSNR / SSIM over the held-out frames:

- ``pipeline``: fastscan's metrics as the workflow computes them, each model against the targets
  as its dataset reads them (acquired, or matched);
- against the registered target at gain 1, normalised by its own percentiles for both, after the
  least-squares affine map of each predicted frame onto it (as CSBDeep's ``normalize_minmse``):
  what is left when a prediction's brightness is forgiven, i.e. the restored structure.

The script prints the time of each step and asserts nothing on it.

Usage::

    .venv/bin/python benchmarks/hr_intensity.py --out benchmarks/hr_intensity
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import TRAIN, Timer, _log  # noqa: E402

PARAMS = {"field_of_view_um": 51.2, "hr": {"pixels": 256}, "lr": {"pixels": 128}}
SPLITS = ["train"] * 8 + ["val"] * 2 + ["test"] * 3


def prepare(out: Path, *, frames: int, seed: int, max_gain: float) -> list[dict]:
    """Simulate, ingest, scale each HR target by its own gain, register."""
    import zarr

    from fastscan.io import ingest_fov
    from fastscan.register import register_fov
    from fastscan.simulate import write_fov

    rng = np.random.default_rng(seed)
    fovs = []
    for i, split in enumerate(SPLITS):
        fov = f"fov{i + 1:02d}"
        base = out / "simulated" / fov
        truth = write_fov(
            lr_path=f"{base}_lr.ome.tif",
            hr_path=f"{base}_hr.ome.tif",
            truth_path=f"{base}_truth.json",
            specimen="mitochondria",
            seed=seed + 1000 * i,
            params={**PARAMS, "lr": {**PARAMS["lr"], "frames": frames}},
        )
        ingested = out / "ingest" / f"{fov}.zarr"
        ingest_fov(lr=f"{base}_lr.ome.tif", hr=f"{base}_hr.ome.tif", out=ingested, sample="mito", session="bench", fov=fov, scale=int(truth["scale"]))
        gain = float(np.exp(rng.uniform(-np.log(max_gain), np.log(max_gain))))
        group = zarr.open_group(str(ingested), mode="r+")
        group["hr"][...] = (np.asarray(group["hr"][...], dtype=np.float32) * gain).astype(group["hr"].dtype)
        registered = out / "register" / f"{fov}.zarr"
        qc = register_fov(ingested, registered)
        fovs.append({"path": str(registered), "fov": fov, "split": split, "gain": gain, "lr_per_hr": qc["lr_per_hr"]})
        _log(f"{fov} ({split}): HR gain {gain:.2f}, lr_per_hr {qc['lr_per_hr']:.4g}, ncc {qc['ncc']:.3f}")
    return fovs


def truth_scores(restored: Path, registered: str, gain: float, methods: list[str]) -> list[dict]:
    """Each method's frames against the registered target at gain 1 (normalised by its own 1st
    and 99.8th percentiles, the same for both readings), after the least-squares affine map of
    each frame onto it."""
    import zarr

    from fastscan.dataset import normalise, percentile_range
    from fastscan.metrics import psnr, ssim

    hr = np.asarray(zarr.open_group(registered, mode="r")["hr"][...], dtype=np.float32) / np.float32(gain)
    target = normalise(hr, *percentile_range(hr, low=1.0, high=99.8))
    g = zarr.open_group(str(restored), mode="r")
    rows = []
    for m in methods:
        pred = np.asarray(g[m][...], dtype=np.float64)
        for f in range(pred.shape[0]):
            k, c = np.polyfit(pred[f].ravel(), target.ravel().astype(np.float64), 1)
            fitted = (k * pred[f] + c).astype(np.float32)
            rows.append({"method": m, "frame": f, "psnr": psnr(fitted, target), "ssim": ssim(fitted, target)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=4, help="LR frames per FOV")
    ap.add_argument("--max-gain", type=float, default=2.5, help="HR gains drawn log-uniformly in [1/max, max]")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8, help="stage-1 epochs of each generator")
    args = ap.parse_args(argv)
    from fastscan.dataset import FovEntry, build_dataset
    from fastscan.metrics import evaluate_many
    from fastscan.restore.fov import restore_fov
    from fastscan.train import train_generator

    timer = Timer()
    t = time.perf_counter()
    fovs = prepare(args.out, frames=args.frames, seed=args.seed, max_gain=args.max_gain)
    timer.step("simulate, ingest, register", t)
    entries = [FovEntry(f["path"], "mito", "bench", f["fov"], f["split"]) for f in fovs if f["split"] != "test"]
    # The fast lowres generator on whole 64-px crops (quality.VARIANT_GENERATOR's schedule, fewer
    # epochs): the comparison is between two readings of the same targets, not of architectures.
    config = {
        "batch_size": TRAIN["batch_size"],
        "architecture": {"variant": "lowres"},
        "generator": {**TRAIN["generator"], "sizes": [64], "epochs": [args.epochs]},
    }
    pipeline, truth = [], []
    for reading in ("acquired", "matched"):
        dataset = args.out / f"{reading}.zarr"
        build_dataset(entries, dataset, tile=64, stride=48, match_hr_intensity=reading == "matched")
        t = time.perf_counter()
        train_generator(dataset=dataset, out_dir=args.out / reading / "mse", config=config, seed=0, threads=2)
        timer.step(f"{reading}: train_generator", t)
        stores = []
        for f in fovs:
            if f["split"] != "test":
                continue
            restored = args.out / reading / f"{f['fov']}.zarr"
            restore_fov(f["path"], restored, models={"mse": args.out / reading / "mse"}, frames=args.frames, threads=2)
            stores.append({"restored": str(restored), "model": reading, "sample": "mito", "session": "bench", "fov": f["fov"]})
            truth += [{"reading": reading, "fov": f["fov"], **r} for r in truth_scores(restored, f["path"], f["gain"], ["classical", "mse"])]
        pipeline.append(evaluate_many(stores).assign(reading=reading))
    metrics = pd.concat(pipeline, ignore_index=True)
    metrics.to_csv(args.out / "pipeline.tsv", sep="\t", index=False)
    pd.DataFrame(truth).to_csv(args.out / "truth.tsv", sep="\t", index=False)
    tab = metrics.groupby(["reading", "method"], sort=False)[["psnr", "ssim"]].mean().round(4)
    print("\npipeline metrics (each model against the targets as its dataset reads them):")
    print(tab.to_string())
    tab = pd.DataFrame(truth).groupby(["reading", "method"], sort=False)[["psnr", "ssim"]].mean().round(4)
    print("\nagainst the gain-1 target, each prediction affinely mapped onto it:")
    print(tab.to_string())
    print(f"\nHR gains of the test FOVs: {[round(f['gain'], 2) for f in fovs if f['split'] == 'test']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
