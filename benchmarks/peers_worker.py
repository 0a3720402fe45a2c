"""Train one peer method on exported fastscan tiles for a wall-clock budget, then predict test frames.

Run by ``benchmarks/peers.py`` with the python of the peer's own virtual environment; it does not
import fastscan (the peers' dependency pins conflict with the project's). Everything it needs is in
``--data`` (written by ``peers.py``), all on fastscan's normalised intensity scale:

- ``train_lr.npy``, ``val_lr.npy``: ``(N, t, t)`` LR tiles, geometry-corrected as fastscan trains;
- ``train_up.npy``, ``val_up.npy``: the same tiles upsampled bilinearly to the HR grid;
- ``train_hr.npy``, ``val_hr.npy``: ``(N, s*t, s*t)`` HR tiles;
- ``manifest.json``: ``scale`` and the test FOVs, each with ``lr`` (the frames exactly as fastscan's
  generator sees them) and ``up`` (those frames upsampled bilinearly) ``.npy`` files.

Peers:

- ``care``: CAREamics CARE (its configuration factory, trainer and tiled prediction); input is the
  bilinear upsampling, since CARE restores on the grid of its input.
- ``pssr2``: PSSR2's ResUNet with 2x upscaling, trained with ``pssr.train.train_paired`` and the
  PSSR2 command line's recipe (AdamW 1e-3, exponential decay 0.7 per epoch, MS-SSIM/L1 mix 0.8,
  random rotations and flips); intensities are scaled to the 0..255 range it expects and back.

Training stops when ``--budget`` seconds (counted from the start of training, data loading
included) are spent, mid-epoch if need be (after the batch in progress). Writes
``--out/pred/KEY.npy`` (one ``(N, Y, X)`` float32 stack per test FOV, HR grid, fastscan's scale)
and ``--out/result.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _load(data: Path, name: str) -> np.ndarray:
    return np.load(data / name).astype(np.float32, copy=False)


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _flip_ensemble(predict, x: np.ndarray, *, ensemble: str) -> np.ndarray:
    """``predict(x)`` (frames ``(T, Y, X)``), or with ``ensemble == "flips"`` the mean of its
    predictions of ``x`` flipped left-right, up-down and both, flipped back: the self-ensemble
    fastscan's ``restore.ensemble: flips`` runs, given to the peers too."""
    if ensemble == "none":
        return predict(x)
    out = None
    for axes in ((), (-1,), (-2,), (-2, -1)):
        pred = predict(np.ascontiguousarray(np.flip(x, axes) if axes else x))
        pred = np.flip(pred, axes) if axes else pred
        out = pred.astype(np.float64) if out is None else out + pred
    return (out / 4).astype(np.float32)


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the last two axes up to a multiple of ``multiple``; returns the original size."""
    y, xx = x.shape[-2:]
    py, px = (-y) % multiple, (-xx) % multiple
    if py or px:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, py), (0, px)], mode="reflect")
    return x, (y, xx)


# --------------------------------------------------------------------------------------------
# CARE (CAREamics)


def run_care(data: Path, out: Path, manifest: dict, *, budget: float, batch_size: int, seed: int, smoke: bool, t0: float, ensemble: str) -> dict:
    from careamics import CAREamist, __version__
    from careamics.config import create_advanced_care_config

    train_x, train_y = _load(data, "train_up.npy"), _load(data, "train_hr.npy")
    val_x, val_y = _load(data, "val_up.npy"), _load(data, "val_hr.npy")
    patch = int(train_y.shape[-1])  # whole HR tiles, the field fastscan's last stage trains on
    left = max(1.0, budget - (time.perf_counter() - t0))
    cfg = create_advanced_care_config(
        experiment_name="fastscan_peers",
        data_type="array",
        axes="SYX",
        patch_size=[patch, patch],
        batch_size=batch_size,
        num_epochs=1 if smoke else 100_000,  # the budget stops training
        num_workers=0,
        trainer_params={"max_time": {"seconds": left}, "accelerator": "cpu", "devices": 1},
        # Every peer uses its whole budget; CARE's best checkpoint (val_loss) is what predicts,
        # which is what early stopping would protect against anyway.
        early_stopping_params={"monitor": "val_loss", "mode": "min", "patience": 1_000_000},
        seed=seed + 1,  # CAREamics wants a positive seed
    )
    care = CAREamist(cfg, work_dir=out / "care", enable_progress_bar=False)
    care.train(train_data=train_x, train_data_target=train_y, val_data=val_x, val_data_target=val_y)
    train_s = time.perf_counter() - t0
    epochs = int(care.trainer.current_epoch)
    steps = int(care.trainer.global_step)

    t1 = time.perf_counter()
    depth = int(getattr(care.config.algorithm_config.model, "depth", 2))

    def predict(x: np.ndarray) -> np.ndarray:
        xp, (h, w) = _pad_to(x, 2**depth)
        pred, _ = care.predict(xp, axes="SYX", data_type="array", batch_size=1, tile_size=None, tile_overlap=None, checkpoint="best")
        arr = np.asarray(pred[0] if len(pred) == 1 else np.stack([np.asarray(p) for p in pred]), dtype=np.float32)
        return arr.reshape(x.shape[0], *xp.shape[-2:])[:, :h, :w]

    preds = {test["key"]: _flip_ensemble(predict, _load(data, test["up"]), ensemble=ensemble) for test in manifest["tests"]}
    return {
        "peer": "care",
        "package": f"careamics {__version__}",
        "input": "bilinear upsampling of the LR frame (fastscan.baselines.upsample, order 1)",
        "train_s": train_s,
        "predict_s": time.perf_counter() - t1,
        "epochs": epochs,
        "steps": steps,
        "patch": patch,
        "model": "CAREamics UNet (defaults)",
        "checkpoint": "best val_loss",
        "preds": preds,
    }


# --------------------------------------------------------------------------------------------
# PSSR2


class _Stop(Exception):
    """The budget is spent (raised from a training callback)."""


class PairedTiles:
    """PSSR2's paired-dataset interface over in-memory tiles: ``(hr, lr)`` in 0..255, C=1.

    Training items get PSSR2's own augmentation (``pssr.data._transform_pair``: a random 90-degree
    rotation and a flip); validation items none. ``val_idx`` lists the validation items.
    """

    def __init__(self, train_lr, train_hr, val_lr, val_hr, scale: int) -> None:
        self.lr = np.concatenate([train_lr, val_lr]) * 255.0
        self.hr = np.concatenate([train_hr, val_hr]) * 255.0
        self.val_idx = np.arange(len(train_lr), len(train_lr) + len(val_lr))
        self._val = set(self.val_idx.tolist())
        self.extra_hr_files = None
        self.hr_res = int(self.hr.shape[-1])
        self.crop_res = self.hr_res
        self.lr_scale = int(scale)
        self.n_frames = None

    def __len__(self) -> int:
        return len(self.lr)

    def __getitem__(self, i):
        import random

        from pssr.data import _transform_pair

        is_val = int(i) in self._val
        rot = False if is_val else [bool(random.getrandbits(1)), random.choice((1, 2, (1, 2)))]
        return _transform_pair(self.hr[i][None], self.lr[i][None], self.hr_res, self.hr_res // self.lr_scale, rot, None, None)


def _max_ssim_win(hr_res: int) -> int:
    """The SSIM window PSSR2's command line uses for ``hr_res`` (``pssr.__main__._max_ssim_win``)."""
    size = (hr_res - 1) // 16
    return size + 1 if size % 2 == 0 else size


