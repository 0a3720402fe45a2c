"""One LR frame per HR target: ingestion, registration, dataset, training, restoration, metrics.

Many paired datasets, and labs that save one fast frame per field of view, have a single LR frame
for each HR target. Such a FOV is a valid pair: registration has no drift to estimate (drift
[0, 0], residual 0) and takes the line phase, the resonant scan model and the HR alignment from
that one frame. The line-phase accuracy on simulated single frames is checked with the
multi-frame cases in tests/test_register_accuracy.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from conftest import DATA, write_registered
from scipy import ndimage

from fastscan.dataset import FovEntry, build_dataset, read_dataset
from fastscan.io import ingest_fov, read_fov, read_series
from fastscan.metrics import evaluate_restored
from fastscan.register import QC_COLUMNS, read_qc, register_fov
from fastscan.restore.fov import restore_fov
from fastscan.simulate import write_fov

OIB = DATA / "mitoegfp_fv1000.oib"

#: A 51.2 µm field: 128 x 128 LR px at 0.4 µm, 256 x 256 HR px at 0.2 µm, one video-rate frame.
PARAMS = {
    "field_of_view_um": 51.2,
    "hr": {"pixels": 256},
    "lr": {"pixels": 128, "frames": 1, "line_phase_px": 0.7, "offset_um": [0.3, -0.6]},
}


def _registration(store: Path) -> dict:
    return zarr.open_group(str(store), mode="r").attrs["fastscan"]["registration"]


#: The registration's QC columns, each measured (or, for the drift, known) for one frame too. The
#: table's other columns (the photon calibration) are NaN where their own module cannot measure.
REGISTRATION_QC = (
    "sample",
    "session",
    "fov",
    "frames",
    "ncc",
    "line_phase_px",
    "field_fraction",
    "hr_shift_dy",
    "hr_shift_dx",
    "drift_rms_px",
    "residual_drift_px",
    "passed",
    "lr_per_hr",
)


def _assert_complete_qc(row: dict) -> None:
    """Every QC column is there and the registration's hold values: a one-frame FOV leaves no gap."""
    assert set(QC_COLUMNS) <= set(row), sorted(set(QC_COLUMNS) - set(row))
    assert not any(row[c] is None or (isinstance(row[c], float) and np.isnan(row[c])) for c in REGISTRATION_QC), row


def test_one_frame_tiff_ome_tiff_and_glob_ingest_and_register(tmp_path: Path) -> None:
    """The same simulated frame as the simulator's OME-TIFF (T = 1), a plain 2-D TIFF and a glob
    matching one file: each is one frame, registers without drift, and all three agree."""
    from test_register_accuracy import expected_hr_shift_lr_px

    raw = tmp_path / "raw"
    truth = write_fov(
        lr_path=raw / "lr.ome.tif",
        hr_path=raw / "hr.ome.tif",
        truth_path=raw / "truth.json",
        specimen="mitochondria",
        seed=11,
        params=PARAMS,
    )
    frame = tifffile.imread(raw / "lr.ome.tif")
    assert frame.shape in ((1, 128, 128), (128, 128))
    frame = frame.reshape(128, 128)
    tifffile.imwrite(raw / "lr_plain.tif", frame)  # no pixel size: the sheet's column gives it
    (raw / "frames").mkdir()
    tifffile.imwrite(raw / "frames" / "f001.tif", frame)
    sources = {
        "ome": (raw / "lr.ome.tif", None),
        "plain": (raw / "lr_plain.tif", 0.4),
        "glob": (raw / "frames" / "f*.tif", 0.4),
    }

    rows = {}
    for name, (lr, lr_px) in sources.items():
        ingested = tmp_path / "ingest" / f"{name}.zarr"
        ingest_fov(lr=lr, hr=raw / "hr.ome.tif", out=ingested, sample="cells", session="s1", fov=name, lr_pixel_size_um=lr_px)
        lr_data, _, attrs = read_fov(ingested)
        assert lr_data.shape == (1, 128, 128) and attrs["lr_pixel_size_um"] == pytest.approx([0.4, 0.4])
        np.testing.assert_array_equal(lr_data[0], frame)

        registered = tmp_path / "register" / f"{name}.zarr"
        row = register_fov(ingested, registered, qc=tmp_path / "register" / f"{name}.qc.tsv")
        _assert_complete_qc(row)
        reg = _registration(registered)
        assert row["frames"] == 1 and reg["drift_px"] == [[0.0, 0.0]]
        assert row["drift_rms_px"] == 0.0 and row["residual_drift_px"] == 0.0 and row["passed"]
        # Nothing to align the frame to: the registered frame is the ingested one.
        np.testing.assert_array_equal(zarr.open_group(str(registered), mode="r")["lr"][...], lr_data.astype(np.float32))
        # Line phase, scan model and HR alignment come from the one frame, to the tolerances of
        # the multi-frame accuracy tests (tests/test_register_accuracy.py).
        assert abs(row["line_phase_px"] - truth["line_phase_px"]) < 0.2, row
        assert abs(row["field_fraction"] - truth["field_fraction"]) < 0.05, row
        result = {"lr": lr_data, "truth": truth, "registration": reg}
        hr_error = np.array([row["hr_shift_dy"], row["hr_shift_dx"]]) / 2 - expected_hr_shift_lr_px(result)
        assert np.abs(hr_error).max() < 0.25, hr_error
        assert np.abs(truth["hr_to_lr_shift_px"]).max() > 0.5  # a planted offset, not a null shift
        rows[name] = row
        # The QC file written beside the store is the same complete row.
        table = read_qc(tmp_path / "register" / f"{name}.qc.tsv")
        assert len(table) == 1 and set(QC_COLUMNS) <= set(table.columns)
        assert table[list(REGISTRATION_QC)].notna().all(axis=None)

    numbers = [{k: r[k] for k in REGISTRATION_QC if k != "fov"} for r in rows.values()]
    assert numbers[0] == numbers[1] == numbers[2]


