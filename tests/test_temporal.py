"""Temporal context: a generator that sees k registered neighbouring frames as channels."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from conftest import write_registered

TINY = {
    "pretrained": False,
    "batch_size": 4,
    "generator": {"sizes": [16], "epochs": [1]},
    "critic": {"epochs": 1, "nf": 8},
    "gan": {"epochs": 1},
    "architecture": {"frames": 3},
}


def test_reflect_frame_is_numpy_reflect_padding():
    from fastscan.dataset import reflect_frame

    for n in (1, 2, 5):
        frames = np.arange(n)
        padded = np.pad(frames, 7, mode="reflect") if n > 1 else np.zeros(n + 14, int)
        assert [reflect_frame(t, n) for t in range(-7, n + 7)] == padded.tolist()


def test_temporal_windows_stay_within_one_fov_and_position():
    from fastscan.dataset import temporal_windows

    rows = []
    for fov, n in (("a", 4), ("b", 1)):
        for f in range(n):
            for y, x in ((0, 0), (0, 32)):
                rows.append(("s", "1", fov, f, y, x))
    table = pd.DataFrame(rows, columns=["sample", "session", "fov", "frame", "y", "x"])
    w = temporal_windows(table, 3)
    assert w.shape == (len(table), 3)
    for i, row in table.iterrows():
        got = table.iloc[w[i]]
        # Same FOV and position in every frame of the window; the middle one is the row itself.
        assert (got[["fov", "y", "x"]].to_numpy() == row[["fov", "y", "x"]].to_numpy()).all()
        assert w[i, 1] == i
    # Frame 0 of FOV a: its window is frames 1, 0, 1 (reflected); frame 3: 2, 3, 2.
    first = table.index[(table.fov == "a") & (table.frame == 0) & (table.x == 0)][0]
    last = table.index[(table.fov == "a") & (table.frame == 3) & (table.x == 0)][0]
    assert table.frame[w[first]].tolist() == [1, 0, 1] and table.frame[w[last]].tolist() == [2, 3, 2]
    # A one-frame FOV repeats its frame.
    single = table.index[table.fov == "b"][0]
    assert w[single].tolist() == [single] * 3
    with pytest.raises(ValueError, match="odd"):
        temporal_windows(table, 2)


def test_tile_dataset_feeds_the_window_as_channels(tmp_path):
    from fastscan.dataset import FovEntry, TileDataset, build_dataset, read_dataset

    entries = [FovEntry(str(write_registered(tmp_path / f"r{i}.zarr", seed=i, frames=4)), "m", "s", f"f{i}", s) for i, s in enumerate(["train", "val"])]
    build_dataset(entries, tmp_path / "ds.zarr", tile=32, stride=32, background=0.0)
    g, table, _ = read_dataset(tmp_path / "ds.zarr")
    for max_memory_mb in (2048.0, 0.0):  # in memory, and tile by tile from the store
        ds = TileDataset(tmp_path / "ds.zarr", "train", frames=3, max_memory_mb=max_memory_mb)
        lr, hr = ds[0]
        assert tuple(lr.shape) == (3, 32, 32) and tuple(hr.shape) == (1, 64, 64)
        rows = ds.table
        for c, j in enumerate(ds.window[0]):
            stored = np.asarray(g["lr"][int(ds.index[j])])
            np.testing.assert_allclose(lr[c].numpy(), (stored - ds.norm["lr"][0]) / (ds.norm["lr"][1] - ds.norm["lr"][0]), rtol=1e-5, atol=1e-6)
        assert rows.frame[ds.window[0]].tolist() == [1, 0, 1]


def test_motion_augmentation_moves_the_neighbours_as_a_constant_velocity_and_keeps_the_target(tmp_path):
    """``train.augment.motion``: frame t + d of a window is cut d times a velocity away, in whole
    pixels of its own stored tile (reflected at the tile's edges); the middle frame and the HR
    target are those of the still window."""
    from fastscan.dataset import MOTION_MAX_PX, DatasetError, FovEntry, TileDataset, build_dataset, read_dataset

    entries = [FovEntry(str(write_registered(tmp_path / f"r{i}.zarr", seed=i, frames=4)), "m", "s", f"f{i}", s) for i, s in enumerate(["train", "val"])]
    build_dataset(entries, tmp_path / "ds.zarr", tile=32, stride=32, background=0.0)
    g, _, _ = read_dataset(tmp_path / "ds.zarr")
    for max_memory_mb in (2048.0, 0.0):  # in memory, and tile by tile from the store
        ds = TileDataset(tmp_path / "ds.zarr", "train", size=24, frames=3, motion=1.0, max_memory_mb=max_memory_mb, seed=1)
        still_lr, still_hr = ds._crop(0, 4, 5)
        shifts = np.array([[-3, 2], [0, 0], [3, -2]])
        lr, hr = ds._crop(0, 4, 5, shifts)
        np.testing.assert_array_equal(hr, still_hr)
        np.testing.assert_allclose(lr[1], still_lr[1], rtol=0, atol=1e-7)
        for c, (dy, dx) in zip((0, 2), shifts[[0, 2]]):
            stored = np.asarray(g["lr"][int(ds.index[ds.window[0][c]])], dtype=np.float32)
            want = (stored - ds.norm["lr"][0]) / (ds.norm["lr"][1] - ds.norm["lr"][0])
            np.testing.assert_allclose(lr[c], want[4 + dy : 28 + dy, 5 + dx : 29 + dx], rtol=1e-5, atol=1e-6)
        # Past the tile's edge the neighbour is reflected, never cut short.
        edge, _ = ds._crop(0, 8, 8, np.array([[-MOTION_MAX_PX, 0], [0, 0], [MOTION_MAX_PX, 0]]))
        assert edge.shape == (3, 24, 24)
    # Drawn velocities: opposite and equal for frames t - 1 and t + 1, 1 to MOTION_MAX_PX px.
    draws = [ds._motion() for _ in range(200)]
    assert all(d is not None and (d[1] == 0).all() and (d[0] == -d[2]).all() for d in draws)
    speeds = np.array([np.hypot(*d[2]) for d in draws])
    assert speeds.min() >= 0.5 and speeds.max() <= np.hypot(MOTION_MAX_PX, MOTION_MAX_PX)
    half = TileDataset(tmp_path / "ds.zarr", "train", frames=3, motion=0.5, seed=2)
    moved = sum(half._motion() is not None for _ in range(400))
    assert 150 < moved < 250  # a probability of 0.5 (binomial sd 10)
    assert TileDataset(tmp_path / "ds.zarr", "train", frames=1, motion=1.0)._motion() is None  # no neighbours to move
    assert TileDataset(tmp_path / "ds.zarr", "train", frames=3)._motion() is None
    with pytest.raises(DatasetError, match="train.augment.motion must be a probability"):
        TileDataset(tmp_path / "ds.zarr", "train", frames=3, motion=1.5)


def test_temporal_generator_trains_restores_series_and_slides(tmp_path, tiny_dataset, caplog):
    import torch

    from fastscan.geometry import prepare_frames
    from fastscan.models import load_generator
    from fastscan.register import estimate_drift
    from fastscan.restore.engine import TileEngine
    from fastscan.restore.fov import restore_fov
    from fastscan.restore.series import restore_series
    from fastscan.restore.slide import restore_slide
    from fastscan.restore.temporal import temporal_stack
    from fastscan.train import train_critic, train_gan, train_generator

    mse, critic, gan = tmp_path / "mse", tmp_path / "critic", tmp_path / "gan"
    meta = train_generator(dataset=tiny_dataset, out_dir=mse, config=TINY, seed=1, threads=2)
    assert meta["architecture"]["frames"] == 3 and meta["architecture"]["n_in"] == 3
    train_critic(dataset=tiny_dataset, generator_dir=mse, out_dir=critic, config=TINY, seed=1, threads=2)
    train_gan(dataset=tiny_dataset, generator_dir=mse, critic_dir=critic, out_dir=gan, config=TINY, seed=1, threads=2)
    model, meta = load_generator(gan)
    model.eval()

    # The engine feeds the window as channels: one whole tile equals the model's own forward pass.
    rng = np.random.default_rng(0)
    window = rng.random((3, 48, 40)).astype(np.float32)
    whole = TileEngine(model, scale=2, tile=64, overlap=0, batch_size=2, precision="float32").predict(window)
    with torch.inference_mode():
        direct = model(torch.from_numpy(window)[None])[0, 0].numpy()
    np.testing.assert_allclose(whole, direct, rtol=1e-4, atol=1e-4)  # same weights, same process

    # Tiled equals whole for windows as for single frames: a local network of three input
    # channels (a 5x5 convolution, then a 2x upsampling) restores the same in 40-px tiles with
    # an 8-px overlap as in one tile.
    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 5, padding=2, padding_mode="reflect")

        def forward(self, x):
            return torch.nn.functional.interpolate(self.conv(x), scale_factor=2, mode="bilinear")

    local = Local().eval()
    window = rng.random((3, 100, 90)).astype(np.float32)
    whole = TileEngine(local, scale=2, tile=128, overlap=0, precision="float32").predict(window)
    engine = TileEngine(local, scale=2, tile=40, overlap=8, precision="float32")
    tiled = engine.predict(window)
    assert engine.tiles_run > 4
    # Within 1e-3, the project's tiled-equals-whole tolerance: the blend gives the outermost
    # pixels of each tile, where its convolution pads, a small weight (seen: 6e-4). A misplaced
    # channel or tile differs by the values themselves (order 0.1-1). The outermost HR pixel of
    # the image is left out: there the whole image's bilinear upsampling clamps at its edge,
    # where a tile interpolates towards its reflected halo.
    np.testing.assert_allclose(tiled[2:-2, 2:-2], whole[2:-2, 2:-2], atol=1e-3)

    # A series restored by the workflow's engine equals each frame restored from its reflected window.
    series = (rng.random((5, 32, 32)) * 3000).astype(np.float32)
    tifffile.imwrite(tmp_path / "series.tif", series)
    out = tmp_path / "series.ome.zarr"
    restore_series(tmp_path / "series.tif", out, model_dir=gan, tile=64, overlap=0, frames_per_chunk=2, pyramid_levels=1, precision="float32")
    got = np.asarray(zarr.open_group(str(out), mode="r")["0"][...])
    lo, hi = meta["normalisation"]["lr"]
    norm = (prepare_frames(series, meta) - lo) / (hi - lo)
    engine = TileEngine(model, scale=2, tile=64, overlap=0, batch_size=2, precision="float32")
    drift = estimate_drift(norm, iterations=1)  # the series' windows are aligned like training's
    want = np.stack([engine.predict(w) for w in temporal_stack(norm, range(5), frames=3, drift=drift)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # same engine, same process: float rounding only
    assert zarr.open_group(str(out), mode="r").attrs["fastscan"]["temporal_window"] == 3
    # The first frame's window is frames 1, 0, 1: it differs from restoring frame 0 three times.
    assert not np.allclose(got[0], engine.predict(np.stack([norm[0]] * 3)), atol=1e-4)

    # Evaluation restores the first frames of a registered FOV from their windows too.
    reg = write_registered(tmp_path / "test.zarr", seed=5, frames=4, size=32)
    restore_fov(reg, tmp_path / "restored.zarr", models={"gan": str(gan)}, frames=2, tile=64, overlap=0, batch_size=4, classical=False)
    assert zarr.open_group(str(tmp_path / "restored.zarr"), mode="r")["gan"].shape == (2, 64, 64)

    # A slide is a one-frame series: each region is restored from itself repeated, with a warning.
    tifffile.imwrite(tmp_path / "slide.tif", series[0])
    with caplog.at_level(logging.WARNING, logger="fastscan"):
        restore_slide(tmp_path / "slide.tif", tmp_path / "slide.ome.zarr", model_dir=gan, tile=64, overlap=0, pyramid_levels=1, precision="float32")
    assert "restored from itself repeated 3 times" in caplog.text
    slide = np.asarray(zarr.open_group(str(tmp_path / "slide.ome.zarr"), mode="r")["0"][...])
    plane = (series[0] - lo) / (hi - lo)  # a slide is restored as stored: no scan geometry to undo
    np.testing.assert_allclose(slide, engine.predict(np.stack([plane] * 3)), rtol=1e-4, atol=1e-4)


def test_frames_must_be_odd_and_match_n_in():
    from fastscan.models import ModelError, resolve_architecture

    assert resolve_architecture({"frames": 5})["n_in"] == 5
    with pytest.raises(ModelError, match="odd"):
        resolve_architecture({"frames": 2})
    with pytest.raises(ModelError, match="contradicts"):
        resolve_architecture({"frames": 3, "n_in": 2})


def test_windows_of_a_drifting_series_are_moved_onto_the_restored_frame():
    """A specimen drifting by 1.5 px per frame: with the series' drift, every frame of a window
    shows it where the restored frame does; without, the neighbours are displaced."""
    from scipy import ndimage as ndi

    from fastscan.register import estimate_drift
    from fastscan.restore.temporal import temporal_stack

    rng = np.random.default_rng(1)
    scene = ndi.gaussian_filter(rng.random((96, 96)), 3)
    truth = np.array([[0.0, 1.5 * t] for t in range(5)])  # the specimen moves by +1.5 px in x per frame
    series = np.stack([ndi.shift(scene, d, order=3, mode="reflect") for d in truth]).astype(np.float32)
    drift = estimate_drift(series, iterations=2)
    # apply_shifts(frame t, drift[t]) registers it to the reference: drift differences are minus
    # the motion, to the 0.05-px accuracy of the registration tests.
    np.testing.assert_allclose(np.diff(drift[:, 1]), -1.5, atol=0.05)
    aligned = temporal_stack(series, range(5), frames=3, drift=drift)
    plain = temporal_stack(series, range(5), frames=3)
    inner = (slice(12, -12), slice(12, -12))  # away from the reflected borders of the shifts
    for t in range(5):
        for c in range(3):
            # A 0.05-px residual shift of a smooth scene changes values by well under 1e-2;
            # an uncorrected 1.5-px shift by ten times that.
            assert np.abs(aligned[t, c][inner] - series[t][inner]).max() < 1e-2
        assert np.abs(plain[t, 0][inner] - series[t][inner]).max() > 0.02
