"""Restoration of registered FOVs for evaluation: the workflow rules ``restore_fov`` and
``restore_models`` (``workflow/scripts/restore_fov.py``, ``restore_models.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from fastscan.atomic import atomic_path
from fastscan.restore.engine import TileEngine, check_ensemble
from fastscan.restore.receptive import model_tiling
from fastscan.restore.temporal import temporal_stack
from fastscan.stores import RegisteredStore, read_registered

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def restore_fov(
    registered: str | os.PathLike,
    out: str | os.PathLike,
    *,
    models: dict[str, str | os.PathLike],
    frames: int = 4,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    classical: bool = True,
    precision: str = "float32",
    ensemble: str = "none",
) -> dict[str, Any]:
    """Restore the first ``frames`` frames of a registered FOV with each model, for evaluation.

    Parameters
    ----------
    registered : path-like
        Registered FOV store.
    out : path-like
        Restored FOV store (written atomically), see docs/architecture.md.
    models : dict
        Method name (``mse``, ``gan``) -> model directory. All must share one normalisation.
    frames : int
        Frames restored (``restore.frames``).
    tile, overlap, batch_size : int or None
        Tiling of :class:`fastscan.restore.engine.TileEngine`; None chooses from each model (its
        training crops or receptive field, :func:`fastscan.restore.receptive.resolve_tiling`) and
        the device.
    device : str
        A torch device, not the config's ``auto`` (see :func:`fastscan.restore.slide.restore_slide`).
    classical : bool
        Also store the classical cascade (:func:`fastscan.classical.restore_classical`) with the
        line phase and field fraction registration fitted for this FOV, as method ``classical``.
    precision : str
        Compute dtype of the generators (:func:`fastscan.restore.prepare.resolve_precision`).
        Evaluations default to float32, so reported metrics do not depend on the machine.
    ensemble : {"none", "flips"}
        ``restore.ensemble``: the flip self-ensemble of :class:`fastscan.restore.engine.TileEngine`
        (generators trained on geometry-corrected frames only, :func:`fastscan.restore.engine.check_ensemble`).
    """
    import torch

    from fastscan.geometry import model_geometry
    from fastscan.models import model_frames

    if threads:
        torch.set_num_threads(int(threads))
    # The scan model is checked here, before any model is loaded: a store without it fails
    # (StoreError) instead of being restored uncorrected.
    store = read_registered(registered)
    n = min(int(frames), store.lr.shape[0])
    loaded, norm, scale, hr_intensity = _load_models(models, device=device)
    ensembles = {name: check_ensemble(ensemble, model_meta, model_dir=models[name]) for name, (_, model_meta) in loaded.items()}
    geometries = {name: model_geometry(meta) is not None for name, (_, meta) in loaded.items()}
    total = store.lr.shape[0]
    # Generators with temporal context also read the frames after the last restored one.
    windows = {name: model_frames(meta) for name, (_, meta) in loaded.items()}
    read = min(total, n + max(windows.values()) // 2)
    lr_all, corrected_all, hr = _read_frames(store, read=read, norm=norm, correct=any(geometries.values()), matched=hr_intensity == "matched")
    lr = lr_all[:n]
    meta = _fov_meta(registered, store.attrs, loaded=loaded, models=models, n=n, classical=classical, scale=scale, norm=norm)
    meta["ensemble"] = ensembles
    meta["hr_intensity"] = hr_intensity
    with atomic_path(out) as tmp:
        og = zarr.open_group(tmp, mode="w")
        og.create_array("lr", data=lr, chunks=(1,) + lr.shape[1:])
        og.create_array("hr", data=hr)
        if classical:
            pred = _restore_classical(lr, store, scale=scale, norm=norm)
            og.create_array("classical", data=pred, chunks=(1,) + pred.shape[1:])
        for name, (model, model_meta) in loaded.items():
            t0 = time.time()
            source = corrected_all if geometries[name] else lr_all
            inputs = temporal_stack(source, range(n), frames=windows[name], total=total)
            pred = _predict_frames(
                model,
                model_meta,
                inputs,
                scale=scale,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                device=device,
                precision=precision,
                ensemble=ensembles[name],
            )
            og.create_array(name, data=pred, chunks=(1,) + pred.shape[1:])
            log.info("restored %d frame(s) of %s with %s in %.1f s", n, registered, name, time.time() - t0)
        og.attrs["fastscan"] = meta
    return meta


def _load_models(models: Mapping[str, str | os.PathLike], *, device: str) -> tuple[dict[str, tuple[torch.nn.Module, dict[str, Any]]], dict[str, Any], int, str]:
    """Each model's generator and ``model.json``, their shared normalisation, their scale and
    their reading of the HR targets (``hr_intensity``)."""
    from fastscan.models import load_generator

    loaded = {name: load_generator(path, device=device) for name, path in models.items()}
    norms = {name: meta["normalisation"] for name, (_, meta) in loaded.items()}
    norm = next(iter(norms.values()))
    if any(v["lr"] != norm["lr"] or v["hr"] != norm["hr"] for v in norms.values()):
        raise ValueError(f"models {list(models)} were trained with different normalisations; compare models of one dataset")
    intensities = {name: meta.get("hr_intensity", "acquired") for name, (_, meta) in loaded.items()}
    if len(set(intensities.values())) > 1:
        raise ValueError(f"models {list(models)} read their HR targets differently ({intensities}); compare models of one dataset")
    scale = int(next(iter(loaded.values()))[1]["scale"])
    return loaded, norm, scale, next(iter(intensities.values()))


def _read_frames(
    store: RegisteredStore, *, read: int, norm: Mapping[str, Any], correct: bool, matched: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The first ``read`` LR frames normalised, the same in the models' geometry (None unless
    ``correct``), and the normalised HR target, ``matched`` to the series as the models' dataset
    matched its targets (:meth:`fastscan.stores.RegisteredStore.hr_target`)."""
    from fastscan.dataset import normalise

    raw_all = np.asarray(store.lr[:read], dtype=np.float32)
    lr_all = normalise(raw_all, *norm["lr"])
    hr = normalise(store.hr_target(matched=matched), *norm["hr"])
    # The networks see the frames in the geometry they were trained on; this FOV's own fitted
    # scan model is used, as for the classical cascade. ``lr`` keeps the scan geometry: it is
    # the input of the interpolation baselines.
    corrected_all = None
    if correct:
        from fastscan.geometry import correct_frames

        corrected_all = normalise(
            correct_frames(raw_all, line_phase_px=store.scan.line_phase_px, field_fraction=store.scan.field_fraction),
            *norm["lr"],
        )
    return lr_all, corrected_all, hr


