"""Photon calibration (fastscan.photons) against the simulator, whose detector is known.

The simulator's detector (fastscan.simulate.detect) reads ``rint(pmt_gain * n + N(0, read_noise_du)
+ offset_du)`` with ``n ~ Poisson((photons_per_us * signal + dark_counts_per_us) * dwell_us)``:
the true gain is ``pmt_gain`` ADU per photon (no excess noise), the offset ``offset_du`` (the
ADU of zero electrons; dark counts are electrons), and the additive noise at zero photons
``sqrt(read_noise_du**2 + 1/12)`` (the 1/12 ADU**2 of the integer rounding).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from fastscan import register as reg
from fastscan import simulate as sim
from fastscan.photons import (
    PhotonCalibration,
    calibrate_series,
    curve_from_text,
    curve_to_text,
    generalized_anscombe,
    inverse_generalized_anscombe,
)

DATA = Path(__file__).resolve().parent / "data"
# 51.2 µm at the default pixel sizes: 128 x 128 LR pixels, 100 frames.
MID = {"field_of_view_um": 51.2, "hr": {"pixels": 256}, "lr": {"pixels": 128, "frames": 100}}
GAIN_TOLERANCE = 0.10


def merged(*overrides: dict) -> dict:
    out: dict = {}
    for o in overrides:
        for key, value in o.items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def specimen(params: dict, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A specimen centred on the field with a 3 µm margin on each side."""
    ps = params["specimen_pixel_size_um"]
    size = int(math.ceil((params["field_of_view_um"] + 6.0) / ps))
    return sim.render_specimen(kind, shape=(size, size), pixel_size_um=ps, rng=rng)


def simulated_series(overrides: dict, *, kind: str, seed: int):
    """``(series, params, specimen, truth)`` of a simulated FOV."""
    params = sim.resolve_params(merged(MID, overrides))
    rng = np.random.default_rng(seed)
    spec = specimen(params, kind, rng)
    series, truth = sim.acquire_lr_series(spec, params=params, rng=rng)
    return series, params, spec, truth


def true_read_noise(detector: dict) -> float:
    return math.sqrt(detector["read_noise_du"] ** 2 + 1.0 / 12.0)


def relative_error(value: float, truth: float) -> float:
    return value / truth - 1.0


# --------------------------------------------------------------------------------------------
# accuracy on simulated series


CASES = [
    # (specimen, detector overrides): gains 2-20 ADU per photon, 5-60 photons at the brightest
    # structures, read noise 2-8 ADU.
    ("mitochondria", {}),
    ("tissue", {"detector": {"pmt_gain": 2.0}}),
    ("tissue", {"detector": {"pmt_gain": 20.0, "read_noise_du": 2.0}}),
    ("mitochondria", {"detector": {"pmt_gain": 4.0, "photons_per_us": 10.0}}),
    ("tissue", {"detector": {"read_noise_du": 8.0, "photons_per_us": 120.0}}),
]


@pytest.mark.parametrize(("kind", "overrides"), CASES)
def test_calibration_recovers_the_simulated_detector(kind, overrides):
    series, params, spec, _ = simulated_series(merged(overrides, {"lr": {"drift_um_per_frame": 0.0}}), kind=kind, seed=3)
    det = params["detector"]
    cal = calibrate_series(series, saturation=2 ** det["bits"] - 1)
    print(
        f"{kind} {overrides}: gain {cal.gain_adu_per_photon:.3f} (true {det['pmt_gain']}), "
        f"offset {cal.offset_adu:.2f} ({det['offset_du']}), read noise "
        f"{cal.read_noise_adu:.2f} ({true_read_noise(det):.2f}), r2 {cal.r2:.4f}"
    )
    assert cal.complete and cal.reason is None
    assert abs(relative_error(cal.gain_adu_per_photon, det["pmt_gain"])) < GAIN_TOLERANCE
    # Offset within a fifth of a photon (plus half an ADU; the last case, read noise as wide
    # as a photon over a background of 4 photons, barely shows the zero-photon peak), read
    # noise within 10 %.
    assert abs(cal.offset_adu - det["offset_du"]) < 0.2 * det["pmt_gain"] + 0.5
    assert abs(relative_error(cal.read_noise_adu, true_read_noise(det))) < 0.10
    assert cal.r2 > 0.9 and cal.n_pixels_used > 0.8 * cal.n_pixels

    # Photons per pixel: the mean of the bright pixels against the simulator's expectation.
    expected = (sim.lr_signal(spec, params=params)[0] * det["photons_per_us"] + det["dark_counts_per_us"]) * params["lr"]["dwell_us"]
    bright = expected >= np.quantile(expected, 0.9)
    measured = cal.photons(series.mean(axis=0))
    assert measured.shape == expected.shape
    assert abs(relative_error(measured[bright].mean(), expected[bright].mean())) < 0.10


