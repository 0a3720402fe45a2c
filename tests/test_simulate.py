"""Tests of the acquisition simulator: scan geometry, detector statistics, files."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.registration import phase_cross_correlation

from fastscan import scan
from fastscan import simulate as sim
from fastscan.simulate.specimens import _build_scene

# A 25.6 µm field keeps the default pixel sizes (0.4 µm LR, 0.2 µm HR) at a sixteenth of the work.
SMALL = {
    "field_of_view_um": 25.6,
    "hr": {"pixels": 128},
    "lr": {"pixels": 64, "frames": 5},
}
PS = 0.05  # specimen pixel size, µm
BRIGHT = {"detector": {"photons_per_us": 400.0}}  # noise-free geometry checks stay below 12 bits


def merged(*overrides: dict) -> dict:
    out: dict = {}
    for o in overrides:
        for key, value in o.items():
            if isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def field_axis(fov: float, pixel_size: float = PS) -> np.ndarray:
    """Pixel-centre coordinates (µm) of a specimen that exactly covers the field."""
    return (np.arange(int(round(fov / pixel_size))) + 0.5) * pixel_size


def vertical_line(fov: float, x0: float, sigma: float = 0.1) -> np.ndarray:
    x = field_axis(fov)
    row = np.exp(-0.5 * ((x - x0) / sigma) ** 2)
    return np.broadcast_to(row, (x.size, x.size)).astype(np.float32)


def expected_resonant_column(x_um: float, n: int, lr_px: float, field_fraction: float) -> float:
    """Display column whose resonant sample lands at field position ``x_um``."""
    half = field_fraction * math.pi / 2
    u = (x_um / lr_px - 0.5) / ((n - 1) / 2) - 1
    phi = math.asin(u * math.sin(half))
    return (phi + half) / (field_fraction * math.pi / (n - 1))


def centroid(profile: np.ndarray, around: int, half: int = 5) -> float:
    idx = np.arange(around - half, around + half + 1)
    w = profile[idx]
    return float((idx * w).sum() / w.sum())


def crossing(row: np.ndarray, level: float) -> float:
    """Sub-pixel position where an increasing row first reaches ``level``."""
    k = int(np.argmax(row >= level))
    return k - 1 + (level - row[k - 1]) / (row[k] - row[k - 1])


# --------------------------------------------------------------------------------------------
# parameters


def test_resolve_params_defaults_and_merge() -> None:
    p = sim.resolve_params({"lr": {"frames": 7}, "detector": {"bits": 14}})
    assert p["lr"]["frames"] == 7
    assert p["lr"]["pixels"] == 256
    assert p["detector"]["bits"] == 14
    assert p["lr"]["offset_um"] == [0.0, 0.0]
    assert sim.DEFAULTS["lr"]["frames"] == 100  # not mutated
    assert sim.resolve_params(p) == p
    assert sim.resolve_params(None) == sim.resolve_params({})
    json.dumps(p)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"bogus": 1}, "'bogus'"),
        ({"lr": {"pixel": 64}}, "'lr.pixel'"),
        ({"detector": {"gain": 2.0}}, "'detector.gain'"),
    ],
)
def test_resolve_params_rejects_unknown_keys(overrides: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        sim.resolve_params(overrides)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"lr": 5}, "'lr'"),
        ({"lr": {"field_fraction": 1.2}}, "'lr.field_fraction'"),
        ({"hr": {"pixels": 0}}, "'hr.pixels'"),
        ({"lr": {"offset_um": [1.0]}}, "'lr.offset_um'"),
        ({"detector": {"bits": 20}}, "'detector.bits'"),
    ],
)
def test_resolve_params_rejects_bad_values(overrides: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        sim.resolve_params(overrides)


# --------------------------------------------------------------------------------------------
# resonant geometry


@pytest.mark.parametrize("n", [16, 64, 256])
@pytest.mark.parametrize("field_fraction", [0.3, 0.8, 0.95])
def test_resonant_positions(n: int, field_fraction: float) -> None:
    u = scan.resonant_positions(n, field_fraction=field_fraction)
    assert u.shape == (n,)
    assert u[0] == pytest.approx(-1.0) and u[-1] == pytest.approx(1.0)
    spacing = np.diff(u)
    assert (spacing > 0).all()
    np.testing.assert_allclose(u, -u[::-1], atol=1e-12)
    # widest at the centre, narrowest at the edges, shrinking monotonically outwards
    middle = (n - 1) // 2
    assert spacing[middle] > spacing[0] and spacing[middle] > spacing[-1]
    assert (np.diff(spacing[: middle + 1]) > 0).all()
    expected_ratio = (field_fraction * math.pi / 2) / math.sin(field_fraction * math.pi / 2)
    centre = spacing[middle] * (n - 1) / 2
    assert centre == pytest.approx(expected_ratio, rel=0.02)


def test_resonant_pixel_coordinates_approach_linear_grid() -> None:
    x = scan.nominal_columns(64, field_fraction=1e-4)
    np.testing.assert_allclose(x, np.arange(64), atol=1e-6)


def test_undistort_x_inverts_the_resonant_sampling() -> None:
    n, ff, phase = 128, 0.8, 0.6

    def truth(x):
        return np.sin(2 * np.pi * x / 41.0) + 0.3 * np.cos(2 * np.pi * x / 19.0)

    even = truth(scan.nominal_columns(n, field_fraction=ff))
    odd = truth(scan.nominal_columns(n, field_fraction=ff, phase_px=-phase))
    image = np.stack([even, odd] * 4)
    linear = scan.unwarp_resonant(image, field_fraction=ff, line_phase_px=phase)
    inner = slice(2, n - 2)
    np.testing.assert_allclose(linear[:, inner], np.broadcast_to(truth(np.arange(n)), image.shape)[:, inner], atol=0.02)


# --------------------------------------------------------------------------------------------
# geometry of the acquisitions (noise-free)


def test_vertical_line_lands_where_the_mappings_predict() -> None:
    params = sim.resolve_params(merged(SMALL, {"lr": {"line_phase_px": 0.6}}))
    fov, n, nh = params["field_of_view_um"], params["lr"]["pixels"], params["hr"]["pixels"]
    lr_px, hr_px, ff = fov / n, fov / nh, params["lr"]["field_fraction"]
    for x0 in (19.37, 5.11, 12.93):
        specimen = vertical_line(fov, x0)
        hr = sim.hr_signal(specimen, params=params)
        got = centroid(hr.mean(axis=0), int(round(x0 / hr_px - 0.5)))
        assert got == pytest.approx(x0 / hr_px - 0.5, abs=0.05)

        lr = sim.lr_signal(specimen, params=params)[0]
        expected = expected_resonant_column(x0, n, lr_px, ff)
        even = centroid(lr[0::2].mean(axis=0), int(round(expected)))
        odd = centroid(lr[1::2].mean(axis=0), int(round(expected + 0.6)))
        assert even == pytest.approx(expected, abs=0.1)
        assert odd == pytest.approx(expected + 0.6, abs=0.1)
        if abs(x0 - fov / 2) > 5:
            # the linear mapping would be far off: the distortion is real
            assert abs(expected - (x0 / lr_px - 0.5)) > 1.5


def test_horizontal_line_and_offset_follow_the_linear_slow_axis() -> None:
    offset = [0.6, -0.2]
    params = sim.resolve_params(merged(SMALL, {"lr": {"offset_um": offset}}))
    fov, n = params["field_of_view_um"], params["lr"]["pixels"]
    lr_px = fov / n
    y = field_axis(fov)
    y0 = 9.71
    column = np.exp(-0.5 * ((y - y0) / 0.5) ** 2)
    specimen = np.broadcast_to(column[:, None], (y.size, y.size)).astype(np.float32)
    lr = sim.lr_signal(specimen, params=params)[0]
    expected = (y0 + offset[0]) / lr_px - 0.5
    assert centroid(lr.mean(axis=1), int(round(expected))) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("line_phase", [0.6, -1.3])
def test_line_phase_between_even_and_odd_rows(line_phase: float) -> None:
    params = merged(SMALL, BRIGHT, {"lr": {"line_phase_px": line_phase, "frames": 1}})
    fov = params["field_of_view_um"]
    x = field_axis(fov)
    edge = 0.5 * (1 + np.tanh((x - 12.9) / 0.6))
    specimen = np.broadcast_to(edge, (x.size, x.size)).astype(np.float32)
    series, truth = sim.acquire_lr_series(specimen, params=params, rng=np.random.default_rng(0), noise=False)
    assert truth["line_phase_px"] == line_phase
    frame = series[0].astype(np.float64)
    level = 0.5 * (frame[:, :3].mean() + frame[:, -3:].mean())
    even = np.mean([crossing(r, level) for r in frame[0::2]])
    odd = np.mean([crossing(r, level) for r in frame[1::2]])
    assert odd - even == pytest.approx(line_phase, abs=0.1)


def blobs(fov: float, margin: float, *, count: int, seed: int) -> np.ndarray:
    """Isolated Gaussian blobs on a dark background, away from the field's borders."""
    rng = np.random.default_rng(seed)
    axis = field_axis(fov + 2 * margin) - margin
    out = np.zeros((axis.size, axis.size), dtype=np.float32)
    for _ in range(count):
        y0, x0 = rng.uniform(4.0, fov - 4.0, 2)
        sigma = rng.uniform(0.5, 0.8)
        g = np.exp(-0.5 * ((axis[:, None] - y0) ** 2 + (axis[None, :] - x0) ** 2) / sigma**2)
        out += rng.uniform(0.5, 1.0) * g.astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def test_drift_in_truth_matches_measured_frame_shifts() -> None:
    fov = 51.2
    params = merged(
        BRIGHT,
        {
            "field_of_view_um": fov,
            "hr": {"pixels": 256},
            "lr": {"pixels": 128, "frames": 4, "drift_um_per_frame": 0.15},
        },
    )
    specimen = blobs(fov, 2.8, count=40, seed=11)
    series, truth = sim.acquire_lr_series(specimen, params=params, rng=np.random.default_rng(11), noise=False)
    drift = np.asarray(truth["drift_px"])
    assert drift.shape == (4, 2)
    np.testing.assert_array_equal(drift[0], [0.0, 0.0])
    assert np.abs(drift[1:]).max() > 0.2  # large enough to be measured
    linear = scan.unwarp_resonant(series, field_fraction=truth["field_fraction"], line_phase_px=truth["line_phase_px"])
    for t in range(1, 4):
        # The shift that registers frame t onto frame 0 is minus the displacement of its content.
        # Plain cross-correlation: whitening would lock onto the row-parity pattern that the
        # interpolation of the odd rows leaves behind.
        shift, _, _ = phase_cross_correlation(linear[0], linear[t], upsample_factor=100, normalization=None)
        np.testing.assert_allclose(-shift, drift[t], atol=0.1)


