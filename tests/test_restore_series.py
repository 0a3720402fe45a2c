"""Video-rate series restored frame batch by frame batch into OME-Zarr (t, y, x)."""

import numpy as np
import pytest
import tifffile
import zarr
from test_infer import ConvStack
from test_restore_slide import read_ngff

import fastscan.geometry
from fastscan.restore.engine import predict_image
from fastscan.restore.series import restore_series

#: A model trained on 12-bit frames (normalisation of model.json).
META = {"scale": 2, "normalisation": {"lr": [100.0, 1100.0], "hr": [0.0, 1.0]}}


def write_series(path, frames=5, shape=(40, 52), seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    base = ndi.gaussian_filter(rng.random(shape), 1.5)
    series = np.stack([100 + 1000 * (base + 0.05 * rng.random(shape)) for _ in range(frames)]).astype(np.uint16)
    tifffile.imwrite(path, series, metadata={"axes": "TYX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4}, ome=True)
    return series


def test_series_keeps_the_time_axis_and_each_frame_is_restored(tmp_path):
    lr = tmp_path / "lr.ome.tif"
    series = write_series(lr)
    out = tmp_path / "s.ome.zarr"
    prov = restore_series(lr, out, generator=(ConvStack(), META), tile=32, overlap=8, frames_per_chunk=2, pyramid_levels=2, precision="float32")
    node = read_ngff(out)
    assert [d.shape for d in node.data] == [(5, 80, 104), (5, 40, 52)]
    assert [a["name"] for a in node.metadata["axes"]] == ["t", "y", "x"]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([1.0, 0.2, 0.2])
    assert prov["stats"] == {"units": 3, "computed": 3, "skipped": 0} and prov["frames"] == 5
    assert zarr.open_array(out / "0", mode="r").chunks == (1, 80, 104)  # one frame per chunk
    got = np.asarray(node.data[0])
    for t in (0, 4):
        frame = (series[t].astype(np.float32) - 100) / 1000  # the model's normalisation, as in training
        np.testing.assert_allclose(got[t], predict_image(ConvStack(), frame, scale=2, tile=32, overlap=8, batch_size=4), atol=1e-5)


def test_geometry_is_applied_to_raw_frames_before_normalisation(tmp_path, monkeypatch):
    lr = tmp_path / "lr.ome.tif"
    series = write_series(lr, frames=3)
    seen = {}

    def prepare_frames(frames, meta):
        seen["max"], seen["meta"] = float(np.max(frames)), meta
        return np.asarray(frames, np.float32) + 500.0  # a visible change, in raw units

    monkeypatch.setattr(fastscan.geometry, "prepare_frames", prepare_frames)
    meta = {**META, "geometry": {"correct": True, "field_fraction": 0.8}}
    out = tmp_path / "g.ome.zarr"
    restore_series(lr, out, generator=(ConvStack(), meta), tile=32, overlap=8, pyramid_levels=1, precision="float32")
    assert seen["max"] == series.max() > 100  # raw counts, not normalised values
    assert seen["meta"]["geometry"]["field_fraction"] == 0.8
    frame = (series[1].astype(np.float32) + 500 - 100) / 1000
    np.testing.assert_allclose(zarr.open_array(out / "0", mode="r")[1], predict_image(ConvStack(), frame, scale=2, tile=32, overlap=8, batch_size=4), atol=1e-5)


def test_resonant_geometry_changes_the_input_and_none_leaves_it(tmp_path):
    lr = tmp_path / "lr.ome.tif"
    write_series(lr, frames=3, shape=(48, 64))
    outs = {}
    for name, geometry in (("none", {"correct": False}), ("resonant", {"correct": True, "field_fraction": 0.8})):
        outs[name] = tmp_path / f"{name}.ome.zarr"
        prov = restore_series(
            lr, outs[name], generator=(ConvStack(), {**META, "geometry": geometry}), tile=32, overlap=8, pyramid_levels=1, precision="float32"
        )
        assert (prov["geometry"] is None) == (name == "none")
    plain = tmp_path / "plain.ome.zarr"
    restore_series(lr, plain, generator=(ConvStack(), META), tile=32, overlap=8, pyramid_levels=1, precision="float32")
    none, resonant = (zarr.open_array(outs[k] / "0", mode="r")[:] for k in ("none", "resonant"))
    np.testing.assert_array_equal(none, zarr.open_array(plain / "0", mode="r")[:])
    assert np.abs(resonant - none).max() > 1e-2


def test_series_resumes_from_finished_frame_batches(tmp_path, monkeypatch):
    from fastscan.restore import resumable

    lr = tmp_path / "lr.ome.tif"
    write_series(lr, frames=6)
    out = tmp_path / "s.ome.zarr"
    real, calls = resumable._mark_done, []

    def failing(partial, key):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(key)
        real(partial, key)

    monkeypatch.setattr(resumable, "_mark_done", failing)
    with pytest.raises(KeyboardInterrupt):
        restore_series(lr, out, generator=(ConvStack(), META), tile=32, overlap=8, frames_per_chunk=2, pyramid_levels=1)
    assert not out.exists()
    monkeypatch.setattr(resumable, "_mark_done", real)
    prov = restore_series(lr, out, generator=(ConvStack(), META), tile=32, overlap=8, frames_per_chunk=2, pyramid_levels=1)
    assert prov["stats"] == {"units": 3, "computed": 1, "skipped": 2}
    assert np.isfinite(zarr.open_array(out / "0", mode="r")[:]).all()


def test_flip_ensemble_is_recorded_and_skipped_for_raw_geometry_generators(tmp_path):
    from fastscan.restore.engine import TileEngine

    lr = tmp_path / "lr.ome.tif"
    series = write_series(lr, frames=2)
    raw = restore_series(lr, tmp_path / "raw.ome.zarr", generator=(ConvStack(), META), tile=32, overlap=8, pyramid_levels=1, ensemble="flips")
    assert raw["ensemble"] == "none"  # META has no geometry section: trained on frames as acquired
    meta = {**META, "geometry": {"correct": True, "field_fraction": 0.0}}
    out = tmp_path / "flips.ome.zarr"
    prov = restore_series(lr, out, generator=(ConvStack(), meta), tile=32, overlap=8, pyramid_levels=1, precision="float32", ensemble="flips")
    assert prov["ensemble"] == "flips"
    frame = (series[1].astype(np.float32) - 100) / 1000
    want = TileEngine(ConvStack(), scale=2, tile=32, overlap=8, batch_size=4, precision="float32", ensemble="flips").predict(frame)
    np.testing.assert_allclose(zarr.open_array(out / "0", mode="r")[1], want, atol=1e-5)