def test_one_frame_oib_ingests_and_registers(tmp_path: Path) -> None:
    """The real FV1000 OIB (3 channels, one 256 x 256 scan at 0.177 µm/px), copied, as a one-frame
    LR series against an HR target made from it: twice the sampling and moved by a planted shift."""
    oib = Path(shutil.copy(OIB, tmp_path / OIB.name))
    digest = hashlib.sha256(oib.read_bytes()).hexdigest()
    frames, meta = read_series(oib, channel=0)
    px = meta["pixel_size_um"]
    upsampled = ndimage.zoom(frames[0].astype(np.float64), 2, order=3, mode="reflect", grid_mode=True)
    planted = (1.5, -2.5)  # HR px
    hr = np.clip(ndimage.shift(upsampled, planted, order=3, mode="reflect"), 0, None).astype(np.float32)
    hr_path = tmp_path / "hr.ome.tif"
    tifffile.imwrite(
        hr_path,
        hr,
        ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": px[1] / 2, "PhysicalSizeY": px[0] / 2, "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"},
    )

    ingested = tmp_path / "oib.zarr"
    # 3 LR channels against a grayscale target: the sheet names the channel.
    attrs = ingest_fov(lr=oib, hr=hr_path, out=ingested, sample="mito", session="fv1000", fov="oib", channel=0)
    assert attrs["source"]["lr"]["format"] == "oib" and attrs["source"]["lr"]["shape"] == [1, 256, 256]
    assert attrs["lr_pixel_size_um"] == pytest.approx(px)

    registered = tmp_path / "oib_registered.zarr"
    row = register_fov(ingested, registered)
    _assert_complete_qc(row)
    assert row["frames"] == 1 and _registration(registered)["drift_px"] == [[0.0, 0.0]]
    assert row["passed"] and row["ncc"] > 0.9
    # The HR is moved back by the planted shift (a galvo scan: no line phase, no resonant warp).
    np.testing.assert_allclose([row["hr_shift_dy"], row["hr_shift_dx"]], [-planted[0], -planted[1]], atol=0.25)
    assert hashlib.sha256(oib.read_bytes()).hexdigest() == digest  # the raw file is only read


def test_store_without_frames_is_refused_by_registration(tmp_path: Path) -> None:
    """One frame registers; a store whose series has none is refused, naming the store."""
    store = tmp_path / "empty.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_array("lr", shape=(0, 32, 32), chunks=(1, 32, 32), dtype="uint16")
    group.create_array("hr", data=np.ones((64, 64), np.float32))
    group.attrs["fastscan"] = {"kind": "fov", "sample": "cells", "session": "s1", "fov": "empty", "scale": 2}
    with pytest.raises(ValueError, match="lr holds no frame") as err:
        register_fov(store, tmp_path / "out.zarr")
    assert str(store) in str(err.value) and not (tmp_path / "out.zarr").exists()


