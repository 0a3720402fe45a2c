"""Peers benchmark: fastscan against CARE (CAREamics) and PSSR2 on the same pairs with the same compute.

Every method trains on the tiles of one fastscan dataset store (same train/val split, same
normalised intensities, the LR tiles geometry-corrected as fastscan trains), each peer for the
wall-clock time fastscan's three stages (MSE, critic, GAN) took. All restore the same test frames,
which the peers receive exactly as fastscan's generator sees them (normalised with the model's
normalisation and geometry-corrected with :func:`fastscan.geometry.correct_frames`, as
:func:`fastscan.restore.fov.restore_fov` does); their predictions are added as arrays ``care`` and
``pssr2`` to copies of the restored FOV stores and scored by :func:`fastscan.metrics.evaluate_restored`
with the other methods. One table per sample: bilinear, bicubic, classical, care, pssr2, mse, gan;
mean ± sd of PSNR and SSIM, the training seconds each method used, and fastscan's margins over
CARE against the target (reported, not asserted): GAN and MSE >= CARE + 1 dB PSNR and >= CARE's SSIM
at no more training time.

- CARE (``careamics``): its configuration factory (``axes="SYX"``, whole HR tiles as patches, the
  same batch size), trainer (stopped by Lightning's ``max_time``) and prediction from the best
  validation checkpoint. CARE does not change the grid, so its input is the bilinear upsampling
  of the LR frame, computed here with :func:`fastscan.baselines.upsample` (order 1): exactly the
  bilinear baseline's interpolant, on the frames the generator sees.
- PSSR2 (``pssr``): its 2x ResUNet trained by ``pssr.train.train_paired`` with the PSSR2 command
  line's recipe; see ``benchmarks/peers_worker.py``.

The peers' dependency pins exclude the project's (careamics 0.3.5 wants ``torch<2.14``, pssr 2.4.0
``numpy<2``), so each gets its own virtual environment under ``--venvs`` (created on first use,
reused after), with the project's torch 2.14.1/torchvision 0.29.1 installed first and held by a
constraints file; careamics is installed ``--no-deps`` on top of its other requirements, its torch
pin being the only one relaxed. The worker (``peers_worker.py``) runs with that python and does not
import fastscan; the data cross as ``.npy`` files under ``--out/export``.

Data:

- default: the simulator, sample "mito" (mitochondria) of ``benchmarks/quality.py``: 4 train FOVs,
  1 validation FOV, 2 test FOVs, fastscan trained with ``quality.TRAIN`` (``--schedule short``:
  half its generator and GAN epochs).
- ``--fovs TABLE``: real data, a TSV of registered FOV stores (``fastscan register`` output, or
  the workflow's ``results/register/{sample}/{session}/{fov}.zarr``) with columns ``path``,
  ``sample``, ``session``, ``fov``, ``split`` (train, val or test). One dataset is built from all
  train/val rows; the tables are per sample of the test rows.

``--ensemble flips`` restores every test frame as the mean of its predictions flipped
left-right, up-down and both, flipped back: fastscan through ``restore.ensemble: flips``, CARE and
PSSR2 through the same averaging in the worker, so no method gets a self-ensemble the others lack.

Every step's output is kept under ``--out`` and reused by a later run with the same ``--out``
(simulated FOVs, dataset, models and their training times, restored stores, exported arrays, each
peer's predictions); delete the folder to start over. Training times are measured on the machine
as it is: on a shared machine they move with its load, which is printed with each peer's result.

Usage::

    .venv/bin/python benchmarks/peers.py --out benchmarks/peers_sim
    .venv/bin/python benchmarks/peers.py --smoke --out benchmarks/peers_smoke
    .venv/bin/python benchmarks/peers.py --fovs registered.tsv --out benchmarks/peers_real
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from quality import SAMPLE_A, TRAIN, Timer, _log, build, prepare_sample, table, train_all  # noqa: E402

PEERS = ("care", "pssr2")
METHOD_ORDER = ["bilinear", "bicubic", "classical", "care", "pssr2", "mse", "gan"]
FASTSCAN_STAGES = ("mse", "critic", "gan")
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]

#: fastscan's training schedules; the peers get the time fastscan's took, whichever it is.
SCHEDULES: dict[str, dict[str, Any]] = {
    "quality": TRAIN,
    "short": {
        **TRAIN,
        "generator": {**TRAIN["generator"], "epochs": [max(1, e // 2) for e in TRAIN["generator"]["epochs"]]},
        "gan": {**TRAIN["gan"], "epochs": max(1, TRAIN["gan"]["epochs"] // 2)},
    },
    # For a CPU: more optimiser steps per second (the lowres U-Net at batch 4), a smooth residual
    # base, flips in place of the paper's augmentations, and three frames of temporal context.
    # Stage-1 study on this benchmark's simulated dataset (180 train tiles), 24 epochs (~360 s on
    # 2 idle cores), test frames scored as in the table (PSNR / SSIM / background noise kept);
    # ``benchmarks/peers_study.py`` reruns any row:
    #   base_sigma 2, paper's augmentations       25.62 / 0.870 / 0.13
    #   base_sigma 2, paper's + flips             25.81 / 0.876 / 0.13
    #   base_sigma 2, no augmentation             24.55 / 0.887 / 0.05  (overfits: train loss 0.0007)
    #   base_sigma 2, flips only                  25.75 / 0.902 / 0.06
    #   base_sigma 6, paper's augmentations       25.55 / 0.891 / 0.05
    #   base_sigma 6, flips only                  25.76 / 0.906 / 0.05
    #   base_sigma 6, flips only, frames 3        27.32 / 0.924 / 0.04
    #     the same, seed 1                        27.32 / 0.927 / 0.03
    #   ... frames 5                              27.38 / 0.924 / 0.05
    #   ... frames 3, base_sigma 10               27.35 / 0.913 / 0.04
    #   CARE, 360 s on the same idle machine      25.93 / 0.927 / 0.02
    # The zoom resamples the noisy LR tile and lighting/contrast move a pixel's noise away from the
    # level its intensity implies; flips keep the noise statistics. A smoother base leaves less
    # noise for the network to cancel. (The first version of this schedule, base_sigma 2 with the
    # paper's augmentations for 6 epochs, scored 25.36 / 0.851.)
    "cpu": {
        **TRAIN,
        "batch_size": 4,
        "augment": {"max_zoom": 1.0, "max_lighting": 0.0, "max_contrast": 0.0, "flips": True},
        "architecture": {"variant": "lowres", "base_sigma": 6.0, "frames": 3},
        "generator": {**TRAIN["generator"], "sizes": [64], "epochs": [24]},
        "gan": {**TRAIN["gan"], "epochs": 1},
    },
}

#: Per peer: packages installed without their dependencies, then the rest (with the torch pins
#: as constraints), then an import that must work. careamics 0.3.5's requirements, less its
#: ``torch<2.14``/``torchvision<=0.26`` pins; pssr 2.4.0 installs with its own requirements.
PEER_ENVS: dict[str, dict[str, Any]] = {
    "care": {
        "no_deps": ["careamics==0.3.5"],
        "deps": [
            "bioimageio-core>=0.9.0,<=0.11.0",
            "lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3",
            "matplotlib<=3.11.2",
            "microssim<=0.0.5",
            "numpy>=1.21,<=2.4.6",
            "pillow<=13.0.0",
            "psutil<=7.2.2",
            "pydantic>=2.11,<=2.14.1",
            "pyyaml!=6.0.0,<=6.0.3",
            "scikit-image<=0.26.0",
            "tifffile<=2026.3.3",
            "torchmetrics>0.7.0,<1.9.0",
            "zarr>=3.0.0,<4.0.0",
        ],
        "check": "import careamics, torch; from careamics.config import create_advanced_care_config; print('careamics', careamics.__version__, 'torch', torch.__version__)",
    },
    "pssr2": {
        "no_deps": [],
        "deps": ["pssr==2.4.0"],
        "check": "import torch, pssr; from pssr.models import ResUNet; from pssr.train import train_paired; print('pssr ok, torch', torch.__version__)",
    },
}


# --------------------------------------------------------------------------------------------
# peer environments


def _env_ok(python: Path, check: str) -> bool:
    if not python.is_file():
        return False
    r = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
    if r.returncode == 0:
        _log(f"  {python}: {r.stdout.strip()}")
    return r.returncode == 0


def ensure_env(root: Path, peer: str) -> Path:
    """The python of ``peer``'s virtual environment under ``root``, created if it does not import."""
    spec = PEER_ENVS[peer]
    venv = root / peer
    python = venv / "bin" / "python"
    if _env_ok(python, spec["check"]):
        return python
    _log(f"creating the {peer} environment in {venv}")
    root.mkdir(parents=True, exist_ok=True)
    constraints = root / "constraints.txt"
    constraints.write_text("\n".join(TORCH_PINS) + "\n")
    subprocess.run([sys.executable if sys.version_info[:2] == (3, 11) else "python3.11", "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + TORCH_PINS, check=True)
    if spec["no_deps"]:
        subprocess.run(pip + ["--no-deps"] + spec["no_deps"], check=True)
    subprocess.run(pip + ["-c", str(constraints)] + spec["deps"], check=True)
    if not _env_ok(python, spec["check"]):
        raise RuntimeError(f"the {peer} environment in {venv} was installed but does not import; see the pip output above")
    return python


# --------------------------------------------------------------------------------------------
# data crossing to the workers


def network_input(registered: str | os.PathLike, model_dir: str | os.PathLike, frames: int) -> np.ndarray:
    """The first ``frames`` LR frames of a registered FOV as the generator in ``model_dir`` sees them.

    As :func:`fastscan.restore.fov.restore_fov`: normalised with the model's LR range, geometry-corrected
    with the FOV's fitted line phase and field fraction when the model was trained on corrected
    frames.
    """
    from fastscan.dataset import normalise
    from fastscan.geometry import correct_frames, model_geometry
    from fastscan.stores import read_registered

    meta = json.loads((Path(model_dir) / "model.json").read_text())
    store = read_registered(registered)
    n = min(int(frames), store.lr.shape[0])
    raw = np.asarray(store.lr[:n], dtype=np.float32)
    if model_geometry(meta) is not None:
        raw = correct_frames(raw, line_phase_px=store.scan.line_phase_px, field_fraction=store.scan.field_fraction)
    return normalise(raw, *meta["normalisation"]["lr"])


def export_training(dataset: str | os.PathLike, out: Path) -> dict[str, Any]:
    """Write the dataset's train/val tiles as ``.npy``: LR, bilinear LR on the HR grid, HR.

    The tiles are normalised exactly as :class:`fastscan.dataset.TileDataset` feeds fastscan.
    """
    from fastscan.baselines import upsample
    from fastscan.dataset import HR_ROW, normalise, read_dataset, read_hr_tiles

    g, tiles, attrs = read_dataset(dataset)
    scale = int(attrs["scale"])
    norm = attrs["normalisation"]
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val"):
        idx = np.flatnonzero(tiles["split"].to_numpy() == split)
        lr = normalise(g["lr"].get_orthogonal_selection((idx, slice(None), slice(None))), *norm["lr"])
        hr = normalise(read_hr_tiles(g, tiles[HR_ROW].to_numpy()[idx]), *norm["hr"])
        np.save(out / f"{split}_lr.npy", lr)
        np.save(out / f"{split}_up.npy", upsample(lr, scale=scale, order=1))
        np.save(out / f"{split}_hr.npy", hr)
        counts[split] = int(len(idx))
    return {"scale": scale, "normalisation": norm, "counts": counts, "tile": int(attrs["tile"])}


def export_test(tests: list[dict], model_dir: str | os.PathLike, out: Path, *, frames: int, scale: int) -> list[dict]:
    """Write each test FOV's network input (``KEY_lr.npy``) and its bilinear upsampling (``KEY_up.npy``)."""
    from fastscan.baselines import upsample

    (out / "test").mkdir(parents=True, exist_ok=True)
    rows = []
    for t in tests:
        x = network_input(t["path"], model_dir, frames)
        np.save(out / "test" / f"{t['key']}_lr.npy", x)
        np.save(out / "test" / f"{t['key']}_up.npy", upsample(x, scale=scale, order=1))
        rows.append({"key": t["key"], "lr": f"test/{t['key']}_lr.npy", "up": f"test/{t['key']}_up.npy", "frames": int(x.shape[0])})
    return rows


def add_methods(restored: str | os.PathLike, out: str | os.PathLike, preds: dict[str, np.ndarray]) -> Path:
    """Copy a restored FOV store to ``out`` and add one ``(N, Y, X)`` array per method in ``preds``.

    The methods are appended to the store's ``fastscan.methods``, so
    :func:`fastscan.metrics.evaluate_restored` scores them with the others. Shapes are checked
    against ``hr`` and the stored frames.
    """
    import zarr

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(restored, out)
    g = zarr.open_group(str(out), mode="r+")
    attrs = dict(g.attrs["fastscan"])
    n, hr_shape = g["lr"].shape[0], tuple(g["hr"].shape)
    for name, arr in preds.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (n, *hr_shape):
            raise ValueError(f"{name}: prediction shape {arr.shape} is not {(n, *hr_shape)} (frames of {restored}, HR grid)")
        if name in g:
            del g[name]
        g.create_array(name, data=arr, chunks=(1,) + hr_shape)
    attrs["methods"] = list(attrs.get("methods", [])) + [m for m in preds if m not in attrs.get("methods", [])]
    g.attrs["fastscan"] = attrs
    return out


# --------------------------------------------------------------------------------------------
# tables


def results_table(metrics: pd.DataFrame, train_s: dict[str, float]) -> pd.DataFrame:
    """Per sample and method: n, PSNR and SSIM mean ± sd, and training seconds."""
    tab = table(metrics, by=["sample", "method"])
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    tab = tab.sort_values(["sample", "method"], key=lambda s: s.map(order) if s.name == "method" else s, kind="stable").reset_index(drop=True)
    tab["train_s"] = tab["method"].map(train_s)
    return tab


def margins(tab: pd.DataFrame, train_s: dict[str, float]) -> pd.DataFrame:
    """Per sample: fastscan (mse, gan) minus CARE, against >= +1 dB PSNR, >= 0 SSIM, <= CARE's time.

    ``train_s`` maps a method to its training seconds: ``mse`` its stage, ``gan`` all three.
    """
    rows = []
    for sample, t in tab.groupby("sample", sort=False):
        by = t.set_index("method")
        if "care" not in by.index:
            continue
        for m in ("mse", "gan"):
            if m not in by.index:
                continue
            d_psnr = by.loc[m, "psnr_mean"] - by.loc["care", "psnr_mean"]
            d_ssim = by.loc[m, "ssim_mean"] - by.loc["care", "ssim_mean"]
            rows.append(
                {
                    "sample": sample,
                    "method": m,
                    "d_psnr": d_psnr,
                    "d_ssim": d_ssim,
                    "fastscan_train_s": train_s.get(m),
                    "care_train_s": train_s.get("care"),
                    "psnr_target_met": bool(d_psnr >= 1.0),
                    "ssim_target_met": bool(d_ssim >= 0.0),
                    "time_target_met": bool(train_s.get(m, np.inf) <= train_s.get("care", 0.0)),
                }
            )
    return pd.DataFrame(rows)


def wins(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per sample and metric: how many test frames each method scores best on."""
    rows = []
    for (sample, _session, _fov), g in metrics.groupby(["sample", "session", "fov"], sort=False):
        for _frame, f in g.groupby("frame"):
            for metric in ("psnr", "ssim"):
                best = f.loc[f[metric].idxmax(), "method"]
                rows.append({"sample": sample, "metric": metric, "method": best})
    df = pd.DataFrame(rows)
    return df.groupby(["sample", "metric", "method"]).size().rename("frames_won").reset_index()


def noise_kept(store: str | os.PathLike, net_input_up: np.ndarray) -> dict[str, float]:
    """Per method: the fraction of the input's noise left in the background of its output.

    Background: HR pixels at or below the HR median. The input's noise there is the bilinear upsampling
    of the frames the networks saw minus HR; the fraction is the least-squares slope of each
    method's error (output minus HR) on it, over all frames: 1 passes the noise through, 0
    removes it. A diagnostic of why SSIM differs, not a metric of the benchmark.
    """
    import zarr

    g = zarr.open_group(str(store), mode="r")
    hr = np.asarray(g["hr"][...], dtype=np.float64)
    bg = hr <= np.median(hr)
    # Centred per frame: an intensity offset between the LR and HR scales is not noise.
    noise = (np.asarray(net_input_up, dtype=np.float64) - hr)[:, bg]
    noise -= noise.mean(axis=1, keepdims=True)
    out = {}
    for m in g.attrs["fastscan"].get("methods", []):
        err = (np.asarray(g[m][...], dtype=np.float64) - hr)[:, bg]
        err -= err.mean(axis=1, keepdims=True)
        out[m] = float((err * noise).sum() / max((noise * noise).sum(), 1e-12))
    return out


def show(tab: pd.DataFrame, title: str) -> None:
    print(f"\n{title}")
    print(f"{'method':>10} |  n | PSNR (dB)      | SSIM          | train (s) | background noise kept")
    for _, r in tab.iterrows():
        ts = "" if pd.isna(r["train_s"]) else f"{r['train_s']:.0f}"
        nk = "" if pd.isna(r.get("noise_kept", np.nan)) else f"{r['noise_kept']:.2f}"
        print(
            f"{r['method']:>10} | {int(r['n']):2d} | {r['psnr_mean']:6.2f} ± {r['psnr_sd']:4.2f} | {r['ssim_mean']:.3f} ± {r['ssim_sd']:.3f} | {ts:>9} | {nk:>5}"
        )


# --------------------------------------------------------------------------------------------
# steps


def read_fov_table(path: str | os.PathLike) -> list[dict]:
    """Registered FOVs from a TSV with columns path, sample, session, fov, split (train/val/test)."""
    df = pd.read_csv(path, sep="\t", dtype=str).fillna("")
    missing = {"path", "sample", "session", "fov", "split"} - set(df.columns)
    if missing:
        raise SystemExit(f"{path}: missing column(s) {sorted(missing)}; need path, sample, session, fov, split")
    bad = sorted(set(df["split"]) - {"train", "val", "test"})
    if bad:
        raise SystemExit(f"{path}: split must be train, val or test, got {bad}")
    for need in ("train", "val", "test"):
        if need not in set(df["split"]):
            raise SystemExit(f"{path}: no {need} FOV; the benchmark needs train, val and test rows")
    base = Path(path).resolve().parent
    rows = []
    for r in df.to_dict("records"):
        p = Path(r["path"])
        r["path"] = str(p if p.is_absolute() else base / p)
        if not Path(r["path"]).is_dir():
            raise SystemExit(f"{path}: registered store {r['path']} not found")
        rows.append(r)
    return rows


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes``: dict values merged one level deep, others replaced."""
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def simulated_fovs(out: Path, *, train_fovs: int, test_fovs: int, frames: int, params: dict | None = None) -> list[dict]:
    cache = out / "fovs.json"
    if cache.is_file():
        fovs = json.loads(cache.read_text())
        made_with = fovs[0].get("params") or {} if fovs else {}
        if made_with != (params or {}):
            raise SystemExit(f"{out}: its FOVs were simulated with parameters {json.dumps(made_with)}, not {json.dumps(params or {})}; use another --out")
        return fovs
    splits = ["train"] * train_fovs + ["val"] + ["test"] * test_fovs
    fovs = prepare_sample(out, *SAMPLE_A, splits, frames=frames, seed=11, params=params)
    for f in fovs:
        q = f["qc"]
        _log(f"  {f['fov']} ({f['split']}): ncc {q['ncc']:.3f}, line phase {q['line_phase_px']:.2f} px, passed {q['passed']}")
    fovs = [{**{k: v for k, v in f.items() if k != "qc"}, **({"params": params} if params else {})} for f in fovs]
    cache.write_text(json.dumps(fovs, indent=1))
    return fovs


def train_fastscan(dataset: Path, out: Path, config: dict, timer: Timer) -> tuple[dict[str, Path], dict[str, float]]:
    """fastscan's three stages, or the models and times of an earlier run in ``out``."""
    times_file = out / "train_times.json"
    dirs = {s: out / s for s in FASTSCAN_STAGES}
    if times_file.is_file() and all((d / "model.json").is_file() for d in dirs.values()):
        times = json.loads(times_file.read_text())
        if times.get("schedule") != config:
            raise SystemExit(f"{out} holds models trained with another schedule ({times.get('schedule')}); use another --out")
        _log(f"fastscan models and training times from an earlier run: {times}")
        return dirs, times
    before = dict(timer.steps)
    load0 = os.getloadavg()[0]
    train_all(dataset, out, config, timer=timer, label="fastscan")
    times = {s: timer.steps[f"fastscan: train_{n}"] - before.get(f"fastscan: train_{n}", 0.0) for s, n in zip(FASTSCAN_STAGES, ("generator", "critic", "gan"))}
    times["total"] = sum(times.values())
    times["loadavg_start"], times["loadavg_end"] = load0, os.getloadavg()[0]
    times["schedule"] = config
    times_file.write_text(json.dumps(times, indent=1))
    return dirs, times


def held_out(fovs: list[dict]) -> list[dict]:
    """The test rows of ``fovs``, each with its ``key`` (the name of its files here)."""
    return [{**f, "key": f"{f['sample']}_{f['session']}_{f['fov']}"} for f in fovs if f["split"] == "test"]


def restore_tests(tests: list[dict], models: dict[str, Path], out: Path, *, frames: int, classical: bool = True, ensemble: str = "none") -> None:
    from fastscan.restore.fov import restore_fov

    for t in tests:
        store = out / f"{t['key']}.zarr"
        if store.is_dir():
            continue
        restore_fov(
            t["path"],
            store,
            models={k: str(v) for k, v in models.items()},
            frames=frames,
            tile=None,
            overlap=None,
            batch_size=None,
            threads=2,
            classical=classical,
            ensemble=ensemble,
        )


def run_peer(peer: str, python: Path, data: Path, out: Path, *, budget: float, batch_size: int, smoke: bool, ensemble: str = "none") -> dict:
    result = out / "result.json"
    if result.is_file():
        res = json.loads(result.read_text())
        if res.get("ensemble", "none") != ensemble:
            raise SystemExit(f"{result}: predicted with ensemble {res.get('ensemble', 'none')!r}, not {ensemble!r}; use another --out")
        _log(f"{peer}: predictions of an earlier run ({res['train_s']:.0f} s of training)")
        return res
    cmd = [
        str(python),
        str(HERE / "peers_worker.py"),
        "--peer",
        peer,
        "--data",
        str(data),
        "--out",
        str(out),
        "--budget",
        f"{budget:.1f}",
        "--batch-size",
        str(batch_size),
        "--threads",
        "2",
        "--ensemble",
        ensemble,
    ]
    if smoke:
        cmd.append("--smoke")
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    _log(f"{peer}: training for {budget:.0f} s with {python}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "worker.log", "w") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        tail = (out / "worker.log").read_text()[-3000:]
        raise RuntimeError(f"{peer} worker failed (exit {r.returncode}); end of {out / 'worker.log'}:\n{tail}")
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/peers_sim", help="work and output folder")
    ap.add_argument("--venvs", default=None, help="where the peers' environments live (default: benchmarks/peers_venvs)")
    ap.add_argument("--fovs", default=None, help="TSV of registered FOV stores: path, sample, session, fov, split (real data)")
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    ap.add_argument("--train-fovs", type=int, default=4, help="simulated training FOVs")
    ap.add_argument("--test-fovs", type=int, default=2, help="simulated test FOVs")
    ap.add_argument("--frames", type=int, default=4, help="video-rate frames simulated per FOV")
    ap.add_argument(
        "--params",
        default="{}",
        help="simulation parameters merged over the simulator's defaults (JSON), e.g. a linear scan with longer dwell: "
        '\'{"lr": {"field_fraction": 0.02, "line_phase_px": 0.0, "dwell_us": 4.0}}\'',
    )
    ap.add_argument("--eval-frames", type=int, default=4, help="frames restored per test FOV")
    ap.add_argument("--budget", type=float, default=None, help="peer training seconds (default: fastscan's measured training time)")
    ap.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default="quality",
        help="fastscan's training schedule: quality.py's TRAIN, 'short' (half its epochs, for a loaded machine), or 'cpu' "
        "(the lowres generator with a smoothed residual base, batch 4: more steps per CPU second)",
    )
    ap.add_argument(
        "--ensemble",
        default="none",
        choices=["none", "flips"],
        help="flips: every method (fastscan's restore.ensemble, CARE and PSSR2 alike) predicts the mean over the four flips",
    )
    ap.add_argument("--set", default="{}", help='JSON object merged into fastscan\'s schedule (one level deep), e.g. \'{"augment": {"motion": 0.5}}\'')
    ap.add_argument("--smoke", action="store_true", help="tiny data, one short epoch per stage: checks every code path, measures nothing")
    args = ap.parse_args(argv)

    config = merged(SCHEDULES[args.schedule], json.loads(args.set))
    if args.smoke:
        config["generator"] = {**config["generator"], "sizes": [32], "epochs": [1]}
        config["gan"] = {**config["gan"], "epochs": 1}
        if args.fovs is None:
            args.train_fovs, args.test_fovs, args.frames, args.eval_frames = 1, 1, 2, 1

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    venvs = Path(args.venvs) if args.venvs else HERE / "peers_venvs"
    timer = Timer()
    print(f"fastscan peers benchmark: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, threads 2")
    print(f"fastscan training schedule: {json.dumps(config)}")

    t = time.perf_counter()
    pythons = {p: ensure_env(venvs, p) for p in args.peers}
    timer.step("peer environments", t)

    t = time.perf_counter()
    if args.fovs:
        fovs = read_fov_table(args.fovs)
        source = f"registered FOVs of {args.fovs}"
    else:
        params = json.loads(args.params)
        fovs = simulated_fovs(out, train_fovs=args.train_fovs, test_fovs=args.test_fovs, frames=args.frames, params=params)
        source = f"simulator, sample {SAMPLE_A[0]} ({SAMPLE_A[1]})" + (f", parameters {json.dumps(params)}" if params else "")
    tests = held_out(fovs)
    timer.step("data", t)

    t = time.perf_counter()
    dataset = out / "dataset.zarr"
    if not dataset.is_dir():
        build(fovs, dataset)
    timer.step("dataset", t)

    models, times = train_fastscan(dataset, out / "models", config, timer)
    budget = float(args.budget) if args.budget is not None else float(times["total"])

    t = time.perf_counter()
    restore_tests(tests, {"mse": models["mse"], "gan": models["gan"]}, out / "restored", frames=args.eval_frames, ensemble=args.ensemble)
    timer.step("fastscan restore (+ classical)", t)

    t = time.perf_counter()
    export = out / "export"
    manifest_file = export / "manifest.json"
    if not manifest_file.is_file():
        info = export_training(dataset, export)
        info["tests"] = export_test(tests, models["gan"], export, frames=args.eval_frames, scale=info["scale"])
        manifest_file.write_text(json.dumps(info, indent=1))
    manifest = json.loads(manifest_file.read_text())
    _log(f"exported {manifest['counts']['train']} train / {manifest['counts']['val']} val tile pairs, {len(manifest['tests'])} test FOVs")
    timer.step("export", t)

    results = {}
    for peer in args.peers:
        t = time.perf_counter()
        results[peer] = run_peer(
            peer, pythons[peer], export, out / "peers" / peer, budget=budget, batch_size=int(config["batch_size"]), smoke=args.smoke, ensemble=args.ensemble
        )
        timer.step(f"{peer}: train + predict", t)
        r = results[peer]
        _log(
            f"  {peer}: {r['package']}, {r['train_s']:.0f} s of training ({r['epochs']} whole epochs), "
            f"load average {r.get('loadavg_start') or float('nan'):.1f} -> {r.get('loadavg_end') or float('nan'):.1f}"
        )

    from fastscan.metrics import evaluate_many

    t = time.perf_counter()
    stores = []
    for test in tests:
        preds = {p: np.load(out / "peers" / p / "pred" / f"{test['key']}.npy") for p in args.peers}
        scored = add_methods(out / "restored" / f"{test['key']}.zarr", out / "scored" / f"{test['key']}.zarr", preds)
        stores.append(
            {
                "restored": str(scored),
                "model": "peers",
                "sample": test["sample"],
                "session": test["session"],
                "fov": test["fov"],
                "pairs": {p: manifest["counts"]["train"] for p in args.peers},
            }
        )
    metrics = evaluate_many(stores)
    metrics.to_csv(out / "metrics.tsv", sep="\t", index=False)
    timer.step("metrics", t)

    train_s = {"mse": times["mse"], "gan": times["total"], **{p: r["train_s"] for p, r in results.items()}}
    tab = results_table(metrics, train_s)
    kept = pd.DataFrame(
        [
            {"sample": t["sample"], "method": m, "noise_kept": v}
            for t in tests
            for m, v in noise_kept(out / "scored" / f"{t['key']}.zarr", np.load(export / "test" / f"{t['key']}_up.npy")).items()
        ]
    )
    tab = tab.merge(kept.groupby(["sample", "method"], as_index=False)["noise_kept"].mean(), on=["sample", "method"], how="left")
    tab.to_csv(out / "table.tsv", sep="\t", index=False)
    print(
        f"\nData: {source}; {manifest['counts']['train']} train / {manifest['counts']['val']} val tile pairs "
        f"({manifest['tile']} px LR tiles, x{manifest['scale']}); same tiles, split, test frames and metric code for every method; "
        f"ensemble {args.ensemble}."
    )
    print(
        f"fastscan training: MSE {times['mse']:.0f} s + critic {times['critic']:.0f} s + GAN {times['gan']:.0f} s = {times['total']:.0f} s "
        f"(load average {times.get('loadavg_start', float('nan')):.1f} -> {times.get('loadavg_end', float('nan')):.1f}); peer budget {budget:.0f} s each."
    )
    print("train (s): mse = stage 1 only; gan = all three stages (the GAN needs them); peers = their own training, data set-up included.")
    print("background noise kept: slope of the output's error on the input's noise where HR is at or below its median (1 = passed through, 0 = removed).")
    for sample, t_ in tab.groupby("sample", sort=False):
        n_fovs = len({x["fov"] for x in tests if x["sample"] == sample})
        show(t_, f"Sample {sample}: {int(t_['n'].iloc[0])} frames of {n_fovs} test FOV(s), PSNR/SSIM on the normalised HR scale (data_range 1)")

    mg = margins(tab, train_s)
    mg.to_csv(out / "margins.tsv", sep="\t", index=False)
    print("\nTarget (reported, not asserted): fastscan >= CARE + 1 dB PSNR and >= CARE's SSIM, at no more training time")
    for _, r in mg.iterrows():
        print(
            f"  {r['sample']}: {r['method']} - care: PSNR {r['d_psnr']:+.2f} dB ({'met' if r['psnr_target_met'] else 'NOT met'}), "
            f"SSIM {r['d_ssim']:+.3f} ({'met' if r['ssim_target_met'] else 'NOT met'}); training {r['fastscan_train_s']:.0f} s vs CARE "
            f"{r['care_train_s']:.0f} s ({'met' if r['time_target_met'] else 'NOT met'})"
        )
    wn = wins(metrics)
    wn.to_csv(out / "wins.tsv", sep="\t", index=False)
    print("\nFrames on which each method scores best:")
    for (sample, metric), w in wn.groupby(["sample", "metric"], sort=False):
        print(f"  {sample} {metric}: " + ", ".join(f"{r['method']} {r['frames_won']}" for _, r in w.sort_values("frames_won", ascending=False).iterrows()))
    (out / "peers.json").write_text(
        json.dumps({"fastscan": times, "budget_s": budget, "peers": results, "source": source, "ensemble": args.ensemble}, indent=1, default=str)
    )
    if args.smoke:
        print("\n(smoke run: tiny schedules, the numbers measure nothing)")
    print("\nstep times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timer.steps.items()))
    print(f"total: {(time.perf_counter() - timer.t0) / 60:.1f} min; tables in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
