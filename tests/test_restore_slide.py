"""Whole-slide restoration into OME-Zarr: real SVS input, channels, provenance, scatter/gather."""

import json
import logging

import numpy as np
import pytest
import tifffile
import zarr
from conftest import DATA
from test_infer import ConvStack

from fastscan.restore import RestoreError
from fastscan.restore.engine import predict_image
from fastscan.restore.slide import finalize_slide, parse_channels, prepare_slide, restore_slide

SVS = DATA / "cmu1_small_region_he.svs"
#: model.json content of the stand-in generator: 8-bit brightfield mapped to [0, 1].
META = {"scale": 2, "normalisation": {"lr": [0.0, 255.0], "hr": [0.0, 1.0]}}


def standin(**kwargs):
    return ConvStack(**kwargs), dict(META)


def svs_crop(path, *, rows=200, cols=168, rgb=False, tile=64):
    """A tiled TIFF cut from the real SVS (green channel, or RGB), with its pixel size."""
    data = tifffile.imread(SVS)[:rows, :cols]
    data = data if rgb else data[..., 1]
    tifffile.imwrite(path, np.ascontiguousarray(data), tile=(tile, tile), resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return data


def read_ngff(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return next(iter(Reader(parse_url(str(path)))()))


def test_parse_channels():
    assert parse_channels("") == 0 and parse_channels(2) == 2 and parse_channels("2") == 2
    assert parse_channels("all") == "all" and parse_channels("ALL") == "all"
    assert parse_channels("0,2") == [0, 2] and parse_channels([1, 2]) == [1, 2]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_channels("red")


def test_real_svs_restores_into_ome_zarr(tmp_path):
    """The whole SVS of tests/data, read lazily, restored into a pyramid the ome-zarr reader reads."""
    out = tmp_path / "svs.ome.zarr"
    # A light stand-in: the slide has 26 million output pixels.
    prov = restore_slide(SVS, out, generator=standin(depth=2, width=4), channel=1, tile=128, overlap=16, region=256, pyramid_levels=3, precision="float32")
    node = read_ngff(out)
    assert [d.shape for d in node.data] == [(5934, 4440), (2967, 2220), (1483, 1110)]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales[0] == pytest.approx([0.2495, 0.2495])  # 0.499 µm/px halved
    assert scales[2] == pytest.approx([0.998, 0.998])
    assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
    attrs = dict(zarr.open_group(out, mode="r").attrs)["fastscan"]
    assert attrs["kind"] == "restored_slide" and attrs["input"].endswith("cmu1_small_region_he.svs")
    assert attrs["channel"] is None and attrs["overlap"] == 16 and attrs["region"] == 256 and attrs["model_digest"]
    assert attrs["stats"] == {"units": 12 * 9, "computed": 12 * 9, "skipped": 0} == prov["stats"]
    assert not (out / ".progress").exists() and not (tmp_path / "svs.ome.zarr.partial").exists()
    # A region in the interior equals restoring that part of the slide directly.
    green = tifffile.imread(SVS)[1000:1300, 700:1000, 1].astype(np.float32) / 255
    direct = predict_image(ConvStack(depth=2, width=4), green, scale=2, tile=128, overlap=16, batch_size=4)
    level0 = node.data[0]
    np.testing.assert_allclose(np.asarray(level0[2040:2560, 1440:1960]), direct[40:560, 40:560], atol=1e-4)
    level1 = np.asarray(node.data[1][:50, :50])
    np.testing.assert_allclose(level1, np.asarray(level0[:100, :100]).reshape(50, 2, 50, 2).mean(axis=(1, 3)), atol=1e-6)


def test_regions_match_restoring_the_image_whole(tmp_path):
    slide = tmp_path / "crop.tif"
    data = svs_crop(slide)
    out = tmp_path / "crop.ome.zarr"
    restore_slide(slide, out, generator=standin(), tile=64, overlap=16, region=48, pyramid_levels=2, precision="float32")
    got = np.asarray(read_ngff(out).data[0])
    whole = predict_image(ConvStack(), data.astype(np.float32) / 255, scale=2, tile=64, overlap=16, batch_size=4)
    np.testing.assert_allclose(got, whole, atol=1e-4)  # region borders blend like tile borders


def test_all_channels_each_restored_as_its_own_plane(tmp_path):
    slide = tmp_path / "rgb.tif"
    svs_crop(slide, rows=96, cols=80, rgb=True)
    out = tmp_path / "rgb.ome.zarr"
    restore_slide(slide, out, generator=standin(), channel="all", tile=64, overlap=16, region=64, pyramid_levels=2)
    node = read_ngff(out)
    assert node.data[0].shape == (3, 192, 160) and node.data[1].shape == (3, 96, 80)
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "y", "x"]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([1.0, 0.25, 0.25])
    planes = np.asarray(node.data[0])
    for c in range(3):
        single = tmp_path / f"c{c}.ome.zarr"
        restore_slide(slide, single, generator=standin(), channel=c, tile=64, overlap=16, region=64, pyramid_levels=1)
        np.testing.assert_array_equal(planes[c], np.asarray(zarr.open_array(single / "0", mode="r")))
    assert not np.allclose(planes[0], planes[2])
    pick = tmp_path / "pick.ome.zarr"
    restore_slide(slide, pick, generator=standin(), channel=[2, 0], tile=64, overlap=16, region=64, pyramid_levels=1)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(pick / "0", mode="r")), planes[[2, 0]])