def _fov_meta(
    registered: str | os.PathLike,
    attrs: Mapping[str, Any],
    *,
    loaded: Mapping[str, tuple[torch.nn.Module, Mapping[str, Any]]],
    models: Mapping[str, str | os.PathLike],
    n: int,
    classical: bool,
    scale: int,
    norm: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``fastscan`` attribute of the restored FOV store."""
    return {
        "kind": "restored_fov",
        "frames": list(range(n)),
        "methods": (["classical"] if classical else []) + list(models),
        "scale": scale,
        "normalisation": norm,
        "geometry": {name: loaded[name][1].get("geometry", {"correct": False}) for name in loaded},
        "models": {k: str(v) for k, v in models.items()},
        "source": str(registered),
        **{k: attrs[k] for k in ("sample", "session", "fov", "lr_pixel_size_um", "hr_pixel_size_um") if k in attrs},
    }


def _restore_classical(lr: np.ndarray, store: RegisteredStore, *, scale: int, norm: Mapping[str, Any]) -> np.ndarray:
    """The classical cascade with the line phase and field fraction fitted for this FOV."""
    from fastscan.classical import restore_classical

    # The series' photon calibration (registration.photons, in ADU) lets the cascade
    # denoise in the variance-stabilised domain; ``lr`` is normalised, hence the range.
    return restore_classical(
        lr,
        line_phase_px=store.scan.line_phase_px,
        field_fraction=store.scan.field_fraction,
        scale=scale,
        calibration=store.photons,
        normalisation=norm["lr"],
    )


def _predict_frames(
    model: torch.nn.Module,
    model_meta: Mapping[str, Any],
    inputs: np.ndarray,
    *,
    scale: int,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    precision: str,
    ensemble: str = "none",
) -> np.ndarray:
    """One generator's restoration of ``inputs`` (frames or temporal windows), frame by frame."""
    # One tiling and one engine for all frames: buffers (and any low-precision weights) once.
    model = model.eval()
    tiling = model_tiling(model, model_meta, scale=scale, tile=tile, overlap=overlap, device=device)
    engine = TileEngine(model, scale=scale, tiling=tiling, batch_size=batch_size, device=device, precision=precision, channels_last=False, ensemble=ensemble)
    return np.stack([engine.predict(f) for f in inputs])
