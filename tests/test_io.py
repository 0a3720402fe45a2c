"""Tests for fastscan.io: raw readers, FOV ingestion and the lazy slide reader."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import zlib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image, PngImagePlugin

import fastscan
from fastscan.io import (
    InputError,
    file_sha256,
    ingest_fov,
    open_slide,
    read_fov,
    read_header,
    read_image,
    read_series,
)

DATA = Path(__file__).parent / "data"
OIB = DATA / "mitoegfp_fv1000.oib"
SVS = DATA / "cmu1_small_region_he.svs"


# ------------------------------------------------------------------------------------------
# helpers


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_ome(path: Path, data: np.ndarray, *, axes: str, pixel_size: float | None, unit: str = "µm") -> Path:
    metadata: dict = {"axes": axes}
    if pixel_size is not None:
        metadata.update(
            PhysicalSizeX=pixel_size,
            PhysicalSizeY=pixel_size,
            PhysicalSizeXUnit=unit,
            PhysicalSizeYUnit=unit,
        )
    tifffile.imwrite(path, data, ome=True, metadata=metadata)
    return path


def _pair(
    tmp_path: Path,
    *,
    frames: int = 5,
    shape: tuple[int, int] = (32, 40),
    seed: int = 0,
    name: str = "fov1",
) -> tuple[Path, Path]:
    """A simulated-like LR series (uint16) and its 2x HR target (float32) as OME-TIFFs."""
    rng = np.random.default_rng(seed)
    lr = rng.integers(1, 4095, size=(frames, *shape), dtype=np.uint16)
    hr = rng.random((2 * shape[0], 2 * shape[1]), dtype=np.float32) * 4095
    lr_path = _write_ome(tmp_path / f"{name}_lr.ome.tif", lr, axes="TYX", pixel_size=0.4)
    hr_path = _write_ome(tmp_path / f"{name}_hr.ome.tif", hr, axes="YX", pixel_size=0.2)
    return lr_path, hr_path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _ingest(lr: Path, hr: Path, out: Path, **kwargs):
    return ingest_fov(lr=lr, hr=hr, out=out, sample="mito", session="s1", fov="fov1", **kwargs)


# ------------------------------------------------------------------------------------------
# Olympus OIB / OIF (real file)


def test_oib_channels_pixels_and_metadata() -> None:
    planes = []
    for channel in range(3):
        frames, meta = read_series(OIB, channel=channel)
        assert frames.shape == (1, 256, 256)
        assert frames.dtype == np.uint16
        assert frames.max() <= 4095
        assert meta["format"] == "oib"
        assert meta["channels"] == 3
        assert meta["significant_bits"] == 12
        assert meta["pixel_size_um"] == pytest.approx([0.177, 0.177], abs=1e-3)
        assert meta["axes"] == "CYX"
        assert meta["shape"] == [1, 256, 256]
        assert meta["dtype"] == "uint16"
        assert meta["scan_direction"] == "Oneway"
        assert meta["zoom"] == pytest.approx(7.0)
        planes.append(frames[0])
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(planes[i], planes[j])


def test_oib_channel_out_of_range_names_file_and_count() -> None:
    with pytest.raises(InputError) as err:
        read_series(OIB, channel=3)
    message = str(err.value)
    assert OIB.name in message
    assert "3 channels" in message
    assert "channel 3" in message


def test_oif_reads_like_oib(tmp_path: Path) -> None:
    import oiffile

    oiffile.oib2oif(OIB, location=os.fspath(tmp_path), verbose=0)
    (oif,) = tmp_path.glob("*.oif")
    for channel in range(3):
        a, meta_a = read_series(OIB, channel=channel)
        b, meta_b = read_series(oif, channel=channel)
        np.testing.assert_array_equal(a, b)
        assert meta_b["format"] == "oif"
        assert meta_b["channels"] == 3
        assert meta_b["significant_bits"] == 12
        assert meta_b["pixel_size_um"] == pytest.approx(meta_a["pixel_size_um"])


def test_read_image_is_float32_2d() -> None:
    image, meta = read_image(OIB, channel=0)
    frames, _ = read_series(OIB, channel=0)
    assert image.dtype == np.float32 and image.shape == (256, 256)
    np.testing.assert_array_equal(image, frames[0].astype(np.float32))
    assert meta["frames_averaged"] == 1


def test_file_sha256_matches_hashlib() -> None:
    assert file_sha256(OIB) == _digest(OIB)


# ------------------------------------------------------------------------------------------
# TIFF family (files written here)


def test_ome_tiff_pixel_size_with_units(tmp_path: Path) -> None:
    data = np.arange(3 * 8 * 10, dtype=np.uint16).reshape(3, 8, 10)
    path = _write_ome(tmp_path / "nm.ome.tif", data, axes="TYX", pixel_size=250.0, unit="nm")
    frames, meta = read_series(path)
    np.testing.assert_array_equal(frames, data)
    assert meta["format"] == "ome-tiff"
    assert meta["pixel_size_um"] == pytest.approx([0.25, 0.25])
    assert meta["channels"] == 1


def test_ome_tiff_channel_selection_and_significant_bits(tmp_path: Path) -> None:
    data = np.stack([np.full((4, 6, 7), c + 1, np.uint16) for c in range(2)], axis=1)  # TCYX
    path = tmp_path / "tc.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCYX", "SignificantBits": 12, "PhysicalSizeX": 0.3})
    frames, meta = read_series(path, channel=1)
    assert frames.shape == (4, 6, 7)
    assert (frames == 2).all()
    assert meta["channels"] == 2
    assert meta["significant_bits"] == 12
    assert meta["pixel_size_um"] == pytest.approx([0.3, 0.3])  # Y falls back to X
    with pytest.raises(InputError, match="has 2 channels"):
        read_series(path, channel=2)


def test_imagej_tiff_resolution(tmp_path: Path) -> None:
    data = np.ones((3, 8, 10), np.uint16)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.3, 1 / 0.25),
        metadata={"unit": "um", "axes": "TYX"},
    )
    _, meta = read_series(path)
    assert meta["format"] == "tiff"
    assert meta["imagej"] is True
    assert meta["pixel_size_um"] == pytest.approx([0.25, 0.3])


def test_tiff_centimetre_resolution_and_inch_display_default(tmp_path: Path) -> None:
    data = np.ones((8, 10), np.uint16)
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, data, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    assert read_series(cm)[1]["pixel_size_um"] == pytest.approx([0.5, 0.5])
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, data, resolution=(72, 72), resolutionunit="INCH")
    assert read_series(dpi)[1]["pixel_size_um"] is None


def test_plain_tiff_has_no_pixel_size_and_single_image_is_one_frame(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.ones((8, 10), np.uint16))
    frames, meta = read_series(path)
    assert frames.shape == (1, 8, 10)
    assert meta["pixel_size_um"] is None
    assert meta["significant_bits"] is None


def test_rgb_tiff_channel_selects_sample(tmp_path: Path) -> None:
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 2] = 7
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    frames, meta = read_series(path, channel=2)
    assert meta["channels"] == 3
    assert frames.shape == (1, 8, 10) and (frames == 7).all()


def test_read_image_averages_stack(tmp_path: Path) -> None:
    stack = np.stack([np.full((6, 8), v, np.uint16) for v in (1, 2, 6)])
    path = _write_ome(tmp_path / "stack.ome.tif", stack, axes="ZYX", pixel_size=0.2)
    image, meta = read_image(path)
    assert image.dtype == np.float32 and image.shape == (6, 8)
    assert np.allclose(image, 3.0)
    assert meta["frames_averaged"] == 3


def test_glob_of_frames_in_natural_order(tmp_path: Path) -> None:
    for index in (10, 2, 1):
        tifffile.imwrite(tmp_path / f"frame{index}.tif", np.full((6, 8), index, np.uint16))
    frames, meta = read_series(tmp_path / "frame*.tif")
    assert frames.shape == (3, 6, 8)
    assert [int(f[0, 0]) for f in frames] == [1, 2, 10]
    assert meta["format"] == "glob"
    assert [Path(f).name for f in meta["files"]] == ["frame1.tif", "frame2.tif", "frame10.tif"]


def test_glob_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no files match"):
        read_series(tmp_path / "nothing*.tif")
    tifffile.imwrite(tmp_path / "f1.tif", np.ones((6, 8), np.uint16))
    tifffile.imwrite(tmp_path / "f2.tif", np.ones((6, 9), np.uint16))
    with pytest.raises(InputError, match="f2.tif"):
        read_series(tmp_path / "f*.tif")


# ------------------------------------------------------------------------------------------
# PNG frames (public paired datasets: raw/1/*.png noisy frames, gt/1/avg50.png target)


def _write_png(path: Path, data: np.ndarray, *, pixel_size_um: tuple[float, float] | None = None, sbit: int | None = None) -> Path:
    """Write ``data`` with Pillow; ``pixel_size_um`` (y, x) as pHYs in pixels per metre."""
    kwargs: dict = {}
    if pixel_size_um is not None:
        # Pillow writes dpi as round(dpi / 0.0254) pixels per metre.
        kwargs["dpi"] = (25400.0 / pixel_size_um[1], 25400.0 / pixel_size_um[0])
    if sbit is not None:
        info = PngImagePlugin.PngInfo()
        info.add(b"sBIT", bytes([sbit]))
        kwargs["pnginfo"] = info
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path, **kwargs)
    return path


def _raw_png(path: Path, data: np.ndarray, *, colour_type: int) -> Path:
    """A PNG written chunk by chunk, for layouts Pillow does not write (16-bit RGB)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = data.shape[:2]
    ihdr = struct.pack(">IIBBBBB", width, height, data.dtype.itemsize * 8, colour_type, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(data.dtype.newbyteorder(">")).tobytes() for row in data)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_png_glob_of_uint8_frames_is_a_series(tmp_path: Path) -> None:
    for index in (10, 2, 1):
        _write_png(tmp_path / "raw" / "1" / f"{index}.png", np.full((6, 8), index, np.uint8))
    frames, meta = read_series(tmp_path / "raw" / "1" / "*.png")
    assert frames.dtype == np.uint8 and frames.shape == (3, 6, 8)
    assert [int(f[0, 0]) for f in frames] == [1, 2, 10]
    assert (meta["format"], meta["frame_format"], meta["axes"], meta["channels"]) == ("glob", "png", "YX", 1)
    assert meta["pixel_size_um"] is None and meta["significant_bits"] is None


