"""Does temporal context smear what flows? Restore a simulated FOV whose middle band flows while
the rest stands still, with generators of different temporal windows, and score the flowing band
and the still part apart.

A rigid drift is registered away before a window is built (``restore_series`` moves each
neighbour onto the restored frame), so the windows of a drifting specimen are sharp
(``benchmarks/quality.py --only-temporal``). Motion *within* the field is not: a structure that
moves between frames sits at another place in each neighbour, and a generator that averages its
window would draw it doubled or smeared. This benchmark builds that case with the simulator's
optics, scan and detector:

- the specimen of frame ``t`` is a still mitochondria scene outside a horizontal band (40-60 % of
  the field's height) and, inside it, a second scene moved along x by ``t * speed`` µm: content
  flowing through a fixed channel (cytoplasmic streaming, a vessel);
- each frame is acquired alone (``simulate.lr_signal`` + ``simulate.detect``: resonant scan,
  line phase, shot and read noise, the simulator's defaults unless ``--params`` says otherwise),
  and its truth is the noise-free HR image of that frame's specimen (``hr_signal``, expected
  detector units), normalised like the model's HR targets;
- each model restores the raw series through ``restore_series`` (line phase, resonant warp,
  drift, windows), and every frame is scored (fastscan's PSNR/SSIM, 16 HR px of border left out)
  on the band's inside and on the still part, each at least 2 µm from the band's edges.

Usage::

    .venv/bin/python benchmarks/flowing.py --model 1=benchmarks/stage1b/f1_mse/generator \\
        --model 3=benchmarks/peers_sim_cpu3/models/mse --speeds 0 0.2 0.4 0.8 --out benchmarks/flowing

The models should differ only in ``train.architecture.frames`` (the same data and schedule).
Prints one table (model x speed x region: PSNR, SSIM, mean over frames) and writes it to
``--out/flowing.tsv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: Share of the field's height where the content flows (top and bottom edge).
BAND = (0.4, 0.6)
#: Distance from the band's edges (µm) of the pixels scored: the edge itself mixes both regions.
EDGE_UM = 2.0
#: HR pixels left out at the borders (reflected tiles, the resonant scan's stretched line ends).
BORDER = 16


def flowing_specimens(params: dict, *, frames: int, speed_um: float, seed: int) -> list[np.ndarray]:
    """The specimen of each frame: still outside :data:`BAND`, moved by ``t * speed_um`` along x inside."""
    from scipy import ndimage as ndi

    from fastscan.simulate import render_specimen

    ps, fov = params["specimen_pixel_size_um"], params["field_of_view_um"]
    travel = speed_um * (frames - 1)
    size = int(np.ceil((fov + 6.0) / ps))
    rng = np.random.default_rng(seed)
    still = render_specimen("mitochondria", shape=(size, size), pixel_size_um=ps, rng=rng)
    # The flowing scene is wider by its travel, and moved from -travel/2 to +travel/2 about its
    # centre crop, so that its edge never enters the field.
    wide = int(np.ceil(travel / ps)) + 8
    moving = render_specimen("mitochondria", shape=(size, size + wide), pixel_size_um=ps, rng=rng)
    origin = -0.5 * (size * ps - fov)
    y_um = origin + (np.arange(size) + 0.5) * ps
    band = ((y_um >= BAND[0] * fov) & (y_um < BAND[1] * fov)).astype(np.float32)[:, None]
    out = []
    for t in range(frames):
        shifted = ndi.shift(moving, (0.0, (t * speed_um - travel / 2) / ps), order=1, mode="nearest")[:, wide // 2 : wide // 2 + size]
        out.append(still * (1.0 - band) + shifted * band)
    return out


def acquire(specimens: list[np.ndarray], params: dict, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw LR series (one acquisition per frame, with noise) and each frame's noise-free HR
    image (the simulator's HR acquisition without noise: expected detector units, quantised)."""
    from fastscan.simulate import acquire_hr, detect, lr_signal

    rng = np.random.default_rng(seed)
    lr, hr = [], []
    for spec in specimens:
        lr.append(detect(lr_signal(spec, params=params)[0], dwell_us=params["lr"]["dwell_us"], detector=params["detector"], rng=rng))
        hr.append(acquire_hr(spec, params=params, rng=rng, noise=False))
    return np.stack(lr), np.stack(hr)