def test_the_variance_floor_alone_overestimates_the_read_noise():
    """The zero-photon peak fit is needed: dark pixels hold 0.1 dark photons of 8 ADU each."""
    series, params, _, _ = simulated_series({"lr": {"drift_um_per_frame": 0.0}}, kind="mitochondria", seed=3)
    cal = calibrate_series(series, saturation=4095)
    floor = math.sqrt(cal.variance(cal.dark_level_adu))  # what lambda = 0 would report
    truth = true_read_noise(params["detector"])
    print(f"read noise: fit {cal.read_noise_adu:.2f}, variance floor {floor:.2f}, true {truth:.2f}")
    assert abs(cal.read_noise_adu - truth) < 0.1 * truth < floor - truth


def test_registration_stores_the_calibration(tmp_path):
    """register_fov calibrates the raw frames (the simulator's default drift) and records it."""
    params = sim.resolve_params(MID)
    rng = np.random.default_rng(0)
    spec = specimen(params, "mitochondria", rng)
    hr = sim.acquire_hr(spec, params=params, rng=rng)
    lr, _ = sim.acquire_lr_series(spec, params=params, rng=rng)
    src = tmp_path / "ingest.zarr"
    group = zarr.open_group(str(src), mode="w")
    group.create_array("lr", data=lr, chunks=(1, *lr.shape[1:]))
    group.create_array("hr", data=hr.astype(np.float32), chunks=hr.shape)
    group.attrs["fastscan"] = {
        "kind": "fov",
        "sample": "mito",
        "session": "s01",
        "fov": "f1",
        "channel": 0,
        "scale": 2,
        "lr_pixel_size_um": [0.4, 0.4],
        "hr_pixel_size_um": [0.2, 0.2],
        "source": {"lr": {"path": "lr.tif", "significant_bits": 12}, "hr": {"path": "hr.tif"}},
    }
    out, qc = tmp_path / "f1.zarr", tmp_path / "f1.qc.tsv"
    row = reg.register_fov(src, out, qc=qc)
    det = params["detector"]

    assert list(row) == list(reg.QC_COLUMNS)
    assert list(reg.QC_COLUMNS[:12]) == [
        "sample",
        "session",
        "fov",
        "frames",
        "ncc",
        "line_phase_px",
        "field_fraction",
        "hr_shift_dy",
        "hr_shift_dx",
        "drift_rms_px",
        "residual_drift_px",
        "passed",
    ]
    assert abs(relative_error(row["gain_adu_per_photon"], det["pmt_gain"])) < GAIN_TOLERANCE
    assert abs(row["offset_adu"] - det["offset_du"]) < 1.0
    assert abs(relative_error(row["read_noise_adu"], true_read_noise(det))) < 0.10
    # The median pixel of a mitochondria field is background: dark counts and a little signal.
    assert 0.05 < row["photons_at_median"] < 1.0

    photons = zarr.open_group(str(out), mode="r").attrs["fastscan"]["registration"]["photons"]
    json.dumps(photons, allow_nan=False)  # NaN never reaches the attributes
    assert photons["gain_adu_per_photon"] == pytest.approx(row["gain_adu_per_photon"])
    assert photons["photons_at_median"] == pytest.approx(row["photons_at_median"])
    assert photons["frames"] == 100 and photons["reason"] is None
    assert PhotonCalibration.from_summary(photons).complete

    table = reg.read_qc(qc)
    assert list(table.columns) == list(reg.QC_COLUMNS)
    mean, variance = curve_from_text(table.loc[0, "photon_curve"])
    assert mean.size >= 4 and np.all(np.diff(mean) > 0) and np.all(variance > 0)

    # The choice of raw over registered frames: the registered ones are interpolated, which
    # averages neighbouring pixels' noise and lowers the slope (-19 % here).
    registered = calibrate_series(zarr.open_group(str(out), mode="r")["lr"][...])
    raw_error = abs(relative_error(row["gain_adu_per_photon"], det["pmt_gain"]))
    registered_error = abs(relative_error(registered.gain_adu_per_photon, det["pmt_gain"]))
    print(f"gain error: raw frames {raw_error:.3f}, registered frames {registered_error:.3f}")
    assert registered_error > 2 * raw_error