# --------------------------------------------------------------------------------------------
# detector statistics


def test_lr_photon_levels_and_value_range() -> None:
    params = sim.resolve_params(merged(SMALL, {"lr": {"drift_um_per_frame": 0.0}}))
    rng = np.random.default_rng(5)
    specimen = sim.render_specimen("mitochondria", shape=(632, 632), pixel_size_um=PS, rng=rng)
    series, truth = sim.acquire_lr_series(specimen, params=params, rng=rng)
    assert series.dtype == np.uint16
    assert series.shape == (5, 64, 64)
    assert series.max() <= 4095
    det = params["detector"]
    photons = (series.astype(np.float64) - det["offset_du"]) / det["pmt_gain"]
    signal = sim.lr_signal(specimen, params=params)[0]
    bright = signal >= np.quantile(signal, 0.99)
    assert 5.0 <= photons[:, bright].mean() <= 20.0
    dark = signal < 0.005
    assert photons[:, dark].mean() < 0.5  # dark counts only: 0.1 per pixel
    # Poisson photoelectrons through a gain of 8 plus read noise: var = g^2 n + r^2
    frames = sim.acquire_lr_series(specimen, params=merged(params, {"lr": {"frames": 60}}), rng=rng)[0]
    du = frames[:, bright].astype(np.float64)
    mean_photons = (du.mean(axis=0) - det["offset_du"]) / det["pmt_gain"]
    expected_var = det["pmt_gain"] ** 2 * mean_photons + det["read_noise_du"] ** 2
    assert du.var(axis=0, ddof=1).mean() / expected_var.mean() == pytest.approx(1.0, abs=0.1)


