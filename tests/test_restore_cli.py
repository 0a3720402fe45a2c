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


def _slide(path):
    rng = np.random.default_rng(1)
    tifffile.imwrite(path, (rng.random((24, 32)) * 255).astype(np.uint8), photometric="minisblack")
    return path


_FAST = ["--tile", "32", "--overlap", "8", "--pyramid-levels", "1", "--threads", "1"]


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_an_existing_folder_of_the_user_is_never_replaced(tmp_path, model_dir, caplog):
    slide = _slide(tmp_path / "slide.tif")
    out = tmp_path / "d"
    out.mkdir()
    (out / "thesis.docx").write_text("four years")
    for extra in ([], ["--overwrite"]):
        assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(out), *_FAST, *extra]) == 2
        assert f"{out}: refusing to replace it: it is a folder that fastscan did not write (it holds thesis.docx)" in caplog.text
    assert (out / "thesis.docx").read_text() == "four years"
    assert _entries(out) == ["thesis.docx"]
    assert _entries(tmp_path) == ["d", "slide.tif"]  # no .partial, no lock left beside it


def test_an_output_around_the_input_or_a_file_is_refused(tmp_path, model_dir, caplog):
    slide = _slide(tmp_path / "slide.tif")
    assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(tmp_path), *_FAST]) == 2
    assert f"{tmp_path}: the output contains the input {slide}; writing it would destroy the input" in caplog.text
    assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(slide), *_FAST]) == 2
    assert "the output is the input" in caplog.text
    assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(model_dir / "r.ome.zarr"), *_FAST]) == 2
    assert "lies inside the input" in caplog.text
    report = tmp_path / "report.ome.zarr"
    report.write_text("a user's file")
    assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(report), *_FAST]) == 2
    assert "it is a file, and a store (a folder) would replace it" in caplog.text
    assert report.read_text() == "a user's file"
    assert _entries(tmp_path) == ["report.ome.zarr", "slide.tif"]


def test_a_rerun_replaces_its_own_output_and_overwrite_another_restoration(tmp_path, model_dir, caplog):
    caplog.set_level("INFO", logger="fastscan")
    slide = _slide(tmp_path / "slide.tif")
    out = tmp_path / "r.ome.zarr"
    run = ["restore", str(slide), "--model", str(model_dir), "--out", str(out), *_FAST]
    assert main(run) == 0
    assert main(run) == 0  # the same restoration again: its own output is replaced
    assert "replacing the earlier restored_slide" in caplog.text
    other = _slide(tmp_path / "other.tif")
    other_run = ["restore", str(other), "--model", str(model_dir), "--out", str(out), *_FAST]
    assert main(other_run) == 2
    assert f"{out}: already holds another fastscan output (restored_slide of {slide.resolve()})" in caplog.text
    assert zarr.open_group(out, mode="r").attrs["fastscan"]["input"] == str(slide.resolve())
    assert main([*other_run, "--overwrite"]) == 0
    assert zarr.open_group(out, mode="r").attrs["fastscan"]["input"] == str(other.resolve())
    assert _entries(tmp_path) == ["other.tif", "r.ome.zarr", "slide.tif"]


def test_a_restoration_of_a_busy_output_fails_at_once(tmp_path, model_dir, caplog):
    import subprocess
    import sys
    import textwrap

    slide = _slide(tmp_path / "slide.tif")
    out, release = tmp_path / "r.ome.zarr", tmp_path / "release"
    # Another restoration of the same output, holding its lock while it works.
    code = textwrap.dedent(
        f"""
        import os, time
        from fastscan.lock import output_lock
        with output_lock({str(out)!r}, what="restore_slide"):
            print("locked", flush=True)
            while not os.path.exists({str(release)!r}):
                time.sleep(0.05)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(out), *_FAST]) == 2
        assert f"{out}: another restoration is writing this output: pid {proc.pid}" in caplog.text
        # Refused before planning: no partial store was set up beside the running one.
        assert _entries(tmp_path) == ["r.ome.zarr.partial.lock", "slide.tif"]
    finally:
        release.touch()
        proc.wait(timeout=60)
    assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(out), "--wait", *_FAST]) == 0
    assert _entries(tmp_path) == ["r.ome.zarr", "release", "slide.tif"]


def test_a_partial_path_holding_other_files_is_refused(tmp_path, model_dir, caplog):
    slide = _slide(tmp_path / "slide.tif")
    partial = tmp_path / "r.ome.zarr.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    assert main(["restore", str(slide), "--model", str(model_dir), "--out", str(tmp_path / "r.ome.zarr"), *_FAST]) == 2
    assert f"{partial}: refusing to use it: it is not a partial restoration of fastscan's" in caplog.text
    assert (partial / "notes.txt").read_text() == "mine"


def test_restore_options_default_to_the_config_schema():
    """An option named like a restore.* config key has that key's default in the workflow's schema."""
    from pathlib import Path

    import yaml

    from fastscan.cli import _parser

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    restore = schema["properties"]["restore"]["properties"]
    sub = next(a for a in _parser()._actions if a.dest == "command").choices["restore"]
    # --model names a model directory, restore.model a model of the workflow: not the same value.
    options = {a.dest: a.default for a in sub._actions if "default" in restore.get(a.dest, {})}
    assert set(options) == {
        "level",
        "tile",
        "overlap",
        "batch_size",
        "region",
        "frames_per_chunk",
        "pyramid_levels",
        "precision",
        "compile",
        "ensemble",
        "device",
    }
    assert options == {key: restore[key]["default"] for key in options}