# --------------------------------------------------------------------------------------------
# what must not bias it


def _blinking_and_moving(kind: str, seed: int):
    """A static field plus puncta blinking at random and vesicles crossing it."""
    params = sim.resolve_params(merged(MID, {"lr": {"drift_um_per_frame": 0.0}}))
    rng = np.random.default_rng(seed)
    signal = np.repeat(sim.lr_signal(specimen(params, kind, rng), params=params), 100, axis=0)
    t, n, _ = signal.shape
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    puncta = rng.uniform(0, n, (150, 2))
    start, velocity = rng.uniform(0, n, (12, 2)), rng.uniform(-1.0, 1.0, (12, 2))
    for k in range(t):
        for y, x in puncta[rng.random(len(puncta)) < 0.5]:
            signal[k] += 0.7 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2**2))
        for (y, x), (vy, vx) in zip(start, velocity, strict=True):
            cy, cx = (y + vy * k) % n, (x + vx * k) % n
            signal[k] += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
    frames = sim.detect(signal, dwell_us=params["lr"]["dwell_us"], detector=params["detector"], rng=rng)
    return frames, params


@pytest.mark.parametrize(("kind", "seed"), [("mitochondria", 12), ("tissue", 11)])
def test_moving_and_blinking_structures_do_not_bias_the_gain(kind, seed):
    frames, params = _blinking_and_moving(kind, seed=seed)
    gain = params["detector"]["pmt_gain"]
    cal = calibrate_series(frames, saturation=4095)
    # The same fit with the moving-pixel tests switched off.
    blind = calibrate_series(frames, saturation=4095, motion_sigma=1e9, excess_sigma=1e9)
    print(
        f"{kind}: gain {cal.gain_adu_per_photon:.3f} with, {blind.gain_adu_per_photon:.3f} "
        f"without the moving-pixel tests (true {gain}); {cal.n_pixels_used} of "
        f"{cal.n_pixels} pixels used"
    )
    assert abs(relative_error(cal.gain_adu_per_photon, gain)) < GAIN_TOLERANCE
    # Without them the line is pulled up, or the curve is so bent that it is refused.
    assert not blind.measurable or relative_error(blind.gain_adu_per_photon, gain) > 0.2
    assert cal.n_pixels_used < blind.n_pixels_used
    assert abs(cal.offset_adu - params["detector"]["offset_du"]) < 1.0


def test_saturated_pixels_are_left_out():
    # 1200 photons at the brightest structures: 16 % of the pixels clip at 4095 ADU.
    series, params, _, _ = simulated_series(
        {"detector": {"photons_per_us": 2400.0}, "lr": {"drift_um_per_frame": 0.0}},
        kind="tissue",
        seed=5,
    )
    assert (series == 4095).any(axis=0).mean() > 0.1
    det = params["detector"]

    def line(mean):
        return det["pmt_gain"] * (np.asarray(mean) - det["offset_du"]) + true_read_noise(det) ** 2

    cal = calibrate_series(series, saturation=4095)
    # uint16 frames whose 12-bit top is not declared: the dtype maximum is never reached.
    blind = calibrate_series(series)
    ratio = np.asarray(cal.curve_variance) / line(cal.curve_mean)
    blind_ratio = np.asarray(blind.curve_variance) / line(blind.curve_mean)
    print(
        f"gain {cal.gain_adu_per_photon:.3f} (r2 {cal.r2:.4f}, curve/line {ratio.min():.2f}-"
        f"{ratio.max():.2f}); without the 12-bit top {blind.gain_adu_per_photon:.3f} (r2 "
        f"{blind.r2:.4f}, curve/line down to {blind_ratio.min():.2f})"
    )
    assert abs(relative_error(cal.gain_adu_per_photon, det["pmt_gain"])) < GAIN_TOLERANCE
    assert np.all(np.abs(ratio - 1) < 0.1) and cal.r2 > 0.99
    # Clipped pixels have the variance of a truncated distribution: the top of the curve
    # collapses to a fifth of the line, and the bent curve is refused (r2 below 0.5) or, with
    # fewer clipped pixels, fitted with a poor r2.
    assert blind_ratio.min() < 0.5 and blind.r2 < 0.9