def run_pssr2(data: Path, out: Path, manifest: dict, *, budget: float, batch_size: int, seed: int, smoke: bool, t0: float, ensemble: str) -> dict:
    import random
    from importlib.metadata import version

    import torch
    from pssr.models import ResUNet
    from pssr.train import train_paired
    from pssr.util import SSIMLoss

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    scale = int(manifest["scale"])
    ds = PairedTiles(_load(data, "train_lr.npy"), _load(data, "train_hr.npy"), _load(data, "val_lr.npy"), _load(data, "val_hr.npy"), scale)
    hidden = [16, 32] if smoke else [64, 128, 256, 512, 1024]  # the ResUNet default
    model = ResUNet(channels=1, hidden=hidden, scale=scale)
    win = min(_max_ssim_win(ds.hr_res), 11)
    loss_fn = SSIMLoss(channels=1, mix=0.8, win_size=win, ms=True)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optim, 0.7)
    deadline = t0 + budget

    def stop_when_spent() -> None:
        if time.perf_counter() >= deadline:
            raise _Stop

    best, best_loss, epochs, stopped_mid_epoch = None, float("inf"), 0, False
    max_epochs = 1 if smoke else 100_000
    while epochs < max_epochs and time.perf_counter() < deadline:
        try:
            _, val = train_paired(
                model=model,
                dataset=ds,
                batch_size=batch_size,
                loss_fn=loss_fn,
                optim=optim,
                epochs=1,
                scheduler=scheduler,
                log_frequency=50,
                callbacks=[stop_when_spent],
            )
        except _Stop:
            stopped_mid_epoch = True
            break
        epochs += 1
        if val[-1] < best_loss:
            best_loss, best = val[-1], copy.deepcopy(model.state_dict())
    # Stopped mid-epoch: the best whole epoch predicts (the partly trained model when none is
    # whole). Validating the partial epoch too would spend time past the budget.
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    depth = len(hidden) - 1

    def predict(x: np.ndarray) -> np.ndarray:
        xp, (h, w) = _pad_to(x, 2**depth)
        with torch.no_grad():
            frames = [model(torch.from_numpy(f[None, None] * 255.0)).numpy()[0, 0] / 255.0 for f in xp]
        return np.stack(frames).astype(np.float32)[:, : scale * h, : scale * w]

    preds = {test["key"]: _flip_ensemble(predict, _load(data, test["lr"]), ensemble=ensemble) for test in manifest["tests"]}
    return {
        "peer": "pssr2",
        "package": f"pssr {version('pssr')}",
        "input": "LR frame as fastscan's generator sees it, x255",
        "train_s": train_s,
        "predict_s": time.perf_counter() - t1,
        "epochs": epochs,
        "stopped_mid_epoch": stopped_mid_epoch,
        "best_val_loss": None if best is None else best_loss,
        "model": f"ResUNet(hidden={hidden}, scale={scale})",
        "loss": f"SSIMLoss(mix=0.8, ms=True, win_size={win})",
        "preds": preds,
    }


PEERS = {"care": run_care, "pssr2": run_pssr2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", required=True, choices=sorted(PEERS))
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--budget", required=True, type=float, help="training wall-clock seconds")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="one epoch, a tiny PSSR2 network")
    ap.add_argument(
        "--ensemble", default="none", choices=["none", "flips"], help="flips: predict the mean over the four flips (as fastscan's restore.ensemble)"
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((args.data / "manifest.json").read_text())
    load0 = _loadavg()
    t0 = time.perf_counter()
    res = PEERS[args.peer](
        args.data, args.out, manifest, budget=args.budget, batch_size=args.batch_size, seed=args.seed, smoke=args.smoke, t0=t0, ensemble=args.ensemble
    )
    (args.out / "pred").mkdir(exist_ok=True)
    for key, arr in res.pop("preds").items():
        np.save(args.out / "pred" / f"{key}.npy", arr)
    res.update(
        ensemble=args.ensemble, budget_s=args.budget, threads=torch.get_num_threads(), torch=torch.__version__, loadavg_start=load0, loadavg_end=_loadavg()
    )
    (args.out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
