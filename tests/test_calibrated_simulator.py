"""The simulator calibrated to a microscope (fastscan.simulate.calibrated).

The simulator's detector reads ``rint(pmt_gain n + N(0, read_noise_du) + offset_du)`` with
``n ~ Poisson((photons_per_us s + dark_counts_per_us) dwell_us)``: its photon transfer line has
slope ``pmt_gain`` and read noise ``sqrt(read_noise_du**2 + 1/12)`` (tests/test_photons.py). A
calibrated simulator must give a series whose fitted line, noise at the background and signal
range are the measured series', and recover what registration measured on simulated FOVs whose
truth is known.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_registered as write_synthetic_registered

from fastscan import simulate as sim
from fastscan.io import ingest_fov, read_series
from fastscan.photons import calibrate_series
from fastscan.register import register_fov
from fastscan.simulate.calibrated import (
    LINEAR_FIELD_FRACTION,
    MIN_RESOLVED_FWHM_PX,
    calibrate_simulator,
    calibrated_params,
    estimate_psf_fwhm_um,
    measure_series,
    simulator_calibration,
)
from fastscan.stores import Registration, StoreError, read_registered, write_registered

DATA = Path(__file__).resolve().parent / "data"
FV1000 = DATA / "mitoegfp_fv1000.oib"


def _specimen(params: dict, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A specimen centred on the field with a 3 µm margin on each side."""
    ps = params["specimen_pixel_size_um"]
    size = int(math.ceil((params["field_of_view_um"] + 6.0) / ps))
    return sim.render_specimen(kind, shape=(size, size), pixel_size_um=ps, rng=rng)


# --------------------------------------------------------------------------------------------
# optical resolution


@pytest.mark.parametrize("psf", [0.3, 0.45, 0.6])
def test_psf_estimate_on_simulated_hr_targets(psf):
    """The PSF of simulated HR targets (102.4 µm, 0.2 µm pixels, default detector), mitochondria.

    Seen (seeds 1-3): 0.30-0.31, 0.46-0.47 and 0.61-0.63 µm for 0.3, 0.45 and 0.6 µm (at most
    +6 %). The apparent width the spectrum shows is 0.50-0.51, 0.61-0.62 and 0.73-0.75 µm: the
    simulated tubules and puncta are 0.3-0.6 µm wide, and without their width removed the
    0.3 µm PSF reads 68 % too wide. The tissue specimen's textures vary more between fields:
    -9 to +35 % at 0.3 µm, +6 to +27 % at 0.45 µm, +9 to +18 % at 0.6 µm (seeds 1-3).
    A 0.3 µm PSF is 1.5 HR pixels: it is resolved only as part of the 2.5-pixel total.
    """
    params = sim.resolve_params({"psf_fwhm_um": psf, "lr": {"frames": 1}})
    rng = np.random.default_rng(1)
    hr = sim.acquire_hr(_specimen(params, "mitochondria", rng), params=params, rng=rng)
    pixel = params["field_of_view_um"] / params["hr"]["pixels"]
    apparent = estimate_psf_fwhm_um(hr, pixel)
    # The reference specimen has another seed than the target: nothing of the target is reused.
    estimate = estimate_psf_fwhm_um(hr, pixel, specimen="mitochondria", seed=100)
    print(f"psf {psf}: apparent {apparent:.3f} µm, estimated {estimate:.3f} µm ({estimate / psf - 1:+.1%})")
    # 20 %: the task's bound; seen at most 6 %.
    assert abs(estimate / psf - 1.0) < 0.20
    # The specimen's own width is what separates the two: 0.2 µm or more here.
    assert apparent - estimate > 0.1


def _fourier_blur(image: np.ndarray, fwhm_px: float) -> np.ndarray:
    sigma = fwhm_px / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    k2 = np.fft.fftfreq(image.shape[0])[:, None] ** 2 + np.fft.fftfreq(image.shape[1])[None, :] ** 2
    return np.real(np.fft.ifft2(np.fft.fft2(image) * np.exp(-2.0 * math.pi**2 * sigma**2 * k2)))