def test_clipped_background_measures_the_gain_only():
    """An offset below the dark level piles the background up at 0 ADU."""
    series, params, _, _ = simulated_series(
        {"detector": {"offset_du": 2.0}, "lr": {"drift_um_per_frame": 0.0}},
        kind="tissue",
        seed=4,
    )
    assert (series == 0).any()
    cal = calibrate_series(series, saturation=4095)
    assert cal.measurable and not cal.complete
    assert abs(relative_error(cal.gain_adu_per_photon, params["detector"]["pmt_gain"])) < 0.1
    assert math.isnan(cal.offset_adu) and math.isnan(cal.read_noise_adu)
    assert "bottom of the ADC range" in cal.reason
    assert math.isnan(cal.photons(500.0))
    summary = cal.summary(median_adu=300.0)
    assert summary["offset_adu"] is None and summary["photons_at_median"] is None
    json.dumps(summary, allow_nan=False)


# --------------------------------------------------------------------------------------------
# not measurable


@pytest.mark.parametrize("shape", [(64, 64), (1, 64, 64)])
def test_one_frame_is_not_measurable(shape):
    frame = np.random.default_rng(0).poisson(20.0, shape).astype(np.uint16)
    cal = calibrate_series(frame)
    assert not cal.measurable and cal.frames == 1
    assert "1 frame(s)" in cal.reason and "at least 2 frames" in cal.reason
    assert math.isnan(cal.gain_adu_per_photon) and math.isnan(cal.photons(100.0))
    summary = cal.summary(median_adu=20.0)
    assert summary["gain_adu_per_photon"] is None and summary["photons_at_median"] is None
    assert PhotonCalibration.from_summary(summary).reason == cal.reason
    assert curve_to_text(cal) == ""


def test_the_real_oib_is_one_scan_per_channel():
    """The Olympus test file holds one frame per channel: no temporal curve, and it says so."""
    from fastscan.io import read_series

    frames, meta = read_series(DATA / "mitoegfp_fv1000.oib", channel=0)
    assert frames.shape[0] == 1
    cal = calibrate_series(frames, saturation=2 ** meta["significant_bits"] - 1)
    assert not cal.measurable and "1 frame(s)" in cal.reason


def test_noise_free_or_flat_series_is_not_measurable():
    rng = np.random.default_rng(1)
    flat = np.full((10, 32, 32), 100, dtype=np.uint16)
    assert not calibrate_series(flat).measurable
    # Frames whose noise does not grow with the signal (already denoised, additive noise only).
    ramp = np.linspace(100, 1000, 64)[None, None, :] * np.ones((20, 64, 1))
    cal = calibrate_series(ramp + rng.normal(0, 3, ramp.shape))
    assert not cal.measurable and "does not grow along a line" in cal.reason


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        calibrate_series(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="signal has shape"):
        calibrate_series(np.zeros((3, 4, 4)), signal=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="bins"):
        calibrate_series(np.zeros((3, 4, 4)), bins=2)
    with pytest.raises(ValueError, match="lacks"):
        PhotonCalibration.from_summary({"offset_adu": 1.0})
    with pytest.raises(ValueError, match="mean:variance"):
        curve_from_text("1:2;3")


# --------------------------------------------------------------------------------------------
# the calibrated simulator


def _binned_curve(series, edges):
    mean = series.mean(axis=0)
    var = np.sum(np.diff(series.astype(np.float64), axis=0) ** 2, axis=0) / (2 * (series.shape[0] - 1))
    index = np.digitize(mean, edges)
    # NaN where a series has no pixel at that signal.
    return np.array([var[index == k].mean() if np.any(index == k) else np.nan for k in range(1, len(edges))])


def test_calibrated_simulator_reproduces_the_mean_variance_curve():
    """A stand-in for a real series: the OIB in tests/data is one scan, not a series.

    The "measured" series has a detector unknown to the simulator's defaults; the simulator
    run with the fitted gain, offset and read noise reproduces its mean-variance curve, the
    default detector does not.
    """
    hidden = {"pmt_gain": 5.5, "read_noise_du": 4.5, "offset_du": 60.0, "photons_per_us": 60.0}
    measured, params, spec, _ = simulated_series({"detector": hidden, "lr": {"drift_um_per_frame": 0.0}}, kind="tissue", seed=8)
    cal = calibrate_series(measured, saturation=4095)
    fitted = {
        "pmt_gain": cal.gain_adu_per_photon,
        "offset_du": cal.offset_adu,
        "read_noise_du": math.sqrt(max(cal.read_noise_adu**2 - 1.0 / 12.0, 0.0)),
        "photons_per_us": hidden["photons_per_us"],
    }

    def resimulate(detector):
        p = sim.resolve_params(merged(MID, {"detector": detector, "lr": {"drift_um_per_frame": 0.0}}))
        return sim.acquire_lr_series(spec, params=p, rng=np.random.default_rng(99))[0]

    edges = np.quantile(measured.mean(axis=0), np.linspace(0.02, 0.98, 13))
    target = _binned_curve(measured, edges)
    reproduced = _binned_curve(resimulate(fitted), edges)
    default = _binned_curve(resimulate({"photons_per_us": hidden["photons_per_us"]}), edges)
    err = np.abs(reproduced / target - 1)
    # The default detector (offset 100 ADU) has no pixel at the lowest signals: compare the rest.
    err_default = np.abs(default / target - 1)
    print(f"curve error: calibrated max {err.max():.3f}, default detector max {np.nanmax(err_default):.3f} over {np.isfinite(err_default).sum()} bins")
    assert np.isfinite(err).all() and err.max() < 0.10
    assert np.isfinite(err_default).sum() >= 3 and np.nanmax(err_default) > 0.3