def test_png_16bit_keeps_values_above_255(tmp_path: Path) -> None:
    data = (np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 85).astype(np.uint16)  # up to 3995
    path = _write_png(tmp_path / "avg50.png", data, sbit=12)
    frames, meta = read_series(path)
    assert frames.dtype == np.uint16 and frames.shape == (1, 6, 8)
    np.testing.assert_array_equal(frames[0], data)
    assert meta["format"] == "png" and meta["significant_bits"] == 12
    header = read_header(path)
    assert (header["format"], header["dtype"], header["size_yx"], header["frames"]) == ("png", "uint16", [6, 8], 1)
    # The PNG standard scales 12 significant bits up to the full 16: saturation is not at 4095.
    scaled = _write_png(tmp_path / "scaled.png", data << 4, sbit=12)
    frames, meta = read_series(scaled)
    assert int(frames.max()) == 3995 << 4 and meta["significant_bits"] is None


def test_png_phys_pixel_size_in_micrometres(tmp_path: Path) -> None:
    path = _write_png(tmp_path / "cal.png", np.zeros((6, 8), np.uint8), pixel_size_um=(0.5, 0.25))
    _, meta = read_series(path)
    assert meta["pixel_size_um"] == pytest.approx([0.5, 0.25])
    header = read_header(path)
    assert header["pixel_size_um"] == pytest.approx([0.5, 0.25]) and header["sources"]["pixel_size_um"] == "PNG pHYs chunk"
    # 72 dpi, what image editors write by default, is not a calibration.
    display = tmp_path / "display.png"
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(display, dpi=(72, 72))
    assert read_series(display)[1]["pixel_size_um"] is None


