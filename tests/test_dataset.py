import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from conftest import write_registered

from fastscan.dataset import HR_ROW, DatasetError, FovEntry, TileDataset, build_dataset, normalise, read_dataset, read_hr_tiles, tile_origins


def test_tile_origins_cover_the_edge():
    assert tile_origins(64, 32, 32) == [0, 32]
    assert tile_origins(70, 32, 32) == [0, 32, 38]
    with pytest.raises(DatasetError, match="larger than the image"):
        tile_origins(16, 32, 8)


def test_build_dataset_pairs_and_provenance(tmp_path, tiny_dataset):
    g, table, attrs = read_dataset(tiny_dataset)
    assert g["lr"].shape[1:] == (32, 32) and g["hr"].shape[1:] == (64, 64)
    assert g["lr"].chunks == (1, 32, 32)
    assert len(table) == g["lr"].shape[0] == attrs["counts"]["tiles"]
    # LR tile i is the block-average of HR tile i plus noise: they come from the same place.
    src = zarr.open_group(str(tmp_path / "reg0.zarr"), mode="r")
    row = table.iloc[0]
    lr_ref = src["lr"][row["frame"], row["y"] : row["y"] + 32, row["x"] : row["x"] + 32]
    np.testing.assert_array_equal(g["lr"][0], lr_ref)
    np.testing.assert_array_equal(g["hr"][row[HR_ROW]], src["hr"][2 * row["y"] : 2 * row["y"] + 64, 2 * row["x"] : 2 * row["x"] + 64])
    # Split by FOV: no FOV in two splits.
    assert table.groupby("fov")["split"].nunique().max() == 1
    assert set(table["split"]) == {"train", "val"}


def test_frames_share_one_hr_tile_per_position_and_old_stores_still_read(tmp_path, tiny_dataset):
    """Every frame of a FOV has the same target: a position's HR tile is stored once. A store of
    the earlier layout (one HR tile per LR tile, no hr_row column) reads as before."""
    import shutil

    g, table, attrs = read_dataset(tiny_dataset)
    positions = table.groupby(["sample", "session", "fov", "y", "x"]).ngroups
    assert g["hr"].shape[0] == positions == attrs["counts"]["hr_tiles"] < len(table)
    assert (table.groupby(["fov", "y", "x"])[HR_ROW].nunique() == 1).all()
    # The loader gives each tile its own position's target, in memory and read tile by tile.
    for budget in (1024.0, 0.0):
        ds = TileDataset(tiny_dataset, "train", augment=False, max_memory_mb=budget)
        assert ds.in_memory is (budget > 0)
        for i in (0, len(ds) - 1):
            row = ds.table.iloc[i]
            want = normalise(g["hr"][row[HR_ROW]], *attrs["normalisation"]["hr"])
            np.testing.assert_allclose(ds[i][1][0].numpy(), want, rtol=1e-6, atol=1e-6)  # one float32 normalisation
    old = tmp_path / "old.zarr"
    shutil.copytree(tiny_dataset, old)
    full = read_hr_tiles(g, table[HR_ROW].to_numpy())
    z = zarr.open_group(str(old), mode="r+")
    del z["hr"]
    z.create_array("hr", data=full, chunks=(1, *full.shape[1:]))
    table.drop(columns=[HR_ROW]).to_csv(old / "tiles.tsv", sep="\t", index=False)
    g2, t2, _ = read_dataset(old)
    assert (t2[HR_ROW].to_numpy() == np.arange(len(t2))).all()
    ds = TileDataset(old, "train", augment=False)
    np.testing.assert_array_equal(ds[3][1].numpy(), TileDataset(tiny_dataset, "train", augment=False)[3][1].numpy())


def test_a_dataset_larger_than_the_free_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    entries = _three_fovs(tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DatasetError, match=r"ds.zarr: the dataset would hold \d+ LR and \d+ HR tiles.*only 0.0 GB are free.*dataset.max_frames is null"):
        build_dataset(entries, tmp_path / "ds.zarr", tile=16, stride=16)
    assert not (tmp_path / "ds.zarr").exists() and not list(tmp_path.glob("ds.zarr*"))


def test_normalisation_uses_training_split_only(tmp_path):
    entries = [
        FovEntry(str(write_registered(tmp_path / "a.zarr", seed=1)), "m", "s", "a", "train"),
        FovEntry(str(write_registered(tmp_path / "b.zarr", seed=2, offset=1e5)), "m", "s", "b", "val"),
    ]
    attrs = build_dataset(entries, tmp_path / "ds.zarr", tile=32, stride=32)
    assert attrs["normalisation"]["hr"][1] < 1e4  # the bright validation FOV did not leak in