def test_hr_levels_and_averaging() -> None:
    params = sim.resolve_params(SMALL)
    rng = np.random.default_rng(6)
    specimen = sim.render_specimen("tissue", shape=(632, 632), pixel_size_um=PS, rng=rng)
    hr = sim.acquire_hr(specimen, params=params, rng=rng)
    assert hr.dtype == np.uint16 and hr.shape == (128, 128)
    assert hr.max() <= 4095
    clean = sim.acquire_hr(specimen, params=params, rng=rng, noise=False).astype(np.float64)
    det = params["detector"]
    signal = sim.hr_signal(specimen, params=params)
    expected = det["pmt_gain"] * (signal * det["photons_per_us"] + det["dark_counts_per_us"]) * 10.0 + det["offset_du"]
    np.testing.assert_allclose(clean, expected, atol=0.5 + 1e-6)
    # averaging four frames halves the noise of one
    residual = hr - clean
    single_sd = np.sqrt(det["pmt_gain"] * (clean - det["offset_du"]) + det["read_noise_du"] ** 2)
    assert (residual / single_sd).std() == pytest.approx(0.5, abs=0.06)


def test_detect_clips_to_the_bit_depth() -> None:
    det = sim.resolve_params({"detector": {"bits": 10}})["detector"]
    out = sim.detect(np.full((10, 10), 5.0), dwell_us=10.0, detector=det, rng=np.random.default_rng(0))
    assert out.dtype == np.uint16 and out.max() == 1023