def test_png_rgb_channel_selects_sample_and_gray_palette_is_one_channel(tmp_path: Path) -> None:
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 1], rgb[..., 2] = 200, 7
    path = _write_png(tmp_path / "rgb.png", rgb)
    frames, meta = read_series(path, channel=2)
    assert (meta["axes"], meta["channels"]) == ("YXS", 3)
    assert frames.shape == (1, 6, 8) and (frames == 7).all()
    with pytest.raises(InputError) as err:
        read_series(path, channel=3)
    assert "rgb.png" in str(err.value) and "3 channels" in str(err.value)
    # A colour palette is read as the RGB samples it stands for.
    coloured = Image.new("P", (8, 6), 1)
    coloured.putpalette([0, 0, 0, 0, 200, 7])
    coloured.save(tmp_path / "coloured.png")
    frames, meta = read_series(tmp_path / "coloured.png", channel=1)
    assert (meta["axes"], meta["channels"]) == ("YXS", 3) and (frames == 200).all()
    # A palette of grays is a grayscale image: one channel, the palette's values exactly.
    gray = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8) * 5
    palette = Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    palette.putdata(gray.ravel().tolist())
    palette.save(tmp_path / "palette.png")
    frames, meta = read_series(tmp_path / "palette.png")
    assert meta["axes"] == "YX" and meta["channels"] == 1
    np.testing.assert_array_equal(frames[0], gray)