def test_apparent_resolution_of_known_blurs_and_its_limits(caplog):
    """Random lines blurred by a known Gaussian; below 1.5 px the estimate is clamped; noise alone is refused."""
    rng = np.random.default_rng(0)
    lines = np.zeros((256, 256))
    for _ in range(120):
        y0, x0 = rng.integers(0, 256, 2)
        angle, length = rng.uniform(0, math.pi), int(rng.integers(20, 80))
        t = np.arange(length)
        lines[(y0 + t * np.sin(angle)).astype(int) % 256, (x0 + t * np.cos(angle)).astype(int) % 256] = 1.0
    for fwhm_px in (2.0, 4.0):
        image = _fourier_blur(1000.0 * lines, fwhm_px) + rng.normal(0.0, 2.0, lines.shape)
        # In µm at 0.25 µm pixels; lines are within 3 % of their blur down to 1.5 px.
        assert estimate_psf_fwhm_um(image, 0.25) == pytest.approx(0.25 * fwhm_px, rel=0.05)
    sharp = _fourier_blur(1000.0 * lines, 0.5) + rng.normal(0.0, 2.0, lines.shape)
    with caplog.at_level(logging.WARNING, logger="fastscan.simulate.calibrated"):
        assert estimate_psf_fwhm_um(sharp, 0.25) == pytest.approx(MIN_RESOLVED_FWHM_PX * 0.25)
    assert "cannot resolve" in caplog.text
    with pytest.raises(ValueError, match="no structure above its noise floor"):
        estimate_psf_fwhm_um(rng.normal(100.0, 5.0, (128, 128)), 0.2)
    with pytest.raises(ValueError, match="at least 32 x 32"):
        estimate_psf_fwhm_um(np.ones((16, 16)), 0.2)
    with pytest.raises(ValueError, match="positive"):
        estimate_psf_fwhm_um(sharp, 0.0)


# --------------------------------------------------------------------------------------------
# the real FV1000 file


def test_the_real_fv1000_image_calibrates_what_one_frame_can_tell(caplog):
    """The Olympus FV1000 OIB in tests/data is one scan per channel (tests/data/README.md).

    One frame has no temporal mean-variance curve, so the detector stays the simulator's, with a
    warning; the ADC depth (12 bits recorded), the frame size, the pixel size (0.177 µm) and the
    resolution are the file's. Seen: apparent FWHM 0.50 µm (2.8 px) for mito-EGFP with a
    40x water objective (the file does not record its NA; at NA 1.15 and 515 nm the
    diffraction-limited FWHM is about 0.23 µm; mitochondria are 0.3-0.7 µm thick), and a
    simulator PSF of 0.31 µm with which the
    simulated mitochondria look as sharp.
    """
    frames, meta = read_series(FV1000, channel=0)
    pixel = meta["pixel_size_um"][1]
    fov = measure_series(
        frames,
        lr_pixel_size_um=pixel,
        hr=frames[0],
        hr_pixel_size_um=pixel,
        scale=1,
        significant_bits=meta["significant_bits"],
        source=FV1000.name,
    )
    assert fov.frames == 1 and not fov.photons.measurable and "1 frame(s)" in fov.photons.reason
    with caplog.at_level(logging.WARNING, logger="fastscan.simulate.calibrated"):
        result = simulator_calibration([fov])
    print(f"FV1000: apparent FWHM {fov.hr_fwhm_um:.3f} µm, simulator PSF {result.params['psf_fwhm_um']:.3f} µm")
    assert "no FOV has a measurable photon calibration" in caplog.text and "1 frame(s)" in caplog.text
    params = result.params
    assert params["detector"] == {"bits": 12}
    assert params["lr"]["pixels"] == 256 and params["hr"]["pixels"] == 256
    assert params["field_of_view_um"] == pytest.approx(256 * 0.177)
    # Between the diffraction limit and the thickness of the thickest mitochondria.
    assert 0.23 < fov.hr_fwhm_um < 0.7
    assert 0.0 < params["psf_fwhm_um"] < fov.hr_fwhm_um
    resolved = sim.resolve_params(params)
    assert resolved["detector"]["pmt_gain"] == sim.DEFAULTS["detector"]["pmt_gain"]
    json.dumps(result.provenance, allow_nan=False)


# --------------------------------------------------------------------------------------------
# the mean-variance curve


# Detectors unknown to the calibration, given to a series whose specimen is the real FV1000
# mito-EGFP frame: an offset above the background, and an offset at the ADC's floor as in the
# real file (56 % of its pixels read 0), where offset and read noise are not measurable.
HIDDEN = {
    "offset measured": {"pmt_gain": 5.5, "offset_du": 60.0, "read_noise_du": 4.5, "photons_per_us": 240.0, "dark_counts_per_us": 0.4},
    "offset at the floor": {"pmt_gain": 3.0, "offset_du": 0.0, "read_noise_du": 3.0, "photons_per_us": 300.0, "dark_counts_per_us": 0.2},
}
FRAMES = 40
DWELL_US = 0.5