def test_one_frame_fovs_build_train_restore_and_score(tmp_path: Path) -> None:
    """A dataset of one-frame FOVs (and one of three frames beside them) is tiled by FOV and
    frame; a generator trains on it; a held-out one-frame FOV is restored and scored."""
    from fastscan.train import train_generator

    entries = [
        FovEntry(str(write_registered(tmp_path / "a.zarr", seed=1, frames=1)), "cells", "s1", "a", "train"),
        FovEntry(str(write_registered(tmp_path / "b.zarr", seed=2, frames=3)), "cells", "s1", "b", "train"),
        FovEntry(str(write_registered(tmp_path / "c.zarr", seed=3, frames=1)), "cells", "s1", "c", "val"),
    ]
    attrs = build_dataset(entries, tmp_path / "ds.zarr", tile=32, stride=32, background=-1.0)
    _, tiles, _ = read_dataset(tmp_path / "ds.zarr")
    # Four 32-px tile positions per 64-px FOV, one set per frame.
    assert tiles.groupby("fov").size().to_dict() == {"a": 4, "b": 12, "c": 4}
    assert set(tiles.loc[tiles["fov"] != "b", "frame"]) == {0}
    assert attrs["counts"]["train"] == 16 and attrs["counts"]["val"] == 4

    mse = tmp_path / "mse"
    config = {"batch_size": 4, "device": "cpu", "generator": {"sizes": [32], "epochs": [1]}}
    train_generator(dataset=tmp_path / "ds.zarr", out_dir=mse, config=config, seed=1, threads=2)

    held_out = write_registered(tmp_path / "test.zarr", seed=4, frames=1)
    meta = restore_fov(held_out, tmp_path / "restored.zarr", models={"mse": mse}, frames=4, tile=32, overlap=8, batch_size=4)
    assert meta["frames"] == [0]  # four asked for, the one there is restored
    restored = zarr.open_group(str(tmp_path / "restored.zarr"), mode="r")
    assert restored["mse"].shape == restored["classical"].shape == (1, 128, 128)

    scores = evaluate_restored(tmp_path / "restored.zarr", model="m", sample="cells", session="s1", fov="test")
    assert set(scores["method"]) == {"bilinear", "bicubic", "classical", "mse"}
    assert (scores["frame"] == 0).all() and len(scores) == 4
    assert scores["psnr"].map(np.isfinite).all() and scores["ssim"].map(np.isfinite).all()


def test_one_frame_series_through_the_workflow(root, bin_dir, tmp_path: Path) -> None:
    """Simulated one-frame FOVs through simulate, ingest, register, the QC table and the dataset
    (no training): every stage takes them and the QC table is complete."""
    from test_workflow import TINY_CONFIG, make_workdir, snakemake

    params = TINY_CONFIG["simulate"]["params"]
    config = {
        **TINY_CONFIG,
        "simulate": {**TINY_CONFIG["simulate"], "params": {**params, "lr": {**params["lr"], "frames": 1}}},
        "dataset": {"tile": 32, "stride": 32, "background": -1.0},
    }
    work = make_workdir(root, tmp_path, config=config, rows=[("fov01", "train"), ("fov02", "val")])
    snakemake(bin_dir, work, "--configfile", "config/tiny/config.yaml", "--", "results/qc/registration.tsv", "results/dataset/mito.zarr")

    qc = pd.read_csv(work / "results/qc/registration.tsv", sep="\t")
    assert list(qc["fov"].astype(str)) == ["fov01", "fov02"] and (qc["frames"] == 1).all()
    assert (qc["drift_rms_px"] == 0).all() and (qc["residual_drift_px"] == 0).all()
    assert set(QC_COLUMNS) <= set(qc.columns) and qc[list(REGISTRATION_QC)].notna().all(axis=None)
    assert qc["passed"].all()
    truth = json.loads((work / "results/simulated/mito/tiny/fov01_truth.json").read_text())
    assert abs(qc.loc[0, "line_phase_px"] - truth["line_phase_px"]) < 0.5  # 64-px frames: a coarse check
    _, tiles, _ = read_dataset(work / "results/dataset/mito.zarr")
    assert set(tiles["frame"]) == {0} and set(tiles["split"]) == {"train", "val"}