def test_failed_registration_is_excluded_and_logged(tmp_path, caplog):
    entries = [
        FovEntry(str(write_registered(tmp_path / "a.zarr", seed=1)), "m", "s", "a", "train"),
        FovEntry(str(write_registered(tmp_path / "b.zarr", seed=2, passed=False)), "m", "s", "bad", "train"),
    ]
    attrs = build_dataset(entries, tmp_path / "ds.zarr", tile=32, stride=32)
    assert attrs["counts"]["excluded_fovs"] == ["m/s/bad"]
    assert "m/s/bad" in caplog.text and "registration QC failed" in caplog.text


def test_a_training_fov_with_another_hr_brightness_is_named(tmp_path, caplog):
    """The slopes registration measured: 10 % about the median is the scatter of simulated FOVs
    that share one relation, and passes; a target acquired at a third of the others' brightness
    is named with its factor; a validation FOV does not count, nor does a store without one."""
    import logging

    def entries(slopes, val=None):
        out = [FovEntry(str(write_registered(tmp_path / f"{k}.zarr", seed=i, lr_per_hr=v)), "m", "s", k, "train") for i, (k, v) in enumerate(slopes.items())]
        if val is not None:
            out.append(FovEntry(str(write_registered(tmp_path / "v.zarr", seed=9, lr_per_hr=val)), "m", "s", "v", "val"))
        return out

    with caplog.at_level(logging.WARNING, logger="fastscan.dataset"):
        build_dataset(entries({"a": 0.048, "b": 0.053, "c": 0.056, "d": None}, val=0.5), tmp_path / "ok.zarr", tile=32, stride=32)
    assert "slope" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="fastscan.dataset"):
        build_dataset(entries({"a": 0.048, "b": 0.053, "c": 0.0167, "d": 0.050}), tmp_path / "off.zarr", tile=32, stride=32)
    assert "1 of 4 training FOVs" in caplog.text and "m/s/c (x0.34)" in caplog.text and "m/s/a" not in caplog.text


def test_matched_hr_targets_share_their_series_units(tmp_path):
    """Two FOVs of one specimen whose slow scans ran at detector gains 1 and 3: as acquired, the
    same LR tile asks for targets 3x apart; matched through each FOV's line (as registration
    would fit it: LR = HR / gain), the targets agree, and the store says how they were read. A
    store without the line is refused by name."""

    def entries(match_dir, gains, lines=True):
        return [
            FovEntry(
                str(
                    write_registered(
                        tmp_path / match_dir / f"f{i}.zarr", seed=0, hr_gain=g, lr_per_hr=1.0 / g if lines else None, lr_at_zero_hr=0.0 if lines else None
                    )
                ),
                "m",
                "s",
                f"f{i}",
                "train",
            )
            for i, g in enumerate(gains)
        ]

    def hr_tiles(path):
        _, _, attrs = read_dataset(path)
        tiles = zarr.open_group(str(path), mode="r")["hr"][...]
        return attrs, tiles

    build_dataset(entries("a", [1.0, 3.0]), tmp_path / "acquired.zarr", tile=32, stride=32, background=0.0)
    build_dataset(entries("m", [1.0, 3.0]), tmp_path / "matched.zarr", tile=32, stride=32, background=0.0, match_hr_intensity=True)
    attrs, tiles = hr_tiles(tmp_path / "acquired.zarr")
    assert attrs["hr_intensity"] == "acquired" and np.allclose(tiles[4:], 3.0 * tiles[:4], rtol=1e-5)
    attrs, tiles = hr_tiles(tmp_path / "matched.zarr")
    assert attrs["hr_intensity"] == "matched" and np.allclose(tiles[4:], tiles[:4], rtol=1e-5)
    with pytest.raises(DatasetError, match=r"f0.zarr: .*lr_per_hr and lr_at_zero_hr"):
        build_dataset(entries("n", [1.0, 3.0], lines=False), tmp_path / "no.zarr", tile=32, stride=32, match_hr_intensity=True)
    assert not (tmp_path / "no.zarr").exists()


def test_background_tiles_are_dropped(tmp_path):
    p = write_registered(tmp_path / "a.zarr", seed=1)
    g = zarr.open_group(str(p), mode="r+")
    hr = g["hr"][...]
    hr[:64, :] = hr.min()  # top half of the HR target is empty
    g["hr"][...] = hr
    attrs = build_dataset([FovEntry(str(p), "m", "s", "a", "train")], tmp_path / "ds.zarr", tile=32, stride=32, background=0.2)
    assert attrs["counts"]["dropped_background"] == 2 * 3  # two positions x three frames
    assert attrs["counts"]["tiles"] == 2 * 3