def test_zarr_input_and_unknown_pixel_size(tmp_path):
    src = tmp_path / "plain.zarr"
    data = (np.random.default_rng(0).random((70, 90)) * 255).astype(np.uint8)
    zarr.create_array(src, data=data, chunks=(32, 32))
    out = tmp_path / "plain.ome.zarr"
    prov = restore_slide(src, out, generator=standin(), tile=48, overlap=8, region=32, pyramid_levels=2)
    node = read_ngff(out)
    assert node.data[0].shape == (140, 180)
    # Without a pixel size the transforms are in input pixels and the axes carry no unit.
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([0.5, 0.5])
    assert "unit" not in node.metadata["axes"][0] and prov["pixel_size_um"] is None


def test_scatter_gather_equals_single_job(tmp_path):
    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=150, cols=130)
    single = tmp_path / "single.ome.zarr"
    restore_slide(slide, single, generator=standin(), tile=64, overlap=None, region=32, pyramid_levels=3)
    out = tmp_path / "scatter.ome.zarr"
    plan = prepare_slide(slide, out, generator=standin(), tile=64, overlap=None, region=32, pyramid_levels=3)
    assert plan["regions"] == 5 * 5 and plan["overlap"] == 8 and not plan["resumed"]
    counts = [restore_slide(slide, out, generator=standin(), tile=64, region=32, pyramid_levels=3, part=(p, 3)) for p in (2, 0)]
    assert [c["computed"] for c in counts] == [9, 8]
    assert not out.exists()  # parts never produce the final store
    with pytest.raises(RestoreError, match=r"8 of 25 region\(s\) are not restored"):
        finalize_slide(out)
    restore_slide(slide, out, generator=standin(), tile=64, region=32, pyramid_levels=3, part=(1, 3))
    finalize_slide(out)
    for level in ("0", "1", "2"):
        np.testing.assert_array_equal(zarr.open_array(out / level, mode="r")[:], zarr.open_array(single / level, mode="r")[:])
    assert json.loads(json.dumps(dict(zarr.open_group(out, mode="r").attrs)["fastscan"]))["regions"] == 25


def test_part_without_plan_or_with_other_settings_is_refused(tmp_path):
    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=64, cols=64)
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(RestoreError, match="run the plan step"):
        restore_slide(slide, out, generator=standin(), tile=64, overlap=8, region=32, part=(0, 2))
    prepare_slide(slide, out, generator=standin(), tile=64, overlap=8, region=32)
    with pytest.raises(RestoreError, match="other settings.*region"):
        restore_slide(slide, out, generator=standin(), tile=64, region=64, part=(0, 2))


def test_changed_settings_start_afresh_and_progress_is_logged(tmp_path, caplog):
    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=64, cols=96)
    out = tmp_path / "o.ome.zarr"
    prepare_slide(slide, out, generator=standin(), tile=64, overlap=8, region=32)
    restore_slide(slide, out, generator=standin(), tile=64, region=32, part=(0, 2))
    with caplog.at_level(logging.INFO, logger="fastscan.restore"):
        prov = restore_slide(slide, out, generator=standin(), tile=64, overlap=16, region=32, progress=False)
    assert "discarding the partial restoration" in caplog.text
    assert prov["stats"]["computed"] == prov["regions"] == 6
    # Without a terminal, progress goes to the log.
    assert "restoring crop.tif: 6/6 done" in caplog.text


