"""Stage-1 study on a peers benchmark's data: one generator per run, scored like the peers table.

``benchmarks/peers.py`` trains all three of fastscan's stages and the peers, which takes about half
an hour; a question about stage 1 alone (an augmentation, a residual base, a temporal window)
needs only the generator. This script trains one stage-1 generator on the dataset store of an
earlier ``peers.py --out`` folder, with ``peers.SCHEDULES[--schedule]`` changed by ``--set``
(a JSON object, merged one level deep), restores that run's test FOVs (automatic tiling, as
``peers.py``), and prints and appends to ``--out/results.jsonl`` one line: PSNR and SSIM
(fastscan's metric code, mean over the test frames), the background noise kept
(``peers.noise_kept``) and the training seconds. Each ``--name`` is trained once; a second run
with the same name only scores it again.

Usage::

    .venv/bin/python benchmarks/peers_stage1.py --data benchmarks/peers_sim_cpu --out benchmarks/stage1 \\
        --name flips --set '{"augment": {"max_zoom": 1.0, "max_lighting": 0.0, "max_contrast": 0.0, "flips": true}}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from peers import SCHEDULES, held_out, noise_kept, restore_tests  # noqa: E402


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes``: dict values merged one level deep, others replaced."""
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="an earlier peers.py --out folder (its dataset.zarr, fovs.json and export/)")
    ap.add_argument("--out", required=True, help="where the generators, restored FOVs and results.jsonl go")
    ap.add_argument("--name", required=True, help="name of this run (a folder under --out)")
    ap.add_argument("--schedule", default="cpu", choices=sorted(SCHEDULES))
    ap.add_argument("--set", default="{}", help='JSON object merged into the schedule, e.g. \'{"generator": {"epochs": [24]}}\'')
    ap.add_argument("--eval-frames", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from fastscan.metrics import evaluate_many
    from fastscan.train import train_generator

    torch.set_num_threads(2)
    data, run = Path(args.data), Path(args.out) / args.name
    for need in ("dataset.zarr", "fovs.json", "export/test"):
        if not (data / need).exists():
            raise SystemExit(f"{data}: no {need}; run benchmarks/peers.py --out {data} first")
    config = merged(SCHEDULES[args.schedule], json.loads(args.set))
    print(f"{args.name}: {json.dumps(config)}", flush=True)

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    if not (run / "mse" / "model.json").is_file():
        train_generator(dataset=data / "dataset.zarr", out_dir=run / "mse", config=config, seed=args.seed, threads=2)
    train_s = time.perf_counter() - t0
    load1 = os.getloadavg()[0]

    tests = held_out(json.loads((data / "fovs.json").read_text()))
    restore_tests(tests, {"mse": run / "mse"}, run / "restored", frames=args.eval_frames, classical=False)
    stores = [
        {
            "restored": str(run / "restored" / f"{t['key']}.zarr"),
            "model": args.name,
            "sample": t["sample"],
            "session": t["session"],
            "fov": t["fov"],
            "key": t["key"],
        }
        for t in tests
    ]
    metrics = evaluate_many(stores)
    metrics = metrics[metrics["method"] == "mse"]
    kept = [noise_kept(s["restored"], np.load(data / "export" / "test" / f"{s['key']}_up.npy"))["mse"] for s in stores]
    result = {
        "name": args.name,
        "psnr": float(metrics["psnr"].mean()),
        "ssim": float(metrics["ssim"].mean()),
        "noise_kept": float(np.mean(kept)),
        "train_s": train_s,
        "loadavg": [load0, load1],
        "schedule": args.schedule,
        "set": json.loads(args.set),
        "seed": args.seed,
    }
    print(json.dumps(result), flush=True)
    with open(Path(args.out) / "results.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