# --------------------------------------------------------------------------------------------
# specimens


@pytest.mark.parametrize("kind", sim.SPECIMENS)
def test_render_specimen_range_and_determinism(kind: str) -> None:
    a = sim.render_specimen(kind, shape=(400, 300), pixel_size_um=PS, rng=np.random.default_rng(1))
    b = sim.render_specimen(kind, shape=(400, 300), pixel_size_um=PS, rng=np.random.default_rng(1))
    c = sim.render_specimen(kind, shape=(400, 300), pixel_size_um=PS, rng=np.random.default_rng(2))
    assert a.dtype == np.float32 and a.shape == (400, 300)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.max() > 0.3
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", sim.SPECIMENS)
def test_render_specimen_is_resolution_independent(kind: str) -> None:
    fine = sim.render_specimen(kind, shape=(800, 800), pixel_size_um=0.05, rng=np.random.default_rng(4))
    coarse = sim.render_specimen(kind, shape=(400, 400), pixel_size_um=0.1, rng=np.random.default_rng(4))
    binned = fine.reshape(400, 2, 400, 2).mean(axis=(1, 3))
    assert np.corrcoef(binned.ravel(), coarse.ravel())[0, 1] > 0.95


def test_render_specimen_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="mitochondria"):
        sim.render_specimen("bacteria", shape=(10, 10), pixel_size_um=PS, rng=np.random.default_rng(0))


def test_scene_windows_join_seamlessly() -> None:
    # What write_slide relies on: rendering a scene in blocks equals rendering it at once.
    scene = _build_scene("tissue", (40.0, 40.0), np.random.default_rng(3))
    whole = scene.render(origin=(0.0, 0.0), shape=(400, 400), pixel_size=0.1)
    top = scene.render(origin=(0.0, 0.0), shape=(200, 400), pixel_size=0.1)
    bottom = scene.render(origin=(20.0, 0.0), shape=(200, 400), pixel_size=0.1)
    np.testing.assert_allclose(np.concatenate([top, bottom]), whole, atol=2e-3)