def test_bad_pngs_name_the_file(tmp_path: Path) -> None:
    path = _write_png(tmp_path / "cut.png", np.random.default_rng(0).integers(0, 65535, (64, 64), dtype=np.uint16))
    raw = path.read_bytes()
    for size in (len(raw) // 2, 40, 12):
        path.write_bytes(raw[:size])
        with pytest.raises(InputError, match="cut.png.*truncated"):
            read_series(path)
    corrupt = bytearray(raw)
    corrupt[len(raw) // 2] ^= 0xFF  # inside the compressed pixels
    path.write_bytes(bytes(corrupt))
    with pytest.raises(InputError, match="cut.png.*corrupt"):
        read_series(path)
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    for read in (read_series, read_header):
        with pytest.raises(InputError, match="fake.png: not a valid PNG file.*truncated or corrupt"):
            read(fake)
    # Pillow decodes 16-bit colour to 8 bits: refused rather than read with the low byte lost.
    deep = _raw_png(tmp_path / "deep.png", np.full((4, 5, 3), 1000, np.uint16), colour_type=2)
    with pytest.raises(InputError, match="deep.png: is a 16-bit RGB PNG"):
        read_series(deep)
    with pytest.raises(InputError, match="whole slide"):
        open_slide(_write_png(tmp_path / "slide.png", np.zeros((6, 8), np.uint8)))


def test_png_hr_target_is_read_as_a_float_image(tmp_path: Path) -> None:
    data = np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 1000
    image, meta = read_image(_write_png(tmp_path / "gt" / "1" / "avg50.png", data))
    assert image.dtype == np.float32 and image.shape == (6, 8)
    np.testing.assert_array_equal(image, data.astype(np.float32))
    assert meta["frames_averaged"] == 1 and meta["format"] == "png"


def test_ingest_png_frames_and_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for index in range(1, 4):
        _write_png(tmp_path / "raw" / f"{index}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8), pixel_size_um=(0.2, 0.2))
    hr = _write_png(tmp_path / "gt" / "avg50.png", rng.integers(0, 255, (32, 32), dtype=np.uint8), pixel_size_um=(0.1, 0.1))
    attrs = _ingest(tmp_path / "raw" / "*.png", hr, tmp_path / "fov.zarr")
    assert attrs["lr_pixel_size_um"] == pytest.approx([0.2, 0.2]) and attrs["hr_pixel_size_um"] == pytest.approx([0.1, 0.1])
    assert (attrs["source"]["lr"]["frame_format"], attrs["source"]["hr"]["format"]) == ("png", "png")
    assert read_fov(tmp_path / "fov.zarr")[0].shape == (3, 16, 16)


# ------------------------------------------------------------------------------------------
# NumPy .npy arrays (the W2S layout: wf_channel0.npy, 400 x 512 x 512 uint16, beside a 2x
# sim_channel0.npy)


def test_npy_series_image_and_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    series = rng.integers(0, 65535, (5, 16, 24), dtype=np.uint16)
    np.save(tmp_path / "wf_channel0.npy", series)
    frames, meta = read_series(tmp_path / "wf_channel0.npy")
    np.testing.assert_array_equal(frames, series)
    assert (meta["format"], meta["axes"], meta["channels"], meta["pixel_size_um"]) == ("npy", "TYX", 1, None)
    header = read_header(tmp_path / "wf_channel0.npy")
    assert (header["format"], header["size_yx"], header["frames"], header["dtype"], header["pixel_size_um"]) == ("npy", [16, 24], 5, "uint16", None)
    # A 2-D array is a single image; half floats are read as float32, big-endian values swapped.
    np.save(tmp_path / "sim_channel0.npy", rng.random((32, 48)).astype(np.float16))
    image, meta = read_image(tmp_path / "sim_channel0.npy")
    assert image.shape == (32, 48) and meta["frames_averaged"] == 1 and meta["dtype"] == "float32"
    np.save(tmp_path / "big_endian.npy", series.astype(">u2"))
    frames, meta = read_series(tmp_path / "big_endian.npy")
    np.testing.assert_array_equal(frames, series)
    assert frames.dtype == np.dtype("=u2")


def test_npy_colour_glob_and_ingest(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 7
    np.save(tmp_path / "rgb.npy", rgb)
    frames, meta = read_series(tmp_path / "rgb.npy", channel=1)
    assert frames.shape == (1, 16, 16) and (frames == 7).all() and meta["channels"] == 3
    rng = np.random.default_rng(5)
    for index in range(3):
        np.save(tmp_path / f"frame{index}.npy", rng.integers(0, 4095, (16, 16), dtype=np.uint16))
    np.save(tmp_path / "sim.npy", rng.random((32, 32), dtype=np.float32) * 4095)
    # An array records no pixel size: the sample sheet's columns give it.
    with pytest.raises(InputError, match="pixel size"):
        _ingest(tmp_path / "frame*.npy", tmp_path / "sim.npy", tmp_path / "fov.zarr")
    attrs = _ingest(tmp_path / "frame*.npy", tmp_path / "sim.npy", tmp_path / "fov.zarr", lr_pixel_size_um=0.1, hr_pixel_size_um=0.05)
    assert (attrs["source"]["lr"]["frame_format"], attrs["source"]["hr"]["format"]) == ("npy", "npy")
    assert read_fov(tmp_path / "fov.zarr")[0].shape == (3, 16, 16)


def test_bad_npy_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.ones((4, 64, 64), np.uint16))
    raw = good.read_bytes()
    cases = {
        "cut.npy": (raw[: len(raw) // 2], "truncated"),
        "head.npy": (raw[:40], "truncated or corrupt"),
        "fake.npy": (b"not an array at all", "not a valid NPY file"),
    }
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=f"{name}.*{why}"):
            read_series(tmp_path / name)
    refused = {
        "objects.npy": (np.array([{"a": 1}], dtype=object), "Python objects"),
        "mask.npy": (np.ones((8, 8), bool), "bool array; images must hold integers or floats"),
        "complex.npy": (np.ones((8, 8), np.complex64), "complex64 array"),
        "volume.npy": (np.ones((2, 3, 8, 8), np.uint8), r"4-D array of shape \[2, 3, 8, 8\].*one channel"),
        "line.npy": (np.ones(8, np.uint8), "1-D array"),
        "empty.npy": (np.ones((0, 8, 8), np.uint8), "empty"),
    }
    for name, (array, why) in refused.items():
        np.save(tmp_path / name, array, allow_pickle=True)
        with pytest.raises(InputError, match=f"{name}.*{why}"):
            read_series(tmp_path / name)
        with pytest.raises(InputError, match=name):
            read_header(tmp_path / name)
    with pytest.raises(InputError, match="good.npy: NPY is read as LR frames and HR targets, not as a whole slide"):
        open_slide(good)
    assert good.read_bytes() == raw


def test_npy_too_big_for_memory_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastscan.io.memory import ENV_VAR, MemoryLimitError

    # A sparse file: the header declares 2 GB of uint16 frames, none of which is on disk.
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<u2", "fortran_order": False, "shape": (4, 16384, 16384)})
        fh.truncate(fh.tell() + 4 * 16384 * 16384 * 2)
    monkeypatch.setenv(ENV_VAR, "100")
    with pytest.raises(MemoryLimitError, match="huge.npy: the image series declares 4 x 16384 x 16384 uint16"):
        read_series(path)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_series(tmp_path / "missing.tif")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(InputError, match="unknown image format"):
        read_series(junk)


def test_truncated_tiff_names_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((5, 64, 64), np.uint16))
    raw = path.read_bytes()
    for size in (len(raw) // 2, 100):
        path.write_bytes(raw[:size])
        with pytest.raises(InputError) as err:
            read_series(path)
        assert path.name in str(err.value)


def test_tiff_cut_before_last_page_is_not_a_shorter_series(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.ones((5, 64, 64), np.uint16), metadata=None)
    with tifffile.TiffFile(path) as tf:
        last_ifd = tf.pages[-1].offset
    path.write_bytes(path.read_bytes()[:last_ifd])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        read_series(path)
    assert path.name in str(err.value)


# ------------------------------------------------------------------------------------------
# ingest_fov / read_fov


def test_ingest_round_trip(tmp_path: Path) -> None:
    lr_path, hr_path = _pair(tmp_path)
    before = {p: (_digest(p), p.stat().st_mtime_ns) for p in (lr_path, hr_path)}
    out = tmp_path / "ingest" / "mito" / "s1" / "fov1.zarr"

    attrs = _ingest(lr_path, hr_path, out)

    lr_src, _ = read_series(lr_path)
    hr_src, _ = read_image(hr_path)
    lr, hr, stored = read_fov(out)
    np.testing.assert_array_equal(lr, lr_src)
    np.testing.assert_array_equal(hr, hr_src)
    assert lr.dtype == np.uint16 and hr.dtype == np.float32
    assert stored == attrs

    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == 3
    assert group["lr"].chunks == (1, 32, 40)
    assert group["hr"].shape == (64, 80)

    assert attrs["kind"] == "fov"
    assert (attrs["sample"], attrs["session"], attrs["fov"], attrs["channel"]) == (
        "mito",
        "s1",
        "fov1",
        0,
    )
    assert attrs["axes"] == {"lr": "TYX", "hr": "YX"}
    assert attrs["lr_pixel_size_um"] == pytest.approx([0.4, 0.4])
    assert attrs["hr_pixel_size_um"] == pytest.approx([0.2, 0.2])
    assert attrs["scale"] == 2
    assert attrs["fastscan_version"] == fastscan.__version__
    for role, path in (("lr", lr_path), ("hr", hr_path)):
        source = attrs["source"][role]
        assert source["sha256"] == before[path][0]
        assert source["path"] == os.fspath(path)
        assert source["format"] == "ome-tiff"
        assert {"shape", "dtype", "pixel_size_um", "channels", "significant_bits"} <= source.keys()
    assert attrs["source"]["lr"]["shape"] == [5, 32, 40]
    assert attrs["source"]["lr"]["dtype"] == "uint16"

    assert {p: (_digest(p), p.stat().st_mtime_ns) for p in (lr_path, hr_path)} == before
    assert _leftovers(out.parent) == []


def test_ingest_replaces_existing_store_and_clears_stale_tmp(tmp_path: Path) -> None:
    lr_path, hr_path = _pair(tmp_path)
    out = tmp_path / "fov1.zarr"
    _ingest(lr_path, hr_path, out)
    stale = tmp_path / f"fov1.zarr.tmp-{os.getpid()}"
    stale.mkdir()
    (stale / "junk").write_text("left by a killed job")
    lr2, hr2 = _pair(tmp_path, seed=1, name="again")
    _ingest(lr2, hr2, out)
    np.testing.assert_array_equal(read_fov(out)[0], read_series(lr2)[0])
    assert _leftovers(tmp_path) == []


def test_ingest_plain_tiff_uses_explicit_pixel_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    lr_path, hr_path = tmp_path / "lr.tif", tmp_path / "hr.tif"
    tifffile.imwrite(lr_path, rng.integers(1, 4095, (3, 16, 16), dtype=np.uint16), photometric="minisblack")
    tifffile.imwrite(hr_path, rng.integers(1, 4095, (32, 32), dtype=np.uint16))
    out = tmp_path / "fov.zarr"

    with pytest.raises(InputError) as err:
        _ingest(lr_path, hr_path, out, hr_pixel_size_um=0.1)
    assert "lr_pixel_size_um" in str(err.value) and lr_path.name in str(err.value)
    with pytest.raises(InputError, match="hr_pixel_size_um"):
        _ingest(lr_path, hr_path, out, lr_pixel_size_um=0.2)
    assert not out.exists()

    attrs = _ingest(lr_path, hr_path, out, lr_pixel_size_um=0.2, hr_pixel_size_um=0.1)
    assert attrs["lr_pixel_size_um"] == [0.2, 0.2]
    assert attrs["hr_pixel_size_um"] == [0.1, 0.1]


def test_ingest_metadata_wins_and_disagreement_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lr_path, hr_path = _pair(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fastscan.io"):
        attrs = _ingest(lr_path, hr_path, tmp_path / "fov.zarr", lr_pixel_size_um=0.5, hr_pixel_size_um=0.2)
    assert attrs["lr_pixel_size_um"] == pytest.approx([0.4, 0.4])
    assert any("lr_pixel_size_um" in r.getMessage() for r in caplog.records)
    assert not any("hr_pixel_size_um" in r.getMessage() for r in caplog.records)


def _assert_failure_keeps_store(out: Path, good: np.ndarray, match: str, **paths: Path) -> None:
    with pytest.raises(InputError) as err:
        _ingest(paths["lr"], paths["hr"], out)
    assert match in str(err.value)
    np.testing.assert_array_equal(read_fov(out)[0], good)
    assert _leftovers(out.parent) == []


def test_ingest_failures_name_the_file_and_keep_existing_output(tmp_path: Path) -> None:
    lr_path, hr_path = _pair(tmp_path)
    out = tmp_path / "out" / "fov1.zarr"
    _ingest(lr_path, hr_path, out)
    good = read_fov(out)[0]
    rng = np.random.default_rng(3)

    wrong_hr = _write_ome(
        tmp_path / "hr_3x.ome.tif",
        rng.random((96, 120), dtype=np.float32),
        axes="YX",
        pixel_size=0.2,
    )
    _assert_failure_keeps_store(out, good, wrong_hr.name, lr=lr_path, hr=wrong_hr)
    with pytest.raises(InputError, match=r"64x80"):
        _ingest(lr_path, wrong_hr, out)

    one = _write_ome(
        tmp_path / "one.ome.tif",
        rng.integers(1, 99, (1, 32, 40), dtype=np.uint16),
        axes="TYX",
        pixel_size=0.4,
    )
    # One frame is a valid pair now (tests/test_single_frame.py), not a failure.
    _ingest(one, hr_path, tmp_path / "one.zarr")
    assert read_fov(tmp_path / "one.zarr")[0].shape == (1, 32, 40)

    nan_hr = rng.random((64, 80), dtype=np.float32)
    nan_hr[3, 4] = np.nan
    nan_path = _write_ome(tmp_path / "nan.ome.tif", nan_hr, axes="YX", pixel_size=0.2)
    _assert_failure_keeps_store(out, good, nan_path.name, lr=lr_path, hr=nan_path)

    zero = _write_ome(tmp_path / "zero.ome.tif", np.zeros((4, 32, 40), np.uint16), axes="TYX", pixel_size=0.4)
    _assert_failure_keeps_store(out, good, zero.name, lr=zero, hr=hr_path)

    cut = tmp_path / "cut.ome.tif"
    raw = lr_path.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    _assert_failure_keeps_store(out, good, cut.name, lr=cut, hr=hr_path)


def test_ingest_write_failure_leaves_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lr_path, hr_path = _pair(tmp_path)
    out = tmp_path / "fov1.zarr"
    _ingest(lr_path, hr_path, out)
    good = read_fov(out)[0]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zarr.Group, "create_array", broken)
    lr2, hr2 = _pair(tmp_path, seed=5, name="again")
    with pytest.raises(OSError, match="disk full"):
        _ingest(lr2, hr2, out)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_fov(out)[0], good)
    assert _leftovers(tmp_path) == []


def test_read_fov_rejects_non_store(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a Zarr store"):
        read_fov(tmp_path)


# ------------------------------------------------------------------------------------------
# open_slide


def test_open_slide_svs_is_lazy_tiled_rgb() -> None:
    plane, meta = open_slide(SVS, channel=0)
    assert isinstance(plane, da.Array) and not isinstance(plane, np.ndarray)
    # The Aperio description says 2220x2967 (width x height): 2967 rows, 2220 columns.
    assert plane.shape == (2967, 2220)
    assert plane.dtype == np.uint8
    assert plane.chunksize == (240, 240)
    assert plane.npartitions > 1
    assert meta["format"] == "svs"
    assert meta["channels"] == 3
    assert meta["levels"] == 1
    assert meta["pixel_size_um"] == pytest.approx([0.499, 0.499])
    assert meta["shape"] == [2967, 2220]

    block = plane.blocks[3, 4].compute()
    with tifffile.TiffFile(SVS) as tf:
        reference = tf.pages[0].asarray()[720:960, 960:1200, 0]
    np.testing.assert_array_equal(block, reference)

    green, _ = open_slide(SVS, channel=1)
    assert not np.array_equal(green.blocks[3, 4].compute(), block)

    luma, luma_meta = open_slide(SVS, channel=None)
    assert luma.dtype == np.float32 and luma_meta["dtype"] == "float32"

    with pytest.raises(InputError, match="3 channels"):
        open_slide(SVS, channel=3)


def test_open_slide_oib() -> None:
    plane, meta = open_slide(OIB, channel=2)
    assert isinstance(plane, da.Array)
    assert plane.shape == (256, 256)
    np.testing.assert_array_equal(plane.compute(), read_series(OIB, channel=2)[0][0])
    assert meta["pixel_size_um"] == pytest.approx([0.177, 0.177], abs=1e-3)
    with pytest.raises(InputError, match="pass `channel`"):
        open_slide(OIB, channel=None)


def test_open_slide_pyramid_level_scales_pixel_size(tmp_path: Path) -> None:
    data = np.random.default_rng(4).integers(0, 255, (512, 768), dtype=np.uint8)
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            data,
            tile=(128, 128),
            subifds=1,
            metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        )
        tw.write(data[::2, ::2], tile=(128, 128), subfiletype=1)
    plane, meta = open_slide(path, level=1)
    assert plane.shape == (256, 384) and meta["levels"] == 2
    assert meta["pixel_size_um"] == pytest.approx([1.0, 1.0])
    np.testing.assert_array_equal(plane.compute(), data[::2, ::2])
    with pytest.raises(InputError, match="level 2"):
        open_slide(path, level=2)


def test_open_slide_zarr_and_ome_zarr(tmp_path: Path) -> None:
    data = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    plain = tmp_path / "plain.zarr"
    zarr.create_array(plain, data=data, chunks=(16, 16))
    plane, meta = open_slide(plain)
    assert isinstance(plane, da.Array) and plane.numblocks == (4, 3)
    np.testing.assert_array_equal(plane.compute(), data)
    assert meta["pixel_size_um"] is None

    ome = tmp_path / "slide.ome.zarr"
    group = zarr.open_group(ome, mode="w", zarr_format=3)
    group.create_array("0", data=data[None], chunks=(1, 16, 16))
    group.create_array("1", data=data[None, ::2, ::2], chunks=(1, 16, 16))
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 0.25, 0.25]}],
                    },
                    {
                        "path": "1",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}],
                    },
                ],
            }
        ],
    }
    plane, meta = open_slide(ome, level=1)
    assert plane.shape == (32, 24)
    np.testing.assert_array_equal(plane.compute(), data[::2, ::2])
    assert meta["format"] == "ome-zarr" and meta["levels"] == 2
    assert meta["pixel_size_um"] == pytest.approx([0.5, 0.5])