def test_test_split_fovs_are_refused(tmp_path):
    p = write_registered(tmp_path / "a.zarr")
    with pytest.raises(DatasetError, match="only train/val"):
        build_dataset([FovEntry(str(p), "m", "s", "a", "test")], tmp_path / "ds.zarr", tile=32, stride=32)


def test_no_partial_store_on_failure(tmp_path):
    p = write_registered(tmp_path / "a.zarr")
    with pytest.raises(DatasetError):
        build_dataset([FovEntry(str(p), "m", "s", "a", "train")], tmp_path / "ds.zarr", tile=128, stride=32)
    assert not list(tmp_path.glob("ds.zarr*"))


def test_tile_dataset_crops_and_augments(tiny_dataset):
    train = TileDataset(tiny_dataset, "train", size=16, augment=True, seed=1)
    lr, hr = train[0]
    assert lr.shape == (1, 16, 16) and hr.shape == (1, 32, 32)
    valid = TileDataset(tiny_dataset, "val", size=16)
    a, b = valid[0], valid[0]
    assert (a[0] == b[0]).all()  # validation is deterministic (centre crop, no augmentation)
    # Without augmentation the crop keeps LR and HR aligned: HR block-mean ~ LR up to noise.
    full = TileDataset(tiny_dataset, "val")
    lr, hr = full[0]
    down = hr[0].reshape(32, 2, 32, 2).mean(dim=(1, 3))
    assert np.corrcoef(down.numpy().ravel(), lr[0].numpy().ravel())[0, 1] > 0.9


def test_lazy_reading_matches_in_memory(tiny_dataset):
    eager = TileDataset(tiny_dataset, "train", size=24)
    lazy = TileDataset(tiny_dataset, "train", size=24, max_memory_mb=0)
    assert eager.in_memory and not lazy.in_memory
    for i in (0, len(eager) - 1):
        for a, b in zip(eager[i], lazy[i]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_augmentation_keeps_pairs_consistent(tiny_dataset):
    """Zoom, lighting and contrast only: an augmented HR tile still block-averages to its LR tile
    (no flip, shift or warp applied to one side only), and intensities change the same way."""
    ds = TileDataset(tiny_dataset, "train", augment=True, max_zoom=1.3, max_lighting=0.3, max_contrast=0.3, seed=5)
    plain = TileDataset(tiny_dataset, "train")
    for i in range(6):
        lr, hr = ds[i]
        down = hr[0].reshape(32, 2, 32, 2).mean(dim=(1, 3)).numpy().ravel()
        assert np.corrcoef(down, lr[0].numpy().ravel())[0, 1] > 0.85
        # The affine intensity change is shared: LR and HR means move together.
        p_lr, p_hr = plain[i]
        assert abs((lr.mean() - p_lr.mean()) - (hr.mean() - p_hr.mean())) < 0.1
    # A flipped pair would decorrelate: the check above can fail.
    lr, hr = plain[0]
    flipped = hr[0].flip(-1).reshape(32, 2, 32, 2).mean(dim=(1, 3)).numpy().ravel()
    assert np.corrcoef(flipped, lr[0].numpy().ravel())[0, 1] < 0.5


def test_flips_move_lr_and_hr_together(tiny_dataset):
    """Flipped pairs still block-average HR onto LR (both sides flipped alike), every one of the
    four flips occurs, and flips=False leaves the augmentation stream as it was."""
    ds = TileDataset(tiny_dataset, "train", augment=True, max_zoom=1.0, max_lighting=0.0, max_contrast=0.0, flips=True, seed=3)
    plain = TileDataset(tiny_dataset, "train")
    p_lr, _ = plain[0]
    seen = set()
    for _ in range(40):
        lr, hr = ds[0]
        down = hr[0].reshape(32, 2, 32, 2).mean(dim=(1, 3)).numpy().ravel()
        assert np.corrcoef(down, lr[0].numpy().ravel())[0, 1] > 0.85
        for dims in ([], [-1], [-2], [-2, -1]):
            # (x - 0.5) * 1 + 0.5 + 0 rounds in float32: equal to about 1e-7, not bit for bit.
            if torch.allclose(lr, p_lr.flip(dims) if dims else p_lr, atol=1e-6):
                seen.add(tuple(dims))
    assert len(seen) == 4, seen
    a = TileDataset(tiny_dataset, "train", augment=True, seed=4)
    b = TileDataset(tiny_dataset, "train", augment=True, flips=False, seed=4)
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])


