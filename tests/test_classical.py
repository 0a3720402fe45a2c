"""Tests of the classical restoration cascade (fastscan.classical)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio
from skimage.registration import phase_cross_correlation

from fastscan import baselines, classical, register, scan, simulate
from fastscan.classical import (
    estimate_noise_sigma,
    restore_classical,
)
from fastscan.scan import unwarp_resonant, warp_resonant

FIELD_FRACTION = 0.8


def _smooth_image(shape, *, seed=0, sigma=3.0):
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def _specimen(params, *, kind="mitochondria", seed=1):
    """A specimen centred on the field with a 3 µm margin on each side."""
    ps = params["specimen_pixel_size_um"]
    size = int(math.ceil((params["field_of_view_um"] + 6.0) / ps))
    rng = np.random.default_rng(seed)
    return simulate.render_specimen(kind, shape=(size, size), pixel_size_um=ps, rng=rng)


def _block_mean(hr, scale=2):
    ny, nx = hr.shape[0] // scale, hr.shape[1] // scale
    return hr.reshape(ny, scale, nx, scale).mean(axis=(1, 3))


def _normalise(image):
    lo, hi = np.percentile(image, [1.0, 99.8])
    return ((np.asarray(image, dtype=np.float64) - lo) / (hi - lo)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# resonant warp


@pytest.mark.parametrize("shape", [(40, 64), (3, 32, 96)])
def test_warp_unwarp_round_trip(shape):
    image = _smooth_image(shape)
    inner = (..., slice(6, -6))
    ff = FIELD_FRACTION
    there_and_back = warp_resonant(unwarp_resonant(image, field_fraction=ff), field_fraction=ff)
    back_and_there = unwarp_resonant(warp_resonant(image, field_fraction=ff), field_fraction=ff)
    for result in (there_and_back, back_and_there):
        assert result.shape == image.shape and result.dtype == np.float32
        np.testing.assert_allclose(result[inner], image[inner], atol=0.02)
    # The warp itself is far from the identity, so the round trip is not trivially satisfied.
    assert np.abs(warp_resonant(image, field_fraction=ff) - image)[inner].max() > 0.1


def test_warp_is_the_forward_models_resonant_warp():
    # The un-warp and the simulator's sampling were two implementations until fastscan.scan owned
    # both; their round trip is tested in test_simulate. What is left to check here is that the
    # registration's forward model warps with the same function.
    image = _smooth_image((32, 64), seed=2)
    hr = np.kron(image, np.ones((2, 2), dtype=np.float32))
    np.testing.assert_allclose(
        warp_resonant(image, field_fraction=0.6),
        register.forward_model(hr, field_fraction=0.6),
        atol=1e-5,
    )


def test_linear_scan_is_identity():
    image = _smooth_image((16, 32))
    np.testing.assert_array_equal(unwarp_resonant(image, field_fraction=0.0), image)
    np.testing.assert_array_equal(warp_resonant(image, field_fraction=0.0), image)
    with pytest.raises(ValueError, match="field_fraction"):
        unwarp_resonant(image, field_fraction=1.0)


@pytest.mark.parametrize("line_phase", [0.6, 2.0])
def test_unwarp_restores_simulated_geometry(line_phase):
    """A noise-free resonant frame, corrected and un-warped, lies on the midway HR geometry."""
    params = simulate.resolve_params(
        {
            "field_of_view_um": 25.6,
            "hr": {"pixels": 128},
            "lr": {"pixels": 64, "field_fraction": FIELD_FRACTION, "line_phase_px": line_phase},
        }
    )
    specimen = _specimen(params)
    raw = simulate.lr_signal(specimen, params=params)[0]
    truth = _block_mean(simulate.hr_signal(specimen, params=params))
    restored = unwarp_resonant(register.correct_line_phase(raw, line_phase, symmetric=True), field_fraction=FIELD_FRACTION)

    # The symmetric convention: every row lands on the nominal position of display column
    # j - line_phase / 2, i.e. the truth moved onto that geometry (what the registered HR is).
    n = truth.shape[1]
    display = np.interp(
        np.arange(n),
        scan.nominal_columns(n, field_fraction=FIELD_FRACTION),
        np.arange(n),
    )
    midway_x = np.interp(
        display,
        np.arange(n),
        scan.nominal_columns(n, field_fraction=FIELD_FRACTION, phase_px=-0.5 * line_phase),
    )
    coords = np.stack(np.meshgrid(np.arange(n, dtype=np.float64), midway_x, indexing="ij"))
    midway = ndi.map_coordinates(truth, coords, order=3, mode="nearest")

    inner = (slice(4, -4), slice(4, -4))
    ncc_before = register.normalised_cross_correlation(raw[inner], midway[inner])
    ncc_after = register.normalised_cross_correlation(restored[inner], midway[inner])
    ncc_truth = register.normalised_cross_correlation(restored[inner], truth[inner])
    print(f"line phase {line_phase}: NCC raw {ncc_before:.3f}, corrected+unwarped {ncc_after:.3f} (against the unshifted truth {ncc_truth:.3f})")
    assert ncc_after > 0.97
    assert ncc_after > ncc_before + 0.2

    residual, _, _ = phase_cross_correlation(midway, restored, upsample_factor=20)
    # The same residual measured against the unshifted truth, minus the shift the symmetric
    # convention itself puts between the truth and the midway geometry.
    measured, _, _ = phase_cross_correlation(truth, restored, upsample_factor=20)
    convention, _, _ = phase_cross_correlation(truth, midway, upsample_factor=20)
    print(f"residual shift {residual}, vs truth {measured} (convention {convention}) LR px")
    assert np.all(np.abs(residual) < 0.3)
    assert np.all(np.abs(measured - convention) < 0.3)


# --------------------------------------------------------------------------------------------
# noise level


def test_estimate_noise_sigma():
    rng = np.random.default_rng(5)
    image = _smooth_image((128, 128), sigma=4.0) + rng.normal(0.0, 0.05, (128, 128))
    assert estimate_noise_sigma(image) == pytest.approx(0.05, rel=0.1)
    assert estimate_noise_sigma(np.ones((8, 8))) == 0.0
    with pytest.raises(ValueError):
        estimate_noise_sigma(np.ones((2, 8, 8)))


# --------------------------------------------------------------------------------------------
# cascade


def test_cascade_beats_bicubic_on_noisy_frame():
    """On a photon-limited simulated frame the cascade beats bicubic of the raw frame in PSNR."""
    params = simulate.resolve_params({"field_of_view_um": 51.2, "hr": {"pixels": 256}, "lr": {"pixels": 128, "frames": 1}})
    specimen = _specimen(params, seed=3)
    rng = np.random.default_rng(3)
    hr = simulate.acquire_hr(specimen, params=params, rng=rng).astype(np.float32)
    lr, truth = simulate.acquire_lr_series(specimen, params=params, rng=rng)
    line_phase, field_fraction = truth["line_phase_px"], truth["field_fraction"]

    # The HR target as the registration delivers it: translated (not warped) onto the LR grid.
    # The noise-free signal stands in for the drift-corrected mean of a long series.
    clean = simulate.lr_signal(specimen, params=params)[0]
    shift = register.align_hr_to_lr(hr, clean, line_phase_px=line_phase, field_fraction=field_fraction, iterations=3)
    target = _normalise(register.apply_shifts(hr[None], shift[None])[0])
    frame = _normalise(lr[0])

    inner = (slice(8, -8), slice(8, -8))

    def psnr(image):
        return peak_signal_noise_ratio(target[inner], image[inner], data_range=1.0)

    bicubic = psnr(baselines.upsample(frame, order=3))
    unwarped = psnr(restore_classical(frame, line_phase_px=line_phase, field_fraction=field_fraction, denoise="none"))
    cascade_image = restore_classical(frame, line_phase_px=line_phase, field_fraction=field_fraction)
    cascade = psnr(cascade_image)
    print(f"PSNR vs HR target: bicubic of raw {bicubic:.2f} dB, cascade without denoising {unwarped:.2f} dB, full cascade (NLM) {cascade:.2f} dB")
    assert cascade_image.shape == target.shape and cascade_image.dtype == np.float32
    assert cascade > bicubic + 1.0
    assert cascade > unwarped


@pytest.mark.parametrize("denoise", ["nlm", "none"])
def test_shapes(denoise):
    rng = np.random.default_rng(0)
    frame = rng.random((32, 48)).astype(np.float32)
    out = restore_classical(frame, line_phase_px=0.6, field_fraction=0.8, denoise=denoise)
    assert out.shape == (64, 96) and out.dtype == np.float32
    series = rng.random((3, 32, 48))
    out = restore_classical(series, line_phase_px=0.6, field_fraction=0.8, denoise=denoise)
    assert out.shape == (3, 64, 96) and out.dtype == np.float32
    out = restore_classical(series, line_phase_px=0.0, field_fraction=0.0, scale=3)
    assert out.shape == (3, 96, 144)
    # Frames of a series are restored independently.
    np.testing.assert_allclose(
        restore_classical(series[1], line_phase_px=0.6, field_fraction=0.8, denoise=denoise),
        restore_classical(series, line_phase_px=0.6, field_fraction=0.8, denoise=denoise)[1],
        atol=1e-5,
    )


def test_invalid_arguments():
    frame = np.zeros((16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(Y, X\) or \(T, Y, X\)"):
        restore_classical(frame[None, None], line_phase_px=0.0, field_fraction=0.8)
    with pytest.raises(ValueError, match="denoise"):
        restore_classical(frame, line_phase_px=0.0, field_fraction=0.8, denoise="wiener")
    with pytest.raises(ValueError, match="strength"):
        restore_classical(frame, line_phase_px=0.0, field_fraction=0.8, strength=0.0)
    with pytest.raises(ValueError, match="scale"):
        restore_classical(frame, line_phase_px=0.0, field_fraction=0.8, scale=0)
    with pytest.raises(ValueError, match="field_fraction"):
        restore_classical(frame, line_phase_px=0.0, field_fraction=-0.1)


def test_bm3d_missing_gives_clear_error(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "bm3d" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(classical.importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match="pip install bm3d"):
        restore_classical(
            np.zeros((16, 16), dtype=np.float32),
            line_phase_px=0.0,
            field_fraction=0.8,
            denoise="bm3d",
        )


def test_bm3d_when_installed():
    pytest.importorskip("bm3d")
    rng = np.random.default_rng(0)
    out = restore_classical(rng.random((2, 32, 32)), line_phase_px=0.6, field_fraction=0.8, denoise="bm3d")
    assert out.shape == (2, 64, 64) and out.dtype == np.float32


# --------------------------------------------------------------------------------------------
# variance-stabilised denoising


def _psnr_fitted(target, image):
    """PSNR after the least-squares gain and offset that map ``image`` onto ``target``.

    The LR and HR acquisitions differ in dwell and photon scale; fitting both numbers compares
    the denoisers' structure, not their intensity scale, which neither path changes.
    """
    design = np.stack([image.ravel(), np.ones(image.size)], axis=1)
    coef = np.linalg.lstsq(design, target.ravel(), rcond=None)[0]
    return peak_signal_noise_ratio(target, (design @ coef).reshape(target.shape), data_range=1.0)


@pytest.mark.parametrize("kind", ["mitochondria", "tissue"])
def test_variance_stabilised_denoising_beats_the_fixed_strength(kind):
    """With the series' photon calibration, NLM after the generalised Anscombe transform
    restores simulated frames closer to the noise-free HR truth than NLM at one noise level."""
    from fastscan.photons import calibrate_series

    params = simulate.resolve_params(
        {
            "field_of_view_um": 51.2,
            "hr": {"pixels": 256},
            "lr": {"pixels": 128, "frames": 100, "drift_um_per_frame": 0.0},
        }
    )
    specimen = _specimen(params, kind=kind, seed=3)
    rng = np.random.default_rng(3)
    lr, truth = simulate.acquire_lr_series(specimen, params=params, rng=rng)
    calibration = calibrate_series(lr, saturation=4095)
    assert calibration.measurable
    line_phase, field_fraction = truth["line_phase_px"], truth["field_fraction"]
    clean_hr = simulate.acquire_hr(specimen, params=params, rng=rng, noise=False).astype(np.float32)
    clean_lr = simulate.lr_signal(specimen, params=params)[0]
    shift = register.align_hr_to_lr(clean_hr, clean_lr, line_phase_px=line_phase, field_fraction=field_fraction, iterations=3)
    target = _normalise(register.apply_shifts(clean_hr[None], shift[None])[0])
    # The frames as restore_fov hands them over: normalised, with the range to undo it.
    low, high = np.percentile(lr, [1.0, 99.8])
    frames = ((lr[:3].astype(np.float64) - low) / (high - low)).astype(np.float32)
    common = {"line_phase_px": line_phase, "field_fraction": field_fraction}
    fixed = restore_classical(frames, **common)
    stabilised = restore_classical(frames, **common, calibration=calibration.summary(), normalisation=(low, high))
    inner = (slice(8, -8), slice(8, -8))
    psnr_fixed = np.mean([_psnr_fitted(target[inner], f[inner]) for f in fixed])
    psnr_vst = np.mean([_psnr_fitted(target[inner], f[inner]) for f in stabilised])
    print(f"{kind}: PSNR vs noise-free HR, fixed strength {psnr_fixed:.2f} dB, VST {psnr_vst:.2f} dB")
    assert stabilised.shape == fixed.shape and stabilised.dtype == np.float32
    assert psnr_vst > psnr_fixed + 0.1


def test_without_a_calibration_the_fixed_path_is_kept():
    from fastscan.photons import calibrate_series

    rng = np.random.default_rng(0)
    frame = rng.poisson(20.0, (32, 48)).astype(np.float32)
    common = {"line_phase_px": 0.6, "field_fraction": 0.8}
    fixed = restore_classical(frame, **common)
    one_frame = calibrate_series(frame)  # one frame: not measurable
    assert not one_frame.measurable
    np.testing.assert_array_equal(restore_classical(frame, **common, calibration=one_frame), fixed)
    np.testing.assert_array_equal(restore_classical(frame, **common, calibration=one_frame.summary()), fixed)
    measured = {"gain_adu_per_photon": 1.0, "variance_intercept_adu2": 0.0, "frames": 10}
    # The stabilised path is unit-consistent: ADU frames, or normalised ones with their range.
    adu = restore_classical(frame, **common, calibration=measured)
    normalised = restore_classical((frame - 10.0) / 40.0, **common, calibration=measured, normalisation=(10.0, 50.0))
    assert not np.allclose(adu, fixed)
    np.testing.assert_allclose(normalised * 40.0 + 10.0, adu, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="normalisation"):
        restore_classical(frame, **common, calibration=measured, normalisation=(5.0, 5.0))
    with pytest.raises(ValueError, match="lacks"):
        restore_classical(frame, **common, calibration={"offset_adu": 1.0})
