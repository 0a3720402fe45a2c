"""The pure parts of benchmarks/peers.py: what the peers receive and how their predictions are scored.

The peers themselves (their environments, training) run only in the benchmark.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import ROOT, write_registered

sys.path.insert(0, str(ROOT / "benchmarks"))
import peers  # noqa: E402


def test_export_training_is_what_fastscan_trains_on(tiny_dataset, tmp_path):
    from fastscan.baselines import upsample
    from fastscan.dataset import TileDataset

    info = peers.export_training(tiny_dataset, tmp_path / "export")
    for split in ("train", "val"):
        ds = TileDataset(tiny_dataset, split)
        lr, hr = np.load(tmp_path / "export" / f"{split}_lr.npy"), np.load(tmp_path / "export" / f"{split}_hr.npy")
        up = np.load(tmp_path / "export" / f"{split}_up.npy")
        assert info["counts"][split] == len(ds) == len(lr) == len(hr)
        np.testing.assert_array_equal(lr, ds.lr)
        np.testing.assert_array_equal(hr, ds.hr[ds.hr_index])  # each tile its shared HR tile
        assert up.shape == hr.shape
        np.testing.assert_allclose(up[0], upsample(ds.lr[0], scale=2, order=1), atol=1e-6)
    assert info["scale"] == 2


def test_network_input_matches_restore_fov(tmp_path):
    """The frames exported for the peers are those fastscan's generator is fed."""
    from fastscan.dataset import normalise
    from fastscan.geometry import correct_frames

    reg = write_registered(tmp_path / "reg.zarr", frames=3, size=32)
    g = zarr.open_group(str(reg), mode="r+")
    attrs = dict(g.attrs["fastscan"])
    attrs["registration"] = {**attrs["registration"], "line_phase_px": 0.7, "field_fraction": 0.8}
    g.attrs["fastscan"] = attrs
    model = tmp_path / "model"
    model.mkdir()
    norm = {"lr": [100.0, 3000.0], "hr": [0.0, 4000.0]}
    raw = np.asarray(g["lr"][:2], dtype=np.float32)
    for geometry, want in (
        ({"correct": True, "field_fraction": 0.8}, normalise(correct_frames(raw, line_phase_px=0.7, field_fraction=0.8), 100.0, 3000.0)),
        ({"correct": False}, normalise(raw, 100.0, 3000.0)),
    ):
        (model / "model.json").write_text(json.dumps({"normalisation": norm, "scale": 2, "geometry": geometry}))
        got = peers.network_input(reg, model, frames=2)
        assert got.shape == (2, 32, 32)
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(peers.network_input(reg, model, frames=2), normalise(correct_frames(raw, line_phase_px=0.7, field_fraction=0.8), 100.0, 3000.0))


def _restored(path: Path, n=2, size=16) -> Path:
    rng = np.random.default_rng(3)
    hr = rng.random((2 * size, 2 * size)).astype(np.float32)
    g = zarr.open_group(str(path), mode="w")
    g.create_array("lr", data=rng.random((n, size, size)).astype(np.float32))
    g.create_array("hr", data=hr)
    g.create_array("mse", data=np.clip(hr + rng.normal(0, 0.1, (n, *hr.shape)), 0, 1).astype(np.float32))
    g.attrs["fastscan"] = {"frames": list(range(n)), "methods": ["mse"], "scale": 2}
    return path


def test_added_methods_are_scored_beside_the_others(tmp_path):
    from fastscan.metrics import evaluate_restored

    src = _restored(tmp_path / "r.zarr")
    hr = zarr.open_group(str(src), mode="r")["hr"][...]
    preds = {"care": np.broadcast_to(hr, (2, *hr.shape)).copy(), "pssr2": np.zeros((2, *hr.shape), np.float32)}
    out = peers.add_methods(src, tmp_path / "scored.zarr", preds)
    assert zarr.open_group(str(src), mode="r").attrs["fastscan"]["methods"] == ["mse"]  # the original is untouched
    df = evaluate_restored(out, model="peers", sample="s", session="x", fov="1", pairs={"care": 5, "pssr2": 5})
    assert set(df["method"]) == {"bilinear", "bicubic", "mse", "care", "pssr2"}
    care, pssr2, mse = (df[df["method"] == m] for m in ("care", "pssr2", "mse"))
    assert np.isinf(care["psnr"]).all() and care["ssim"].to_numpy() == pytest.approx(1.0)
    assert (pssr2["psnr"].to_numpy() < mse["psnr"].to_numpy()).all()
    assert list(care["pairs"]) == [5, 5]

    tab = peers.results_table(df, {"mse": 10.0, "care": 12.0})
    assert list(tab["method"]) == ["bilinear", "bicubic", "care", "pssr2", "mse"]
    assert tab.set_index("method").loc["care", "train_s"] == 12.0
    assert pd.isna(tab.set_index("method").loc["bilinear", "train_s"])
    w = peers.wins(df)
    assert set(w["method"]) == {"care"} and w["frames_won"].sum() == 4  # 2 frames x (psnr, ssim)


def test_add_methods_refuses_a_prediction_off_the_hr_grid(tmp_path):
    src = _restored(tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="care: prediction shape"):
        peers.add_methods(src, tmp_path / "scored.zarr", {"care": np.zeros((2, 16, 16), np.float32)})


