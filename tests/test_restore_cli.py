"""``fastscan restore``: slides and series from the command line, errors as messages."""

import numpy as np
import pytest
import tifffile
import zarr

from fastscan.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained generator of the fast low-resolution variant, saved as training would."""
    import torch

    from fastscan.models import build_generator, resolve_architecture, save_state_dict, write_model_json

    arch = resolve_architecture({"variant": "lowres", "img_size": [64, 64]})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    save_state_dict(build_generator(arch), path / "generator.pth")
    write_model_json(path, {"architecture": arch, "scale": 2, "normalisation": {"lr": [0.0, 255.0], "hr": [0.0, 1.0]}})
    return path


def test_restore_slide_and_series_from_the_command_line(tmp_path, model_dir):
    rng = np.random.default_rng(0)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, (rng.random((40, 56, 3)) * 255).astype(np.uint8), photometric="rgb")
    out = tmp_path / "slide.ome.zarr"
    args = ["--model", str(model_dir), "--tile", "64", "--overlap", "8", "--pyramid-levels", "2", "--threads", "2"]
    assert main(["restore", str(slide), "--out", str(out), "--channel", "0,2", *args]) == 0
    assert zarr.open_array(out / "0", mode="r").shape == (2, 80, 112)
    assert zarr.open_group(out, mode="r").attrs["fastscan"]["channel"] == [0, 2]

    series = tmp_path / "series.tif"
    tifffile.imwrite(series, (rng.random((3, 32, 40)) * 255).astype(np.uint8), photometric="minisblack", metadata={"axes": "TYX"})
    sout = tmp_path / "series.ome.zarr"
    assert main(["restore", str(series), "--out", str(sout), "--series", "--frames-per-chunk", "2", *args]) == 0
    assert zarr.open_array(sout / "0", mode="r").shape == (3, 64, 80)


def test_command_line_errors_are_messages(tmp_path, model_dir, caplog):
    assert main(["restore", str(tmp_path / "missing.tif"), "--model", str(model_dir), "--out", str(tmp_path / "o.ome.zarr")]) == 2
    assert "missing.tif: file not found" in caplog.text
    assert main(["restore", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "o.ome.zarr"), "--channel", "red"]) == 2
    assert "comma-separated" in caplog.text
    assert not (tmp_path / "o.ome.zarr").exists()