# --------------------------------------------------------------------------------------------
# files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ome_pixels(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]


def test_write_fov_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    paths = {
        "lr_path": out / "f1_lr.ome.tif",
        "hr_path": out / "f1_hr.ome.tif",
        "truth_path": out / "f1_truth.json",
    }
    truth = sim.write_fov(**paths, specimen="mitochondria", seed=3, params=SMALL)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())

    with tifffile.TiffFile(paths["lr_path"]) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "TYX"
        assert series.shape == (5, 64, 64)
        assert series.dtype == np.uint16
        lr = series.asarray()
    lr_meta = ome_pixels(paths["lr_path"])
    assert lr_meta["PhysicalSizeX"] == pytest.approx(0.4)
    assert lr_meta["PhysicalSizeY"] == pytest.approx(0.4)
    assert lr_meta["PhysicalSizeXUnit"] == "µm"
    assert lr_meta["SignificantBits"] == 12

    with tifffile.TiffFile(paths["hr_path"]) as tif:
        assert tif.series[0].axes == "YX"
        assert tif.series[0].shape == (128, 128)
        hr = tif.series[0].asarray()
    assert ome_pixels(paths["hr_path"])["PhysicalSizeX"] == pytest.approx(0.2)

    loaded = json.loads(paths["truth_path"].read_text(encoding="utf-8"))
    assert loaded == truth
    assert loaded["specimen"] == "mitochondria"
    assert loaded["seed"] == 3
    assert loaded["lr_pixel_size_um"] == pytest.approx(0.4)
    assert loaded["hr_pixel_size_um"] == pytest.approx(0.2)
    assert loaded["hr_to_lr_shift_px"] == [0.0, 0.0]
    assert len(loaded["drift_px"]) == 5
    assert loaded["params"]["lr"]["frames"] == 5

    # same seed: identical files; another seed: different data
    again = tmp_path / "again"
    sim.write_fov(
        **{k: again / p.name for k, p in paths.items()},
        specimen="mitochondria",
        seed=3,
        params=SMALL,
    )
    for p in paths.values():
        assert sha256(again / p.name) == sha256(p)
    other = tmp_path / "other"
    sim.write_fov(
        lr_path=other / "lr.ome.tif",
        hr_path=other / "hr.ome.tif",
        truth_path=other / "t.json",
        specimen="mitochondria",
        seed=4,
        params=SMALL,
    )
    assert not np.array_equal(tifffile.imread(other / "lr.ome.tif"), lr)
    assert not np.array_equal(tifffile.imread(other / "hr.ome.tif"), hr)


def test_write_fov_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bacteria"):
        sim.write_fov(
            lr_path=tmp_path / "lr.ome.tif",
            hr_path=tmp_path / "hr.ome.tif",
            truth_path=tmp_path / "t.json",
            specimen="bacteria",
            seed=0,
            params=SMALL,
        )
    assert list(tmp_path.iterdir()) == []


def test_write_slide_tiled_round_trip(tmp_path: Path) -> None:
    params = {"field_of_view_um": 25.6, "lr": {"pixels": 64}}
    path = tmp_path / "slides" / "s.ome.tif"
    info = sim.write_slide(path, shape_px=(300, 150), seed=2, params=params)
    assert info["pixel_size_um"] == pytest.approx(0.4)
    assert info["strip_width_px"] == 64
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert tif.series[0].axes == "YX"
        image = tif.series[0].asarray()
    assert image.shape == (300, 150) and image.dtype == np.uint16
    assert image.max() <= 4095
    assert ome_pixels(path)["PhysicalSizeX"] == pytest.approx(0.4)
    assert image.mean() > params.get("detector", {}).get("offset_du", 100.0) + 8  # not empty
    again = tmp_path / "again.ome.tif"
    sim.write_slide(again, shape_px=(300, 150), seed=2, params=params)
    np.testing.assert_array_equal(tifffile.imread(again), image)
    assert [p.name for p in path.parent.iterdir()] == ["s.ome.tif"]
