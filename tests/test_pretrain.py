"""Pretraining on the simulator calibrated to the user's microscope (fastscan.pretrain)."""

import json

import numpy as np
import pytest

#: A microscope unlike the simulator's defaults (dimmer, another gain, offset, line phase, field
#: fraction and PSF), imaging tissue; small fields so the test stays quick.
USER = {
    "field_of_view_um": 25.6,
    "psf_fwhm_um": 0.4,
    "hr": {"pixels": 128},
    "lr": {"pixels": 64, "frames": 12, "line_phase_px": 1.3, "field_fraction": 0.7},
    "detector": {"photons_per_us": 12.0, "pmt_gain": 5.0, "offset_du": 60.0, "read_noise_du": 4.0, "dark_counts_per_us": 0.4},
}


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """Registered FOVs of the user's microscope (two train, one val) and their dataset."""
    from fastscan.dataset import FovEntry, build_dataset
    from fastscan.io import ingest_fov
    from fastscan.register import register_fov
    from fastscan.simulate import write_fov

    tmp = tmp_path_factory.mktemp("user")
    entries = []
    for i, split in enumerate(["train", "train", "val"]):
        lr, hr = tmp / f"u{i}_lr.ome.tif", tmp / f"u{i}_hr.ome.tif"
        write_fov(lr_path=lr, hr_path=hr, truth_path=tmp / f"u{i}.json", specimen="tissue", seed=40 + i, params=USER)
        ingest_fov(lr=str(lr), hr=str(hr), out=tmp / f"ingest{i}.zarr", sample="user", session="s1", fov=f"u{i}")
        register_fov(tmp / f"ingest{i}.zarr", tmp / f"u{i}.zarr")
        entries.append(FovEntry(str(tmp / f"u{i}.zarr"), "user", "s1", f"u{i}", split))
    dataset = tmp / "user.zarr"
    build_dataset(entries, dataset, tile=32, stride=32)
    return tmp, [e.path for e in entries if e.split == "train"], dataset


@pytest.fixture(scope="module")
def pretraining_set(user_data):
    from fastscan.pretrain import simulated_dataset

    tmp, train, dataset = user_data
    out = tmp / "pretrain.zarr"
    attrs = simulated_dataset(train, dataset, out, fovs=2, frames=6, specimens=["mitochondria"], seed=3, work=tmp / "sim")
    return out, attrs


def test_pretraining_set_is_drawn_on_the_users_microscope(user_data, pretraining_set):
    from fastscan.dataset import normalise, read_dataset

    _, _, dataset = user_data
    out, attrs = pretraining_set
    g_real, _, real = read_dataset(dataset)
    g_sim, _, sim = read_dataset(out)
    # The real training's scale: the pretrained generator must read its inputs alike.
    assert sim["normalisation"] == real["normalisation"] and sim["tile"] == real["tile"] and sim["scale"] == real["scale"]
    assert sim["counts"]["train"] > 0 and sim["counts"]["val"] > 0
    params = sim["pretrain"]["params"]
    # What registration measured on the user's series (bounds of tests/test_calibrated_simulator.py).
    assert params["lr"]["line_phase_px"] == pytest.approx(USER["lr"]["line_phase_px"], abs=0.2)
    assert params["lr"]["field_fraction"] == pytest.approx(USER["lr"]["field_fraction"], abs=0.05)
    assert params["detector"]["pmt_gain"] == pytest.approx(USER["detector"]["pmt_gain"], rel=0.15)
    assert json.loads(out.with_name(out.name + ".calibration.json").read_text())["params"] == params
    # Background and brightness of the targets on the real normalised scale: the simulated
    # specimen differs (mitochondria for tissue), but the HR background must sit at the real one
    # (an earlier calibration gave it dark counts from tissue's brighter median, which put the
    # simulated HR background at half the real range).
    q_real = np.percentile(normalise(np.asarray(g_real["hr"][...]), *real["normalisation"]["hr"]), [1, 99.5])
    q_sim = np.percentile(normalise(np.asarray(g_sim["hr"][...]), *real["normalisation"]["hr"]), [1, 99.5])
    print(f"normalised HR 1st / 99.5th percentile: real {q_real.round(3).tolist()}, simulated {q_sim.round(3).tolist()}")
    assert abs(q_sim[0] - q_real[0]) < 0.1
    assert 0.5 < q_sim[1] < 2.0


def test_generator_starts_from_the_pretrained_one(user_data, tmp_path):
    import torch

    from fastscan.models import ModelError, load_generator
    from fastscan.pretrain import pretrain_generator
    from fastscan.train import train_generator

    _, train, dataset = user_data
    config = {"batch_size": 4, "generator": {"sizes": [32], "epochs": [1], "lr": 1e-3, "wd": 1e-3}}
    pre = tmp_path / "pre"
    sim = {"fovs": 2, "frames": 4, "specimens": ["mitochondria"], "seed": 5}
    meta = pretrain_generator(train, dataset, pre, config={**config, "pretrain": "simulated", "pretrain_set": sim}, threads=2)
    assert meta["pretrain"]["fovs"] == 2 and (pre / "dataset.zarr" / "tiles.tsv").is_file() and (pre / "generator.pth").is_file()
    zero = {**config, "generator": {**config["generator"], "lr": 0.0}}
    # With a learning rate of 0 the fine-tuned generator is the pretrained one, weight for weight
    # (its buffers move in training mode: batch-norm statistics, spectral norm's power iteration).
    meta = train_generator(dataset=dataset, out_dir=tmp_path / "tuned", config=zero, seed=0, threads=2, init=pre)
    assert meta["init"]["path"] == str(pre) and len(meta["init"]["digest"]) == 64
    a, b = (dict(load_generator(d)[0].named_parameters()) for d in (pre, tmp_path / "tuned"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ModelError, match="architecture"):
        train_generator(dataset=dataset, out_dir=tmp_path / "other", config={**config, "architecture": {"self_attention": False}}, init=pre)


def test_pretraining_refuses_what_it_cannot_calibrate(user_data, tmp_path):
    from fastscan.pretrain import simulated_dataset

    _, train, dataset = user_data
    with pytest.raises(ValueError, match="at least one registered FOV"):
        simulated_dataset([], dataset, tmp_path / "p.zarr")
    with pytest.raises(ValueError, match="at least 2"):
        simulated_dataset(train, dataset, tmp_path / "p.zarr", fovs=1)
    assert not (tmp_path / "p.zarr").exists()
