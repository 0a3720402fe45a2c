"""Pretraining on a simulator calibrated to the user's microscope (``train.pretrain: simulated``).

The paper needs about 1400 real pairs. Most of what the generator must learn is the physics of
the microscope, not the specimen: the photon and PMT noise of a 0.5 µs dwell, the resonant
stretch and line phase of the scan, the optical resolution. Registration measures all of it on the
user's own series (photon transfer curve, line phase, field fraction) and targets (PSF width), so
the simulator can be set to that microscope (:func:`fastscan.simulate.calibrate_simulator`) and
draw as many pairs as wanted. The generator is pretrained on those, and the real pairs then only
fine-tune it (:func:`fastscan.train.train_generator` with ``init``).

The synthetic pairs go through the same ingestion, registration and tiling as real ones, and are
normalised with the real dataset's ranges, so the pretrained generator sees its inputs on the
scale of the real training.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _set_default(key: str) -> Any:
    """A default of ``train.pretrain_set`` (:data:`fastscan.train.DEFAULTS`, the schema's)."""
    from fastscan.train import DEFAULTS

    return DEFAULTS["pretrain_set"][key]


def pretrain_generator(
    registered: Sequence[str | os.PathLike],
    dataset: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    register: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``train.pretrain: simulated``: the stage-1 generator trained on the calibrated simulator.

    Draws the pretraining set (:func:`simulated_dataset`, ``train.pretrain_set``) into
    ``OUT_DIR/dataset.zarr`` and trains the generator on it with the training's own stage-1
    schedule (:func:`fastscan.train.train_generator`); the real training then starts from it
    (``init``). ``register``: the options the real FOVs were registered with.

    Returns
    -------
    dict
        The pretrained generator's ``model.json`` content, with the calibration as ``pretrain``.
    """
    from fastscan.train import resolve_config, train_generator

    cfg = resolve_config(dict(config or {}))
    out_dir = Path(out_dir)
    sim = cfg["pretrain_set"]
    data = out_dir / "dataset.zarr"
    attrs = simulated_dataset(
        registered, dataset, data, fovs=sim["fovs"], frames=sim["frames"], specimens=sim["specimens"], seed=sim["seed"], register=register
    )
    meta = train_generator(dataset=data, out_dir=out_dir, config=cfg, seed=seed, threads=threads, checkpoint_dir=checkpoint_dir)
    return {**meta, "pretrain": attrs["pretrain"]}


def simulated_dataset(
    registered: Sequence[str | os.PathLike],
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fovs: int | None = None,
    frames: int | None = None,
    specimens: Sequence[str] | None = None,
    seed: int | None = None,
    register: Mapping[str, Any] | None = None,
    work: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Simulate a pretraining dataset on the microscope of the registered FOVs ``registered``.

    Parameters
    ----------
    registered : sequence of path-like
        Registered FOV stores of the real training pairs: the simulator is calibrated on them.
    dataset : path-like
        The real dataset store: its normalisation, tile, stride and geometry flag are reused, so
        the pretrained generator sees inputs on the scale of the real training.
    out : path-like
        The pretraining dataset store to write (atomically, as every dataset). Its attributes'
        ``pretrain`` entry holds the calibration's provenance; ``out`` + ``.calibration.json``
        holds it too, for people.
    fovs, frames : int, optional
        Simulated FOVs (the last one is the validation FOV) and video-rate frames per FOV.
    specimens : sequence of str, optional
        Specimen kinds of :func:`fastscan.simulate.write_fov`, cycled over the FOVs. The user's
        specimen is unknown: by default the set mixes the simulator's kinds, since the
        microscope, not the specimen, is what is calibrated.
    seed : int, optional
        Seed of the first FOV (FOV ``i`` uses ``seed + i``).
    register : mapping, optional
        Options of :func:`fastscan.register.register_fov` (the config's ``register`` section), so
        the simulated FOVs are registered as the real ones were.

    The defaults are ``train.pretrain_set``'s (:data:`fastscan.train.DEFAULTS`).
    work : path-like, optional
        Folder for the simulated files and their stores (default: a temporary folder, removed).

    Returns
    -------
    dict
        The pretraining dataset's attributes (see :func:`fastscan.dataset.build_dataset`).
    """
    from fastscan.dataset import build_dataset, read_dataset
    from fastscan.simulate.calibrated import measure_store, simulator_calibration
    from fastscan.stores import read_registered

    fovs = int(_set_default("fovs") if fovs is None else fovs)
    frames = int(_set_default("frames") if frames is None else frames)
    specimens = list(_set_default("specimens") if specimens is None else specimens)
    seed = int(_set_default("seed") if seed is None else seed)
    if not registered:
        raise ValueError("pretraining on the calibrated simulator needs at least one registered FOV of real pairs")
    if fovs < 2:
        raise ValueError(f"train.pretrain_set.fovs must be at least 2 (training FOVs and one validation FOV), got {fovs}")
    _, _, real = read_dataset(dataset)
    # The microscope is measured once; the photons and the PSF are mapped onto each specimen kind
    # (their signal percentiles and own structure widths differ).
    measurements = [measure_store(read_registered(p)) for p in registered]
    calibrations = {kind: simulator_calibration(measurements, specimen=kind) for kind in dict.fromkeys(specimens)}
    for warning in dict.fromkeys(w for c in calibrations.values() for w in c.provenance.get("warnings", [])):
        log.warning("calibrated simulator: %s", warning)
    tmp = None if work is not None else tempfile.mkdtemp(prefix="fastscan-pretrain-")
    root = Path(work if work is not None else tmp)
    try:
        entries = [
            _simulate_fov(
                root,
                i,
                params=calibrations[specimens[i % len(specimens)]].params,
                frames=frames,
                specimen=specimens[i % len(specimens)],
                seed=seed + i,
                split="val" if i == fovs - 1 else "train",
                register=register or {},
            )
            for i in range(fovs)
        ]
        attrs = build_dataset(
            entries,
            out,
            tile=int(real["tile"]),
            stride=int(real.get("stride", real["tile"])),
            correct_geometry=bool(real.get("geometry", {}).get("correct", True)),
            background=float(real.get("background", 0.05)),
            normalisation=real["normalisation"],
            match_hr_intensity=real.get("hr_intensity", "acquired") == "matched",
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    first = calibrations[specimens[0]]
    record = {
        "calibration": first.provenance,
        "params": first.params,
        "params_by_specimen": {kind: c.params for kind, c in calibrations.items()},
        "fovs": fovs,
        "frames": frames,
        "specimens": list(specimens),
        "seed": seed,
    }
    _record_provenance(out, record)
    log.info("pretraining set %s: %s tile pairs simulated on the calibrated microscope", out, attrs["counts"])
    return {**attrs, "pretrain": record}


def _simulate_fov(root: Path, i: int, *, params: Mapping[str, Any], frames: int, specimen: str, seed: int, split: str, register: Mapping[str, Any]):
    """One FOV simulated, ingested and registered as a real one; its dataset entry."""
    from fastscan.dataset import FovEntry
    from fastscan.io import ingest_fov
    from fastscan.register import register_fov
    from fastscan.simulate import write_fov

    fov = f"sim{i + 1:02d}"
    base = root / "simulated" / fov
    base.parent.mkdir(parents=True, exist_ok=True)
    lr_params = {**params.get("lr", {}), "frames": int(frames)}
    write_fov(
        lr_path=f"{base}_lr.ome.tif",
        hr_path=f"{base}_hr.ome.tif",
        truth_path=f"{base}_truth.json",
        specimen=specimen,
        seed=seed,
        params={**params, "lr": lr_params},
    )
    ingested = root / "ingest" / f"{fov}.zarr"
    ingest_fov(lr=f"{base}_lr.ome.tif", hr=f"{base}_hr.ome.tif", out=ingested, sample="pretrain", session="simulated", fov=fov)
    registered = root / "register" / f"{fov}.zarr"
    register_fov(ingested, registered, **register)
    return FovEntry(str(registered), "pretrain", "simulated", fov, split)


def _record_provenance(out: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """The calibration beside the dataset's own attributes (``pretrain``) and as a JSON file."""
    import zarr

    from fastscan.atomic import write_text

    g = zarr.open_group(str(out), mode="r+")
    g.attrs["fastscan"] = {**dict(g.attrs["fastscan"]), "pretrain": json.loads(json.dumps(record, default=str))}
    write_text(f"{out}.calibration.json", json.dumps(record, indent=1, default=str))