def test_open_slide_bad_paths(tmp_path: Path) -> None:
    folder = tmp_path / "not_a_store"
    folder.mkdir()
    with pytest.raises(InputError) as err:
        open_slide(folder)
    assert "not a Zarr store" in str(err.value) and folder.name in str(err.value)
    with pytest.raises(InputError, match="not found"):
        open_slide(tmp_path / "missing.svs")
    junk = tmp_path / "slide.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="unknown image format"):
        open_slide(junk)
    stack = _write_ome(tmp_path / "stack.ome.tif", np.ones((3, 8, 8), np.uint16), axes="TYX", pixel_size=0.2)
    with pytest.raises(InputError, match="single 2-D plane"):
        open_slide(stack)


def test_truncated_oib_names_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.oib"
    path.write_bytes(OIB.read_bytes()[:600_000])
    with pytest.raises(InputError) as err:
        read_series(path)
    assert path.name in str(err.value)


def test_ingest_simulated_fov(tmp_path):
    """The simulator writes what a microscope would; ingestion reads pixel sizes from its metadata."""
    from fastscan.io import ingest_fov, read_fov
    from fastscan.simulate import write_fov

    params = {"field_of_view_um": 25.6, "hr": {"pixels": 128}, "lr": {"pixels": 64, "frames": 4}}
    lr_path, hr_path = tmp_path / "f_lr.ome.tif", tmp_path / "f_hr.ome.tif"
    write_fov(lr_path=lr_path, hr_path=hr_path, truth_path=tmp_path / "f.json", specimen="tissue", seed=2, params=params)
    attrs = ingest_fov(lr=str(lr_path), hr=str(hr_path), out=tmp_path / "f.zarr", sample="tissue", session="s", fov="f")
    lr, hr, stored = read_fov(tmp_path / "f.zarr")
    assert lr.shape == (4, 64, 64) and lr.dtype == np.uint16 and hr.shape == (128, 128)
    assert attrs["lr_pixel_size_um"] == pytest.approx([0.4, 0.4]) and attrs["hr_pixel_size_um"] == pytest.approx([0.2, 0.2])
    assert stored["source"]["lr"]["significant_bits"] == 12