def regions(n_hr: int, fov: float) -> dict[str, np.ndarray]:
    """Row masks of the HR grid: inside the flowing band and on the still part, away from its edges."""
    y = (np.arange(n_hr) + 0.5) * fov / n_hr
    lo, hi = BAND[0] * fov, BAND[1] * fov
    rows = np.arange(n_hr)
    inside = (y >= lo + EDGE_UM) & (y < hi - EDGE_UM)
    still = ((y < lo - EDGE_UM) | (y >= hi + EDGE_UM)) & (rows >= BORDER) & (rows < n_hr - BORDER)
    return {"flowing": inside, "still": still}


def score(pred: np.ndarray, target: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    from fastscan.metrics import psnr, ssim

    cols = slice(BORDER, -BORDER)
    # SSIM per contiguous run of rows (the still part is two runs), weighted by rows.
    runs = np.split(np.flatnonzero(rows), np.flatnonzero(np.diff(np.flatnonzero(rows)) > 1) + 1)
    s = sum(ssim(pred[r[0] : r[-1] + 1, cols], target[r[0] : r[-1] + 1, cols]) * len(r) for r in runs) / rows.sum()
    return psnr(pred[rows][:, cols], target[rows][:, cols]), float(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR (generator.pth + model.json); repeat for each model")
    ap.add_argument("--speeds", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.8], help="flow speeds, µm per frame")
    ap.add_argument("--frames", type=int, default=8, help="frames of each simulated series")
    ap.add_argument("--params", default="{}", help="simulation parameters (JSON) merged over the simulator's defaults; lr.drift_um_per_frame is 0")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import tifffile
    import zarr

    from fastscan.baselines import upsample
    from fastscan.dataset import normalise
    from fastscan.geometry import prepare_frames
    from fastscan.models import read_model_json
    from fastscan.restore.series import restore_series
    from fastscan.simulate import resolve_params

    models = dict(m.split("=", 1) for m in args.model)
    metas = {label: read_model_json(d) for label, d in models.items()}
    norms = {json.dumps(m["normalisation"], sort_keys=True) for m in metas.values()}
    if len(norms) != 1:
        raise SystemExit("the models have different normalisations: train them on the same dataset")
    meta = next(iter(metas.values()))
    overrides = json.loads(args.params)
    params = resolve_params({**overrides, "lr": {**overrides.get("lr", {}), "frames": args.frames, "drift_um_per_frame": 0.0}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masks = regions(params["hr"]["pixels"], params["field_of_view_um"])
    rows = []
    for speed in args.speeds:
        lr_raw, hr_du = acquire(flowing_specimens(params, frames=args.frames, speed_um=speed, seed=args.seed), params, seed=args.seed + 1)
        series = out / f"flow{speed:g}_lr.tif"
        tifffile.imwrite(series, lr_raw, photometric="minisblack", metadata={"axes": "TYX"})
        target = normalise(hr_du.astype(np.float32), *meta["normalisation"]["hr"])
        lr = normalise(prepare_frames(lr_raw.astype(np.float32), meta), *meta["normalisation"]["lr"])
        preds = {"bilinear": np.stack([upsample(f, scale=int(meta["scale"]), order=1) for f in lr])}
        for label, d in models.items():
            dest = out / f"flow{speed:g}_{label}.ome.zarr"
            restore_series(series, dest, model_dir=d, pyramid_levels=1, precision="float32", threads=2, overwrite=True)
            preds[label] = np.asarray(zarr.open_group(str(dest), mode="r")["0"][...])
        for name, pred in preds.items():
            for region, mask in masks.items():
                scores = [score(pred[t], target[t], mask) for t in range(args.frames)]
                rows.append(
                    {
                        "model": name,
                        "frames": 1 if name == "bilinear" else int((metas[name].get("architecture") or {}).get("frames", 1)),
                        "speed_um_per_frame": speed,
                        "speed_lr_px_per_frame": speed / (params["field_of_view_um"] / params["lr"]["pixels"]),
                        "region": region,
                        "psnr": float(np.mean([s[0] for s in scores])),
                        "ssim": float(np.mean([s[1] for s in scores])),
                    }
                )
        print(f"speed {speed:g} µm/frame done", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "flowing.tsv", sep="\t", index=False)
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(df.pivot_table(index=["model", "region"], columns="speed_um_per_frame", values=["psnr", "ssim"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
