"""Restored slides and series are OME-Zarr that independent readers accept.

Each store is validated with ``ome-zarr-models`` (pydantic models of NGFF 0.5, written apart from
the ``ome-zarr`` writer fastscan uses) and read back with ``ome_zarr.reader``: axes, scales,
pyramid and the OMERO rendering metadata that sets a viewer's contrast.
"""

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr_models.common.omero import Omero
from ome_zarr_models.v05.image import Image
from test_infer import ConvStack
from test_restore_series import META as SERIES_META
from test_restore_series import write_series
from test_restore_slide import read_ngff

from fastscan.restore.series import restore_series
from fastscan.restore.slide import restore_slide

#: 8-bit brightfield mapped to [0, 1], as the slide tests' stand-in generator.
SLIDE_META = {"scale": 2, "normalisation": {"lr": [0.0, 255.0], "hr": [0.0, 1.0]}}
FAST = dict(tile=32, overlap=8, precision="float32")


def validated(path):
    """The store's ``ome`` attributes after ome-zarr-models accepted the whole group and its omero block."""
    group = zarr.open_group(path, mode="r")
    image = Image.from_zarr(group)  # raises a pydantic ValidationError on any NGFF violation
    assert [d.path for d in image.attributes.ome.multiscales[0].datasets] == [str(k) for k in range(len(image.attributes.ome.multiscales[0].datasets))]
    ome = dict(group.attrs)["ome"]
    Omero.model_validate(ome["omero"])
    return ome


def omero_windows(ome):
    return [(c["window"]["start"], c["window"]["end"]) for c in ome["omero"]["channels"]]


def test_single_channel_slide_with_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, (rng.random((48, 40)) * 255).astype(np.uint8), resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    out = tmp_path / "slide.ome.zarr"
    restore_slide(slide, out, generator=(ConvStack(depth=2, width=4), dict(SLIDE_META)), region=32, pyramid_levels=2, **FAST)
    ome = validated(out)
    assert ome["version"] == "0.5"
    node = read_ngff(out)
    assert [d.shape for d in node.data] == [(96, 80), (48, 40)]
    assert [(a["name"], a.get("unit")) for a in node.metadata["axes"]] == [("y", "micrometer"), ("x", "micrometer")]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [pytest.approx([0.25, 0.25]), pytest.approx([0.5, 0.5])]  # 0.5 µm input halved at scale 2
    # The window is the model's normalised HR range; the slider spans it and the data.
    assert omero_windows(ome) == [(0.0, 1.0)]
    window = ome["omero"]["channels"][0]["window"]
    level1 = np.asarray(node.data[1])
    assert window["min"] <= min(0.0, float(level1.min())) and window["max"] >= max(1.0, float(level1.max()))
    assert node.metadata["contrast_limits"] == [[0.0, 1.0]]
    assert ome["omero"]["channels"][0]["color"] == "FFFFFF"


def test_channel_list_slide_without_pixel_size(tmp_path):
    rng = np.random.default_rng(1)
    slide = tmp_path / "rgb.tif"
    tifffile.imwrite(slide, (rng.random((40, 32, 3)) * 255).astype(np.uint8), photometric="rgb")
    out = tmp_path / "rgb.ome.zarr"
    restore_slide(slide, out, generator=(ConvStack(depth=2, width=4), dict(SLIDE_META)), channel=[0, 2], region=32, pyramid_levels=2, **FAST)
    ome = validated(out)
    node = read_ngff(out)
    assert [d.shape for d in node.data] == [(2, 80, 64), (2, 40, 32)]
    # No pixel size in the input: transforms in input pixels, axes without a unit.
    assert [(a["name"], a.get("unit")) for a in node.metadata["axes"]] == [("c", None), ("y", None), ("x", None)]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([1.0, 0.5, 0.5])
    assert node.metadata["channel_names"] == ["channel 0", "channel 2"]
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "0000FF"]  # red and blue planes of the RGB input
    assert node.metadata["contrast_limits"] == [[0.0, 1.0], [0.0, 1.0]]


def test_series_has_time_axis_and_omero(tmp_path):
    lr = tmp_path / "lr.ome.tif"
    write_series(lr, frames=3, shape=(24, 32))
    out = tmp_path / "s.ome.zarr"
    restore_series(lr, out, generator=(ConvStack(depth=2, width=4), dict(SERIES_META)), frames_per_chunk=2, pyramid_levels=2, **FAST)
    ome = validated(out)
    node = read_ngff(out)
    assert [d.shape for d in node.data] == [(3, 48, 64), (3, 24, 32)]
    assert [(a["name"], a["type"]) for a in node.metadata["axes"]] == [("t", "time"), ("y", "space"), ("x", "space")]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([1.0, 0.2, 0.2])
    assert node.metadata["coordinateTransformations"][1][0]["scale"] == pytest.approx([1.0, 0.4, 0.4])
    assert omero_windows(ome) == [(0.0, 1.0)] and node.metadata["channel_names"] == ["restored"]