# --------------------------------------------------------------------------------------------
# variance stabilisation


def test_generalized_anscombe_stabilises_and_inverts_without_bias():
    cal = PhotonCalibration(
        gain_adu_per_photon=8.0,
        offset_adu=100.0,
        read_noise_adu=3.0,
        variance_intercept_adu2=9.0 - 8.0 * 100.0,
        frames=100,
    )
    rng = np.random.default_rng(2)
    for lam in (0.5, 2.0, 10.0, 50.0):
        adu = 8.0 * rng.poisson(lam, 200_000) + rng.normal(0.0, 3.0, 200_000) + 100.0
        stabilised = generalized_anscombe(adu, cal)
        # Below a photon or two no transform of Poisson data stabilises exactly (0.84 here).
        if lam >= 2.0:
            assert stabilised.std() == pytest.approx(1.0, abs=0.05)
        # The denoiser's ideal output is the expectation of the stabilised value: its inverse
        # must be the mean signal, which the algebraic inverse of the square root misses.
        unbiased = inverse_generalized_anscombe(np.array([stabilised.mean()]), cal)[0]
        algebraic = (stabilised.mean() * 8.0 / 2.0) ** 2 / 8.0 - 0.375 * 8.0 - cal.variance_intercept_adu2 / 8.0
        truth = 100.0 + 8.0 * lam
        # Within 0.05 photons (the closed form's own error, largest below a photon); the
        # algebraic inverse misses by 0.17-0.27 photons.
        assert abs(unbiased - truth) < 0.05 * 8.0
        assert abs(algebraic - truth) > 2 * abs(unbiased - truth)
    # The same from the summary stored in the registration attributes.
    summary = cal.summary()
    np.testing.assert_allclose(generalized_anscombe([150.0], summary), generalized_anscombe([150.0], cal))
    with pytest.raises(ValueError, match="no measured noise line"):
        generalized_anscombe([1.0], calibrate_series(np.zeros((1, 4, 4))))


# --------------------------------------------------------------------------------------------
# restoration wiring


def test_restore_fov_hands_the_calibration_to_the_classical_cascade(tmp_path, monkeypatch):
    """restore_fov passes registration.photons and the model's LR range to the cascade."""
    pytest.importorskip("torch")
    import fastscan.classical
    import fastscan.models
    from fastscan.restore.fov import restore_fov

    photons = {"gain_adu_per_photon": 8.0, "variance_intercept_adu2": -791.0, "frames": 100}
    store = zarr.open_group(str(tmp_path / "reg.zarr"), mode="w")
    store.create_array("lr", data=np.full((2, 16, 16), 150.0, dtype=np.float32))
    store.create_array("hr", data=np.zeros((32, 32), dtype=np.float32))
    store.attrs["fastscan"] = {
        "scale": 2,
        "registration": {"line_phase_px": 0.5, "field_fraction": 0.8, "photons": photons},
    }
    meta = {"normalisation": {"lr": [100.0, 300.0], "hr": [0.0, 1.0]}, "scale": 2}
    monkeypatch.setattr(fastscan.models, "load_generator", lambda path, device="cpu": (None, meta))
    seen: dict = {}

    class Handed(Exception):
        pass

    def spy(frames, **kwargs):
        seen.update(kwargs, frames=frames)
        raise Handed

    monkeypatch.setattr(fastscan.classical, "restore_classical", spy)
    with pytest.raises(Handed):
        restore_fov(tmp_path / "reg.zarr", tmp_path / "out.zarr", models={"mse": "m"}, frames=2)
    assert seen["calibration"] == photons and list(seen["normalisation"]) == [100.0, 300.0]
    np.testing.assert_allclose(seen["frames"], 0.25)
    assert not (tmp_path / "out.zarr").exists()
