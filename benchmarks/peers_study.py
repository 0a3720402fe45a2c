"""Study one of fastscan's training stages on a peers benchmark's data, scored like the peers table.

``benchmarks/peers.py`` trains all three of fastscan's stages and the peers, which takes about half
an hour; a question about one stage needs only that stage:

- ``--stage mse`` (default): one stage-1 generator (an augmentation, a residual base, a temporal
  window), trained on the dataset store of an earlier ``peers.py --out`` folder.
- ``--stage gan --from DIR``: the GAN stage alone (an adversarial weight, a learning rate), started
  from the stage-1 generator and critic in ``DIR/mse`` and ``DIR/critic`` (an earlier
  ``peers.py --out``'s ``models`` folder, or a run of this script), so that every variant starts
  from the same generator.

The training config is ``peers.SCHEDULES[--schedule]`` changed by ``--set`` (a JSON object, merged
one level deep). The script restores that run's test FOVs (automatic tiling, as ``peers.py``), and
prints and appends to ``--out/results.jsonl`` one line: PSNR and SSIM (fastscan's metric code, mean
over the test frames), the background noise kept (``peers.noise_kept``) and the training seconds.
Each ``--name`` is trained once; a second run with the same name only scores it again.

Usage::

    .venv/bin/python benchmarks/peers_study.py --data benchmarks/peers_sim_cpu --out benchmarks/stage1 \\
        --name flips --set '{"augment": {"max_zoom": 1.0, "max_lighting": 0.0, "max_contrast": 0.0, "flips": true}}'
    .venv/bin/python benchmarks/peers_study.py --data benchmarks/peers_sim_cpu --out benchmarks/stage3 \\
        --stage gan --from benchmarks/peers_sim_cpu2/models --name adv0.1 --set '{"gan": {"weights_gen": [0.1, 50.0]}}'
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

from peers import SCHEDULES, held_out, merged, noise_kept, restore_tests  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="an earlier peers.py --out folder (its dataset.zarr, fovs.json and export/)")
    ap.add_argument("--out", required=True, help="where the generators, restored FOVs and results.jsonl go")
    ap.add_argument("--name", required=True, help="name of this run (a folder under --out)")
    ap.add_argument("--stage", default="mse", choices=["mse", "gan"], help="the stage trained and scored")
    ap.add_argument("--from", dest="source", help="--stage gan: the folder of the stage-1 generator (mse/) and critic (critic/) it starts from")
    ap.add_argument("--schedule", default="cpu", choices=sorted(SCHEDULES))
    ap.add_argument("--set", default="{}", help='JSON object merged into the schedule, e.g. \'{"generator": {"epochs": [24]}}\'')
    ap.add_argument("--eval-frames", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from fastscan.metrics import evaluate_many
    from fastscan.train import train_gan, train_generator

    torch.set_num_threads(2)
    data, run = Path(args.data), Path(args.out) / args.name
    for need in ("dataset.zarr", "fovs.json", "export/test"):
        if not (data / need).exists():
            raise SystemExit(f"{data}: no {need}; run benchmarks/peers.py --out {data} first")
    if args.stage == "gan":
        if not args.source:
            raise SystemExit("--stage gan needs --from DIR: the folder holding the mse/ generator and critic/ it starts from")
        for need in ("mse/model.json", "critic/model.json"):
            if not (Path(args.source) / need).is_file():
                raise SystemExit(f"{args.source}: no {need}; --from names an earlier peers.py run's models folder")
    config = merged(SCHEDULES[args.schedule], json.loads(args.set))
    print(f"{args.name}: {json.dumps(config)}", flush=True)

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    stage_dir = run / args.stage
    if not (stage_dir / "model.json").is_file():
        if args.stage == "mse":
            train_generator(dataset=data / "dataset.zarr", out_dir=stage_dir, config=config, seed=args.seed, threads=2)
        else:
            source = Path(args.source)
            train_gan(
                dataset=data / "dataset.zarr",
                generator_dir=source / "mse",
                critic_dir=source / "critic",
                out_dir=stage_dir,
                config=config,
                seed=args.seed,
                threads=2,
            )
    train_s = time.perf_counter() - t0
    load1 = os.getloadavg()[0]

    tests = held_out(json.loads((data / "fovs.json").read_text()))
    restore_tests(tests, {args.stage: stage_dir}, run / "restored", frames=args.eval_frames, classical=False)
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
    metrics = metrics[metrics["method"] == args.stage]
    kept = [noise_kept(s["restored"], np.load(data / "export" / "test" / f"{s['key']}_up.npy"))[args.stage] for s in stores]
    result = {
        "name": args.name,
        "psnr": float(metrics["psnr"].mean()),
        "ssim": float(metrics["ssim"].mean()),
        "noise_kept": float(np.mean(kept)),
        "train_s": train_s,
        "loadavg": [load0, load1],
        "stage": args.stage,
        "from": args.source,
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