def test_margins_against_the_target():
    tab = pd.DataFrame(
        {
            "sample": ["a"] * 3,
            "method": ["care", "mse", "gan"],
            "n": [4] * 3,
            "psnr_mean": [30.0, 31.5, 30.5],
            "psnr_sd": [0.1] * 3,
            "ssim_mean": [0.80, 0.81, 0.79],
            "ssim_sd": [0.01] * 3,
        }
    )
    m = peers.margins(tab, {"mse": 40.0, "gan": 100.0, "care": 101.0}).set_index("method")
    assert m.loc["mse", "d_psnr"] == pytest.approx(1.5) and m.loc["mse", "psnr_target_met"] and m.loc["mse", "ssim_target_met"]
    assert not m.loc["gan", "psnr_target_met"] and not m.loc["gan", "ssim_target_met"]
    assert m.loc["gan", "time_target_met"] and m.loc["mse", "fastscan_train_s"] == 40.0
    m = peers.margins(tab, {"mse": 40.0, "gan": 100.0, "care": 90.0}).set_index("method")
    assert m.loc["mse", "time_target_met"] and not m.loc["gan", "time_target_met"]


def test_fov_table_needs_every_split(tmp_path):
    for i in range(3):
        write_registered(tmp_path / f"r{i}.zarr", seed=i)
    rows = [("r0.zarr", "train"), ("r1.zarr", "val"), ("r2.zarr", "test")]
    tsv = tmp_path / "fovs.tsv"
    pd.DataFrame([{"path": p, "sample": "m", "session": "s", "fov": p[:2], "split": s} for p, s in rows]).to_csv(tsv, sep="\t", index=False)
    fovs = peers.read_fov_table(tsv)
    assert [Path(f["path"]).name for f in fovs] == ["r0.zarr", "r1.zarr", "r2.zarr"]
    assert all(Path(f["path"]).is_absolute() for f in fovs)
    pd.DataFrame([{"path": p, "sample": "m", "session": "s", "fov": p[:2], "split": "train"} for p, _ in rows]).to_csv(tsv, sep="\t", index=False)
    with pytest.raises(SystemExit, match="no val FOV"):
        peers.read_fov_table(tsv)


def test_noise_kept_tells_passed_noise_from_removed(tmp_path):
    rng = np.random.default_rng(5)
    hr = np.zeros((32, 32), np.float32)
    hr[8:24, 8:24] = 1.0
    noisy = hr + rng.normal(0, 0.05, (2, 32, 32)).astype(np.float32)
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="w")
    g.create_array("lr", data=np.zeros((2, 16, 16), np.float32))
    g.create_array("hr", data=hr)
    g.create_array("passed", data=hr + 0.5 * (noisy - hr) + 0.1)  # an offset is not noise
    g.create_array("clean", data=np.broadcast_to(hr, (2, 32, 32)).copy())
    g.attrs["fastscan"] = {"methods": ["passed", "clean"], "scale": 2}
    kept = peers.noise_kept(tmp_path / "r.zarr", noisy)
    assert kept["passed"] == pytest.approx(0.5, abs=1e-6)
    assert kept["clean"] == pytest.approx(0.0, abs=1e-9)


def test_every_schedule_is_a_valid_training_config():
    """A schedule with a key fastscan does not know would fail only after the peers' set-up."""
    from fastscan.models import resolve_architecture
    from fastscan.train import DEFAULTS, resolve_config

    for name, schedule in peers.SCHEDULES.items():
        cfg = resolve_config(schedule)
        assert set(cfg["augment"]) == set(DEFAULTS["augment"]), name
        resolve_architecture(cfg["architecture"])


def test_study_merges_changes_one_level_deep():
    import peers_study

    base = peers.SCHEDULES["cpu"]
    out = peers_study.merged(base, {"architecture": {"frames": 1}, "batch_size": 8})
    assert out["architecture"] == {**base["architecture"], "frames": 1}
    assert out["batch_size"] == 8 and out["generator"] == base["generator"]
    assert base["architecture"]["frames"] == 3  # the schedule itself is not changed


def test_study_of_the_gan_stage_needs_the_models_it_starts_from(tmp_path):
    import peers_study

    data = tmp_path / "peers"
    (data / "dataset.zarr").mkdir(parents=True)
    (data / "export" / "test").mkdir(parents=True)
    (data / "fovs.json").write_text("[]")
    with pytest.raises(SystemExit, match="--stage gan needs --from"):
        peers_study.main(["--data", str(data), "--out", str(tmp_path / "out"), "--name", "x", "--stage", "gan"])
    (tmp_path / "models" / "mse").mkdir(parents=True)
    (tmp_path / "models" / "mse" / "model.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"no critic/model\.json"):
        peers_study.main(["--data", str(data), "--out", str(tmp_path / "out"), "--name", "x", "--stage", "gan", "--from", str(tmp_path / "models")])


def test_peers_get_the_same_flip_ensemble_as_fastscan():
    import peers_worker

    x = np.random.default_rng(0).random((2, 6, 8)).astype(np.float32)
    column = np.arange(8, dtype=np.float32)

    def predict(frames):  # flip-equivariant content plus a position-bound error
        return frames + column

    np.testing.assert_allclose(peers_worker._flip_ensemble(predict, x, ensemble="none"), x + column)
    np.testing.assert_allclose(peers_worker._flip_ensemble(predict, x, ensemble="flips"), x + 3.5, rtol=1e-6)