def test_flips_refused_on_raw_scan_geometry(tiny_dataset):
    g = zarr.open_group(str(tiny_dataset), mode="r+")
    attrs = dict(g.attrs["fastscan"])
    attrs["geometry"] = {**attrs.get("geometry", {}), "correct": False}
    g.attrs["fastscan"] = attrs
    with pytest.raises(DatasetError, match="geometry-corrected"):
        TileDataset(tiny_dataset, "train", augment=True, flips=True)
    TileDataset(tiny_dataset, "train", augment=True)  # the paper's augmentations stay allowed


def _three_fovs(tmp_path, **reg):
    from conftest import write_registered

    entries = []
    for i, split in enumerate(["train", "train", "val"]):
        p = write_registered(tmp_path / f"r{i}.zarr", seed=i)
        g = zarr.open_group(str(p), mode="r+")
        attrs = dict(g.attrs["fastscan"])
        attrs["registration"] = {**attrs["registration"], **reg}
        g.attrs["fastscan"] = attrs
        entries.append(FovEntry(str(p), "mito", "s1", f"f{i}", split))
    return entries


def test_max_tiles_draws_a_fixed_subset_of_training_pairs(tmp_path):
    entries = _three_fovs(tmp_path)
    full = build_dataset(entries, tmp_path / "full.zarr", tile=16, stride=16)
    a = build_dataset(entries, tmp_path / "a.zarr", tile=16, stride=16, max_tiles=10, seed=4)
    build_dataset(entries, tmp_path / "b.zarr", tile=16, stride=16, max_tiles=10, seed=4)
    assert full["counts"]["train"] > 10 and a["counts"]["train"] == 10
    assert a["counts"]["val"] == full["counts"]["val"]  # validation is never subsampled
    ga, ta, _ = read_dataset(tmp_path / "a.zarr")
    gb, tb, _ = read_dataset(tmp_path / "b.zarr")
    pd.testing.assert_frame_equal(ta, tb)
    np.testing.assert_array_equal(ga["lr"][...], gb["lr"][...])
    # Every kept tile is the same pixels as in the full dataset.
    gf, tf, _ = read_dataset(tmp_path / "full.zarr")
    key = ["fov", "frame", "y", "x"]
    index = {tuple(r): i for i, r in enumerate(tf[key].itertuples(index=False))}
    for i, r in enumerate(ta[key].itertuples(index=False)):
        j = index[tuple(r)]
        np.testing.assert_array_equal(ga["hr"][ta[HR_ROW][i]], gf["hr"][tf[HR_ROW][j]])
        np.testing.assert_array_equal(ga["lr"][i], gf["lr"][j])
    # Only the positions some kept tile uses have an HR tile.
    assert ga["hr"].shape[0] == ta[HR_ROW].nunique() == a["counts"]["hr_tiles"] < gf["hr"].shape[0]


def test_normalisation_override_and_geometry(tmp_path):
    entries = _three_fovs(tmp_path, line_phase_px=0.8, field_fraction=0.7)
    norm = {"lr": [10.0, 2000.0], "hr": [5.0, 3000.0]}
    attrs = build_dataset(entries, tmp_path / "c.zarr", tile=16, stride=16, normalisation=norm)
    assert attrs["normalisation"]["lr"] == norm["lr"] and attrs["normalisation"]["hr"] == norm["hr"]
    assert attrs["geometry"] == {"correct": True, "field_fraction": 0.7}
    raw = build_dataset(entries, tmp_path / "raw.zarr", tile=16, stride=16, correct_geometry=False)
    assert raw["geometry"]["correct"] is False
    gc, _, _ = read_dataset(tmp_path / "c.zarr")
    gr, _, _ = read_dataset(tmp_path / "raw.zarr")
    # Same tiles, but the corrected LR has been resampled; the HR target is untouched.
    np.testing.assert_array_equal(gc["hr"][...], gr["hr"][...])
    assert not np.allclose(gc["lr"][...], gr["lr"][...])


def test_a_dataset_is_rebuilt_in_place_but_never_over_foreign_files(tmp_path, tiny_dataset):
    """Its tiles.tsv is fastscan's own: a rebuild replaces the store; a user's file in it stops it."""
    from fastscan.atomic import OutputError

    entries = [FovEntry(str(tmp_path / f"reg{i}.zarr"), "mito", "s1", f"f{i}", s) for i, s in enumerate(["train", "train", "val"])]
    before = read_dataset(tiny_dataset)[1]
    build_dataset(entries, tiny_dataset, tile=32, stride=32)
    assert read_dataset(tiny_dataset)[1].equals(before)
    (tiny_dataset / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"a fastscan store that also holds other files \(notes.txt\)"):
        build_dataset(entries, tiny_dataset, tile=32, stride=32)
    assert (tiny_dataset / "notes.txt").read_text() == "mine"