def test_output_that_is_the_input_is_refused(tmp_path):
    slide = tmp_path / "crop.ome.zarr"
    zarr.create_array(slide, data=np.zeros((40, 40), np.uint8), chunks=(20, 20))
    with pytest.raises(RestoreError, match="the output is the input .*crop.ome.zarr; writing it would destroy the input"):
        restore_slide(slide, slide, generator=standin(), tile=32, overlap=8, region=32)
    inner = slide / "restored.ome.zarr"
    with pytest.raises(RestoreError, match="the output lies inside the input"):
        restore_slide(slide, inner, generator=standin(), tile=32, overlap=8, region=32)
    assert not inner.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["crop.ome.zarr"]


def test_progress_bar_on_a_terminal(tmp_path, capsys):
    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=64, cols=64)
    restore_slide(slide, tmp_path / "o.ome.zarr", generator=standin(), tile=64, overlap=8, region=32, progress=True)
    err = capsys.readouterr().err
    assert "restoring crop.tif" in err and "4/4" in err  # tqdm's bar


def test_the_same_generator_object_resumes_its_own_work(tmp_path):
    """Preparing folds the norms in place; the recorded digest is of the folded weights, so
    passing the same module again still recognises the partial store as its own."""
    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=64, cols=64)
    gen = standin()
    out = tmp_path / "o.ome.zarr"
    assert not prepare_slide(slide, out, generator=gen, tile=64, overlap=8, region=32)["resumed"]
    assert prepare_slide(slide, out, generator=gen, tile=64, overlap=8, region=32)["resumed"]
    assert prepare_slide(slide, out, generator=standin(), tile=64, overlap=8, region=32)["resumed"]
    assert not prepare_slide(slide, out, generator=standin(seed=1), tile=64, overlap=8, region=32)["resumed"]


def test_pyramid_level_of_the_input(tmp_path):
    """A pyramidal OME-TIFF restored from its second level: the sampling follows that level."""
    slide = tmp_path / "pyramid.ome.tif"
    base = tifffile.imread(SVS)[:128, :160, 1]
    with tifffile.TiffWriter(slide) as tif:
        options = {"tile": (64, 64), "metadata": {"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}}
        tif.write(base, subifds=1, **options)
        tif.write(base[::2, ::2], subfiletype=1, tile=(64, 64))
    out = tmp_path / "level1.ome.zarr"
    prov = restore_slide(slide, out, generator=standin(), level=1, tile=64, overlap=8, region=32, pyramid_levels=1)
    node = read_ngff(out)
    assert node.data[0].shape == (128, 160) and prov["level"] == 1
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([0.5, 0.5])  # 1.0 µm halved


def test_the_time_left_is_estimated_after_the_first_region(monkeypatch, caplog):
    """The estimate is the first unit's time times the units left; beyond a day it is a warning.

    A fake clock makes the test independent of this machine's speed.
    """
    import logging

    from fastscan.restore import resumable

    now = [1000.0]
    monkeypatch.setattr(resumable.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.INFO, logger="fastscan.restore"):
        bar = resumable._Progress(100, desc="restoring small.tif", enabled=False)
        now[0] += 30.0
        bar.update()
        now[0] += 30.0
        bar.update()  # only the first unit gives the estimate
    estimates = [r for r in caplog.records if "will take about" in r.getMessage()]
    assert len(estimates) == 1
    assert estimates[0].levelno == logging.INFO
    assert "the first 1 unit(s) took 30 s; the remaining 99 will take about 50 min" in estimates[0].getMessage()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fastscan.restore"):
        bar = resumable._Progress(40_000, initial=10_000, desc="restoring huge.svs", enabled=False)
        now[0] += 12.0
        bar.update()
    (warning,) = [r for r in caplog.records if "will take about" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "the remaining 29999 will take about 4.2 days" in warning.getMessage()
    assert "more than a day: consider a GPU" in warning.getMessage()