def _pixel_statistics(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Temporal mean and successive-difference variance per pixel (as the calibration takes them)."""
    s = np.asarray(series, dtype=np.float64)
    return s.mean(axis=0), np.sum(np.diff(s, axis=0) ** 2, axis=0) / (2 * (s.shape[0] - 1))


def _binned(mean: np.ndarray, var: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean variance per bin of mean signal; NaN for bins with fewer than 20 pixels."""
    index = np.digitize(mean, edges)
    return np.array([var[index == k].mean() if np.sum(index == k) >= 20 else np.nan for k in range(1, len(edges))])


def _simulated(params: dict, seeds: range) -> list[np.ndarray]:
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        out.append(sim.acquire_lr_series(_specimen(params, "mitochondria", rng), params=params, rng=rng)[0])
    return out


@pytest.mark.parametrize("case", sorted(HIDDEN))
def test_calibrated_simulator_reproduces_a_measured_mean_variance_curve(case):
    """A series calibrated, the simulator calibrated from it, its series re-calibrated.

    The real file is one frame (see above): the measured series is a stand-in whose specimen is
    the real mito-EGFP frame and whose noise is a detector the calibration does not know
    (``HIDDEN``), 40 static frames. The simulator, given only what the calibration measured,
    renders its own mitochondria (three fields) at the file's frame size and pixel size.

    Seen over six seeds of the stand-in and of the simulated fields: gain re-fit within 1 % of
    the measured fit; with a measured offset, read noise within 4.6 % and the variance near the
    median ADU (the background) -3.4 to +13 %; every bin of the curve above the floor within
    13 %; the median 99th percentile of three simulated fields -13 to +5 % of the measured one
    (single fields: -25 to +19 %). The simulator's default detector misses the curve by 45 % or
    more.

    With the offset at the floor, the background is not reproduced: the read noise then comes
    from the measured line's intercept, which scattered from -25 to +28 ADU^2 (truth 9.1) over
    the six seeds, because the line is fitted up to hundreds of ADU where 1 % of gain is
    several ADU^2. The variance at the median (1.7 ADU, in the clipped background) came out -12
    to +82 %, and is not asserted there.
    """
    real, meta = read_series(FV1000, channel=0)
    density = real[0].astype(np.float64) / real.max()
    hidden = {**HIDDEN[case], "bits": 12}
    measured = sim.detect(np.repeat(density[None], FRAMES, axis=0), dwell_us=DWELL_US, detector=hidden, rng=np.random.default_rng(1))
    saturation = 2 ** meta["significant_bits"] - 1
    measured_cal = calibrate_series(measured, saturation=saturation)
    assert measured_cal.measurable and measured_cal.complete == (case == "offset measured")
    fov = measure_series(
        measured,
        calibration=measured_cal,
        lr_pixel_size_um=meta["pixel_size_um"][1],
        significant_bits=meta["significant_bits"],
        source=f"{FV1000.name} stand-in",
    )
    base = {"lr": {"drift_um_per_frame": 0.0, "dwell_us": DWELL_US}}
    result = simulator_calibration([fov], base=base)
    params = sim.resolve_params(result.params)
    assert params["lr"]["pixels"] == 256 and params["lr"]["frames"] == FRAMES and params["detector"]["bits"] == 12
    json.dumps(result.provenance, allow_nan=False)

    series = _simulated(params, range(11, 14))
    cals = [calibrate_series(s, saturation=saturation) for s in series]
    # A simulated field may fall between the cells and hold no signal to calibrate (seen once in
    # 15 fields): the others must.
    assert sum(c.measurable for c in cals) >= 2
    gain = float(np.nanmedian([c.gain_adu_per_photon for c in cals]))
    print(f"{case}: measured gain {measured_cal.gain_adu_per_photon:.3f}, offset {measured_cal.offset_adu:.2f}, read noise {measured_cal.read_noise_adu:.3f}")
    print(f"{case}: simulated gain {gain:.3f}, offset {[round(c.offset_adu, 2) for c in cals]}, read noise {[round(c.read_noise_adu, 3) for c in cals]}")
    # 10 %: the task's bound; the fit itself scatters by about 1 % (tests/test_photons.py).
    assert gain == pytest.approx(measured_cal.gain_adu_per_photon, rel=0.10)
    if measured_cal.complete:
        read = float(np.nanmedian([c.read_noise_adu for c in cals]))
        # The dark-pixel fit is within 9 % of the truth on simulated series (fastscan.photons);
        # two such fits differ by up to ~13 %.
        assert read == pytest.approx(measured_cal.read_noise_adu, rel=0.15)
        assert float(np.nanmedian([c.offset_adu for c in cals])) == pytest.approx(measured_cal.offset_adu, abs=1.0)
    else:
        # Offset 0 in the simulator too: its dark pixels reach the floor, as the measured ones do.
        assert not any(c.complete for c in cals) and params["detector"]["offset_du"] == 0.0

    # The curve itself, from the pixels (the fitted lines' extrapolation to the background
    # scatters by more than the noise it describes).
    m_mean, m_var = _pixel_statistics(measured)
    stats = [_pixel_statistics(s) for s in series]
    s_mean = np.concatenate([m.ravel() for m, _ in stats])
    s_var = np.concatenate([v.ravel() for _, v in stats])
    median = float(np.median(m_mean))
    band = max(0.5, 0.1 * measured_cal.gain_adu_per_photon)
    at_median = (m_var[np.abs(m_mean - median) <= band].mean(), s_var[np.abs(s_mean - median) <= band].mean())
    # Bins from the median up; with the offset at the floor, from 4 noise widths above it, where
    # no pixel is clipped.
    above = m_mean >= median if measured_cal.complete else m_mean >= 4.0 * np.sqrt(m_var)
    edges = np.quantile(m_mean[above], np.linspace(0.0, 0.99, 9))
    target, reproduced = _binned(m_mean, m_var, edges), _binned(s_mean, s_var, edges)
    curve_error = np.abs(reproduced / target - 1.0)
    high = (float(np.percentile(m_mean, 99)), float(np.median([np.percentile(m, 99) for m, _ in stats])))
    print(f"{case}: variance at the median {median:.1f} ADU: measured {at_median[0]:.2f}, simulated {at_median[1]:.2f} ADU^2")
    print(f"{case}: curve error per bin {np.round(curve_error, 3).tolist()}; 99th percentile {high[0]:.0f} / {high[1]:.0f} ADU")
    # 20 %: pixels of equal mean hold different mixtures of photons and read noise in two
    # specimens, and the read noise is a fit (above); seen at most 13 %.
    if measured_cal.complete:
        assert at_median[1] == pytest.approx(at_median[0], rel=0.20)
    assert np.isfinite(curve_error).sum() >= 6 and np.nanmax(curve_error) < 0.20
    # 25 %: simulated fields hold more or fewer cells (the 99th percentile of single fields
    # spreads by -25 to +19 % around the typical field's); the median of three is the typical
    # field unless two of them are unusual.
    assert high[1] == pytest.approx(high[0], rel=0.25)

    # The test can fail: the simulator's default detector does not reproduce the curve.
    default = sim.resolve_params({**base, "field_of_view_um": params["field_of_view_um"], "lr": {**base["lr"], "pixels": 256, "frames": FRAMES}})
    d_mean, d_var = _pixel_statistics(_simulated(default, range(11, 12))[0])
    assert np.nanmax(np.abs(_binned(d_mean, d_var, edges) / target - 1.0)) > 0.3


# --------------------------------------------------------------------------------------------
# registered stores


# Two simulated FOVs of one microscope, with line phases 0.6 and 0.9 px (median 0.75).
TRUTH = {"line_phase_px": [0.6, 0.9], "field_fraction": 0.8, "psf_fwhm_um": 0.45, "detector": {"pmt_gain": 6.0, "read_noise_du": 4.0, "offset_du": 80.0}}


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Two registered stores of FOVs simulated with :data:`TRUTH` (128 px, 30 frames)."""
    tmp = tmp_path_factory.mktemp("registered")
    stores = []
    for i, phase in enumerate(TRUTH["line_phase_px"]):
        params = {
            "field_of_view_um": 51.2,
            "psf_fwhm_um": TRUTH["psf_fwhm_um"],
            "hr": {"pixels": 256},
            "lr": {"pixels": 128, "frames": 30, "line_phase_px": phase, "field_fraction": TRUTH["field_fraction"]},
            "detector": TRUTH["detector"],
        }
        lr, hr = tmp / f"f{i}_lr.ome.tif", tmp / f"f{i}_hr.ome.tif"
        sim.write_fov(lr_path=lr, hr_path=hr, truth_path=tmp / f"f{i}.json", specimen="mitochondria", seed=10 + i, params=params)
        ingest_fov(lr=str(lr), hr=str(hr), out=tmp / f"ingest{i}.zarr", sample="mito", session="s1", fov=f"f{i}")
        register_fov(tmp / f"ingest{i}.zarr", tmp / f"f{i}.zarr")
        stores.append(tmp / f"f{i}.zarr")
    return stores


def test_calibrated_params_recover_simulated_registered_stores(registered):
    """What registration measured on simulated FOVs comes back as the simulator's parameters.

    Seen: line phase 0.725 px, field fraction 0.797, gain 5.94, offset 79.83 ADU, read noise
    3.87 ADU (truth 4.0), PSF 0.479 µm, 28.5 photons per µs (the truth's 30 at the
    specimen's brightest value: each FOV's 99th percentile is mapped onto the typical field's);
    no dark counts (truth 0.2 per µs: 0.1 photons per pixel, not separable from the background).
    """
    result = calibrate_simulator([read_registered(p) for p in registered])
    params = result.params
    print(json.dumps(params))
    det = params["detector"]
    assert params["lr"]["pixels"] == 128 and params["hr"]["pixels"] == 256 and params["lr"]["frames"] == 30
    assert params["field_of_view_um"] == pytest.approx(51.2)
    # Line phase fits are within 0.2 px on such series (tests/test_register.py); their median.
    assert params["lr"]["line_phase_px"] == pytest.approx(np.median(TRUTH["line_phase_px"]), abs=0.1)
    assert params["lr"]["field_fraction"] == pytest.approx(TRUTH["field_fraction"], abs=0.03)
    # The calibration's bounds on simulated series (tests/test_photons.py): gain 10 %, offset
    # 1 ADU, read noise 10 %.
    assert det["pmt_gain"] == pytest.approx(TRUTH["detector"]["pmt_gain"], rel=0.10)
    assert det["offset_du"] == pytest.approx(TRUTH["detector"]["offset_du"], abs=1.0)
    assert det["read_noise_du"] == pytest.approx(TRUTH["detector"]["read_noise_du"], rel=0.10)
    assert det["bits"] == 12
    # The PSF bound of the HR target test above.
    assert params["psf_fwhm_um"] == pytest.approx(TRUTH["psf_fwhm_um"], rel=0.20)
    # Photons: two fields against the typical field, whose 99th percentile spreads by 25 %.
    assert det["photons_per_us"] == pytest.approx(sim.DEFAULTS["detector"]["photons_per_us"], rel=0.30)
    assert det["dark_counts_per_us"] == 0.0
    names = [str(s) for s in registered]
    assert result.provenance["choices"]["detector.pmt_gain"]["from"] == names
    assert [f["source"] for f in result.provenance["fovs"]] == names
    json.dumps(result.provenance, allow_nan=False)


def test_stores_without_a_calibration_or_with_a_linear_scan(registered, tmp_path, caplog):
    """A store without a photon calibration leaves the detector to the others; alone, to the defaults."""
    synthetic = write_synthetic_registered(tmp_path / "synthetic.zarr", frames=3, size=64)
    with caplog.at_level(logging.WARNING, logger="fastscan.simulate.calibrated"):
        alone = calibrated_params([read_registered(synthetic)])
    assert "no FOV has a measurable photon calibration" in caplog.text and "not calibrated" in caplog.text
    assert set(alone["detector"]) <= {"bits"}
    # A linear scan (field fraction 0), which the simulator's resonant model does not take.
    assert alone["lr"]["field_fraction"] == LINEAR_FIELD_FRACTION
    sim.resolve_params(alone)

    mixed = calibrate_simulator([read_registered(p) for p in (*registered, synthetic)])
    names = [str(s) for s in registered]
    assert mixed.provenance["choices"]["detector.pmt_gain"]["from"] == names
    assert mixed.params["detector"]["pmt_gain"] == pytest.approx(TRUTH["detector"]["pmt_gain"], rel=0.10)


def test_bad_stores_are_named(tmp_path, registered):
    """Stores are opened with fastscan.stores.read_registered (the one reader); every error names the store."""

    def calibrate(*paths):
        return calibrated_params([read_registered(p) for p in paths])

    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        calibrate(registered[0], tmp_path / "nowhere.zarr")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(Exception, match="plain"):
        calibrate(plain)
    # An ingested store, not registered.
    ingest = registered[0].with_name("ingest0.zarr")
    with pytest.raises(StoreError, match="ingest0.zarr: not a registered per-FOV store"):
        calibrate(ingest)
    # A registered store without pixel sizes.
    lr = np.zeros((2, 32, 32), np.float32)
    no_sizes = write_registered(tmp_path / "nosizes.zarr", lr=lr, hr=np.zeros((64, 64), np.float32), attrs={"scale": 2}, registration=Registration.aligned(2))
    with pytest.raises(ValueError, match=r"nosizes.zarr: the store lacks fastscan.lr_pixel_size_um"):
        calibrate(no_sizes)
    # A path where an opened store belongs.
    with pytest.raises(TypeError, match=r"f0.zarr: pass the registered store opened with fastscan.stores.read_registered"):
        calibrated_params([registered[0]])
    with pytest.raises(ValueError, match="at least one"):
        calibrated_params([])
