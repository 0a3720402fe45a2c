"""Tests of fastscan.register on planted shifts (the scikit-image registration test pattern)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose
from scipy import ndimage

from fastscan import register as reg

PHOTONS = 10.0


# ---------------------------------------------------------------------------------------------
# synthetic data


def texture(shape: tuple[int, int], *, sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    """Smooth periodic random texture in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (img - img.min()) / (img.max() - img.min())


def blobs(shape: tuple[int, int], *, n: int = 80, seed: int = 0) -> np.ndarray:
    """Sparse Gaussian blobs on a dim background (mitochondria-like), not periodic."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape)
    img[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = rng.uniform(0.5, 1.0, n)
    img = ndimage.gaussian_filter(img, 2.0)
    return img / img.max() + 0.05


def fshift(img: np.ndarray, shift) -> np.ndarray:
    """Translate ``img`` by ``shift`` (content moves towards +shift), periodic."""
    return np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(img), shift)).real


def plant_line_phase(img: np.ndarray, phase: float) -> np.ndarray:
    """Displace the odd rows of ``img`` by ``phase`` px towards +x (periodic)."""
    out = np.array(img, dtype=np.float64)
    freq = np.fft.fftfreq(img.shape[-1])
    spectrum = np.fft.fft(out[..., 1::2, :], axis=-1) * np.exp(-2j * np.pi * phase * freq)
    out[..., 1::2, :] = np.fft.ifft(spectrum, axis=-1).real
    return out


def poisson(img: np.ndarray, *, photons: float = PHOTONS, size=None, seed: int = 0) -> np.ndarray:
    """Photon counts with a mean of ``photons`` per pixel."""
    rng = np.random.default_rng(seed)
    lam = np.clip(img, 0, None) * (photons / img.mean())
    shape = lam.shape if size is None else (*np.atleast_1d(size), *lam.shape)
    return rng.poisson(np.broadcast_to(lam, shape)).astype(np.uint16)


def rms(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.reshape(err, (-1, 2)) ** 2, axis=1))))


# ---------------------------------------------------------------------------------------------
# drift


@pytest.mark.parametrize("reference", ["median", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_drift_recovers_planted_shifts(reference, seed):
    rng = np.random.default_rng(seed)
    base = texture((128, 128), seed=seed)
    planted = rng.uniform(-3, 3, (10, 2))
    frames = np.stack([poisson(fshift(base, s), seed=seed * 100 + t) for t, s in enumerate(planted)])
    drift = reg.estimate_drift(frames, reference=reference)
    assert drift.shape == (10, 2)
    assert drift.dtype == np.float64
    # The reference sits at the series' centre, so compare up to a common offset.
    err = drift + planted
    err -= err.mean(axis=0)
    assert rms(err) < 0.1
    # Applying the drift aligns every frame to one position.
    aligned = reg.apply_shifts(frames, drift)
    assert aligned.dtype == np.float32
    assert rms(reg.estimate_drift(aligned, reference=reference, iterations=1)) < 0.1


def test_estimate_drift_single_frame_and_options():
    frame = poisson(texture((64, 64)))[None]
    assert_allclose(reg.estimate_drift(frame), 0.0)
    with pytest.raises(ValueError, match="reference"):
        reg.estimate_drift(frame, reference="first")
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        reg.estimate_drift(frame[0])


def test_phase_normalisation_is_worse_under_noise():
    # Documents the choice of normalization=None: phase correlation whitens the Poisson noise.
    rng = np.random.default_rng(3)
    base = texture((128, 128), seed=3)
    planted = rng.uniform(-3, 3, (10, 2))
    frames = np.stack([poisson(fshift(base, s), photons=5, seed=t) for t, s in enumerate(planted)])
    errs = {}
    for norm in (None, "phase"):
        err = reg.estimate_drift(frames, normalization=norm) + planted
        errs[norm] = rms(err - err.mean(axis=0))
    assert errs[None] < 0.1 < errs["phase"]


# ---------------------------------------------------------------------------------------------
# shifting


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_apply_shifts_dtype_and_identity(dtype):
    frames = (np.stack([texture((32, 32))] * 2) * 1000).astype(dtype)
    out = reg.apply_shifts(frames, np.zeros((2, 2)))
    assert out.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert_allclose(out, frames.astype(out.dtype))
    with pytest.raises(ValueError, match="shifts must have shape"):
        reg.apply_shifts(frames, np.zeros((3, 2)))


@pytest.mark.parametrize("method", ["fourier", "spline"])
def test_apply_shifts_matches_planted_translation(method):
    base = texture((96, 96), sigma=3.0)
    shift = np.array([1.6, -2.3])
    out = reg.apply_shifts(base[None], shift[None], method=method)[0]
    expected = fshift(base, shift)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(out[inner] - expected[inner]).max() < 0.01


# ---------------------------------------------------------------------------------------------
# line phase


@pytest.mark.parametrize("phase", [-0.7, -0.43, -0.3, 0.3, 0.7, 1.6])
def test_estimate_line_phase_noise_free(phase):
    img = plant_line_phase(texture((128, 128), seed=5), phase)
    assert abs(reg.estimate_line_phase(img) - phase) < 0.1


@pytest.mark.parametrize("phase", [-0.7, -0.3, 0.3, 0.7])
def test_estimate_line_phase_noisy_mean(phase):
    # Non-periodic field: crop a larger scene so the borders do not wrap.
    img = plant_line_phase(blobs((192, 192), seed=7), phase)[32:160, 32:160]
    frames = poisson(img, size=20, seed=11)
    assert abs(reg.estimate_line_phase(frames) - phase) < 0.2
    assert abs(reg.estimate_line_phase(frames.mean(axis=0)) - phase) < 0.2


REAL_OIB = Path(__file__).resolve().parent / "data" / "mitoegfp_fv1000.oib"


def test_estimate_line_phase_on_real_one_way_scan():
    # A real (not simulated) frame: the one-way scan has no line phase; planted phases (with
    # linear interpolation, so nothing is periodic) come back from single noisy frames.
    oiffile = pytest.importorskip("oiffile")
    img = oiffile.imread(REAL_OIB)[0].astype(np.float64)
    assert abs(reg.estimate_line_phase(img)) < 0.1
    x = np.arange(img.shape[1])
    for phase in (-0.7, 0.3):
        distorted = img.copy()
        distorted[1::2] = [np.interp(x - phase, x, row) for row in img[1::2]]
        frames = poisson(distorted, size=20, seed=0)
        assert abs(reg.estimate_line_phase(frames) - phase) < 0.1
        assert abs(reg.estimate_line_phase(frames[0]) - phase) < 0.2


def test_estimate_line_phase_zero_without_offset():
    img = texture((128, 128), seed=2)
    assert abs(reg.estimate_line_phase(img)) < 0.05
    assert abs(reg.estimate_line_phase(poisson(img, size=20, seed=1))) < 0.1
    with pytest.raises(ValueError, match="at least 4 rows"):
        reg.estimate_line_phase(img[:3])


def test_correct_line_phase_round_trip():
    base = texture((64, 96), sigma=3.0, seed=4)
    distorted = plant_line_phase(base, 0.6)
    corrected = reg.correct_line_phase(distorted, 0.6)
    assert corrected.dtype == np.float64
    assert_allclose(corrected[0::2], distorted[0::2])
    inner = (slice(None), slice(10, -10))
    assert np.abs(corrected[inner] - base[inner]).max() < 0.01
    assert abs(reg.estimate_line_phase(corrected)) < 0.1
    # a series keeps its leading axis, integer input becomes float32
    series = reg.correct_line_phase(np.stack([distorted] * 3).astype(np.uint16), 0.6)
    assert series.shape == (3, 64, 96) and series.dtype == np.float32


def test_correct_line_phase_symmetric_matches_forward_model_geometry():
    hr = texture((128, 192), sigma=6.0, seed=6)
    lr = reg.forward_model(hr, line_phase_px=0.8)  # even rows at -0.4, odd rows at +0.4
    corrected = reg.correct_line_phase(lr, 0.8, symmetric=True)
    inner = (slice(None), slice(10, -10))
    assert np.abs(corrected - reg.forward_model(hr))[inner].max() < 0.01
    assert abs(reg.estimate_line_phase(corrected)) < 0.1


# ---------------------------------------------------------------------------------------------
# HR onto LR


def test_forward_model_block_average_and_line_phase():
    hr = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert_allclose(reg.forward_model(hr, scale=2), [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="not a multiple of scale"):
        reg.forward_model(np.zeros((5, 4)), scale=2)
    model = reg.forward_model(texture((256, 256), sigma=4.0), line_phase_px=0.5)
    assert abs(reg.estimate_line_phase(model) - 0.5) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_align_hr_to_lr_recovers_planted_offset(seed):
    rng = np.random.default_rng(seed)
    scene = blobs((320, 320), n=250, seed=seed)
    planted = rng.uniform(-5, 5, 2)  # HR px
    hr = scene[32:288, 32:288]
    # The LR series sees the scene at -planted relative to the HR target.
    lr_clean = reg.forward_model(fshift(scene, -planted)[32:288, 32:288], scale=2)
    lr_mean = poisson(lr_clean, size=20, seed=seed).mean(axis=0)
    hr_shift = reg.align_hr_to_lr(hr, lr_mean, scale=2)
    assert hr_shift.shape == (2,)
    assert np.abs(hr_shift + planted).max() / 2 < 0.25  # in LR px
    with pytest.raises(ValueError, match="does not match the LR shape"):
        reg.align_hr_to_lr(hr, lr_mean[:-2])


def test_normalised_cross_correlation():
    a = texture((32, 32))
    assert reg.normalised_cross_correlation(a, a) == pytest.approx(1.0)
    assert reg.normalised_cross_correlation(a, 3 * a + 7) == pytest.approx(1.0)
    assert reg.normalised_cross_correlation(a, -a) == pytest.approx(-1.0)
    assert reg.normalised_cross_correlation(a, np.ones_like(a)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        reg.normalised_cross_correlation(a, a[:-1])


# ---------------------------------------------------------------------------------------------
# per-FOV store


def write_canonical(path: Path, lr: np.ndarray, hr: np.ndarray, *, fov: str, scale: int = 2) -> Path:
    """A canonical per-FOV store as docs/architecture.md describes it."""
    group = zarr.open_group(str(path), mode="w")
    group.create_array("lr", data=lr, chunks=(1, *lr.shape[1:]))
    group.create_array("hr", data=hr.astype(np.float32), chunks=hr.shape)
    group.attrs["fastscan"] = {
        "kind": "fov",
        "sample": "mito",
        "session": "s01",
        "fov": fov,
        "channel": 0,
        "axes": {"lr": "TYX", "hr": "YX"},
        "lr_pixel_size_um": [0.4, 0.4],
        "hr_pixel_size_um": [0.2, 0.2],
        "scale": scale,
        "source": {
            "lr": {"path": "lr.tif", "format": "tiff"},
            "hr": {"path": "hr.tif", "format": "tiff"},
        },
        "fastscan_version": "0.1.0",
    }
    return path


def good_fov(seed: int = 0, T: int = 8, n: int = 64):
    rng = np.random.default_rng(seed)
    scene = blobs((2 * n + 64, 2 * n + 64), n=120, seed=seed)
    crop = (slice(32, 32 + 2 * n), slice(32, 32 + 2 * n))
    hr_offset = np.array([2.6, -1.4])  # HR px
    drift = rng.uniform(-1.5, 1.5, (T, 2))  # LR px
    frames = []
    for t in range(T):
        moved = fshift(scene, -hr_offset + 2 * drift[t])[crop]
        lr = plant_line_phase(reg.forward_model(moved, scale=2), 0.5)
        frames.append(poisson(lr, seed=seed * 100 + t))
    return np.stack(frames), scene[crop], hr_offset, drift


def test_register_fov_end_to_end(tmp_path, caplog):
    lr, hr, hr_offset, drift = good_fov()
    src = write_canonical(tmp_path / "ingest" / "f1.zarr", lr, hr, fov="f1")
    out = tmp_path / "register" / "mito" / "s01" / "f1.zarr"
    out.parent.mkdir(parents=True)
    stale = out.with_name(out.name + ".tmp-999999999")
    stale.mkdir()  # left by a killed job
    qc_path = out.with_name("f1.qc.tsv")

    with caplog.at_level(logging.INFO, logger="fastscan.register"):
        row = reg.register_fov(src, out, qc=qc_path)

    assert list(row) == list(reg.QC_COLUMNS)
    assert (row["sample"], row["session"], row["fov"], row["frames"]) == ("mito", "s01", "f1", 8)
    assert row["passed"] is True and row["ncc"] > 0.8
    assert abs(row["line_phase_px"] - 0.5) < 0.2
    assert sorted(p.name for p in out.parent.iterdir()) == ["f1.qc.tsv", "f1.zarr"]
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)

    group = zarr.open_group(str(out), mode="r")
    assert group["lr"].shape == lr.shape and group["lr"].dtype == np.float32
    assert group["lr"].chunks == (1, 64, 64)
    assert group["lr"].metadata.dimension_names == ("t", "y", "x")
    assert group["hr"].shape == hr.shape and group["hr"].dtype == np.float32
    attrs = group.attrs["fastscan"]
    src_attrs = zarr.open_group(str(src), mode="r").attrs["fastscan"]
    assert {k: attrs[k] for k in src_attrs} == dict(src_attrs)
    r = attrs["registration"]
    assert set(r) == {
        "drift_px",
        "hr_shift_px",
        "line_phase_px",
        "field_fraction",
        "ncc",
        "residual_drift_px",
        "passed",
        "min_ncc",
        "lr_per_hr",
        "lr_at_zero_hr",
        "photons",
        "resonant_field_fraction",
        "resonant_evidence",
        "blur_sigma_px",
    }
    # The frames are a linear scan: a resonant fit that only follows the noise is rejected.
    assert r["field_fraction"] == 0.0 and row["field_fraction"] == 0.0
    assert r["resonant_evidence"] is None or r["resonant_evidence"] <= reg.MIN_RESONANT_EVIDENCE
    # Photon counts without offset or read noise: the gain (1 ADU per photon) is measured; the
    # zero-photon level is the ADC floor itself, so offset and read noise are not (see
    # tests/test_photons.py for the calibration's accuracy).
    assert r["photons"]["frames"] == 8 and r["photons"]["gain_adu_per_photon"] > 0
    assert r["photons"]["offset_adu"] is None and "bottom of the ADC range" in r["photons"]["reason"]
    assert np.shape(r["drift_px"]) == (8, 2) and r["passed"] is True and r["min_ncc"] == 0.3
    err = np.asarray(r["drift_px"]) + drift
    assert rms(err - err.mean(axis=0)) < 0.15
    assert r["residual_drift_px"] < 0.15
    # HR shift is relative to the registered frames, which sit at the drift reference: the
    # planted offset plus the reference position (mean drift error) converted to HR px. The
    # planted line phase moves only odd rows, so the mean of both scan directions, which the
    # forward model follows, sits half a line phase further along x.
    expected = -hr_offset + 2 * err.mean(axis=0) + [0.0, 2 * 0.5 / 2]
    assert np.abs(np.asarray(r["hr_shift_px"]) - expected).max() / 2 < 0.1
    # the moved HR matches the registered LR mean better than the raw HR
    lr_mean = group["lr"][...].mean(axis=0)
    raw = reg.normalised_cross_correlation(reg.forward_model(hr, line_phase_px=0.5), lr_mean)
    assert r["ncc"] > raw

    table = reg.read_qc(qc_path)
    assert table.loc[0, "fov"] == "f1" and bool(table.loc[0, "passed"])

    # Photon counts without offset: LR per unit of HR is the ratio of the means. 5 %: the
    # forward model's borders and the photon noise of 8 frames.
    # The QC table keeps 6 significant digits.
    assert r["lr_per_hr"] == row["lr_per_hr"] and table.loc[0, "lr_per_hr"] == pytest.approx(row["lr_per_hr"], rel=1e-5)
    assert r["lr_per_hr"] == pytest.approx(lr.mean() / hr.mean(), rel=0.05)
    assert abs(r["lr_at_zero_hr"]) < 0.05 * lr.mean()  # no offset, no background added

    # re-running replaces the store in place
    reg.register_fov(src, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["f1.qc.tsv", "f1.zarr"]


def test_lr_per_hr_follows_the_brightness_of_the_hr_target(tmp_path):
    """A target acquired with twice the detector gain halves the slope, and only the slope: the
    intercept, the alignment and the QC score do not depend on the target's scale. The forward
    model is linear, so they differ by float rounding only (1e-6 relative, against the 0.5 of the
    change)."""
    lr, hr, _, _ = good_fov(seed=3)
    rows = [reg.register_fov(write_canonical(tmp_path / f"in{k}.zarr", lr, k * hr, fov="f1"), tmp_path / f"out{k}.zarr") for k in (1, 2)]
    assert rows[1]["lr_per_hr"] == pytest.approx(rows[0]["lr_per_hr"] / 2, rel=1e-6)
    assert rows[1]["ncc"] == pytest.approx(rows[0]["ncc"], abs=1e-9)
    intercepts = [zarr.open_group(str(tmp_path / f"out{k}.zarr"), mode="r").attrs["fastscan"]["registration"]["lr_at_zero_hr"] for k in (1, 2)]
    assert intercepts[1] == pytest.approx(intercepts[0], rel=1e-6, abs=1e-9)


def test_register_fov_pure_noise_fails_qc(tmp_path, caplog):
    rng = np.random.default_rng(9)
    lr = rng.poisson(PHOTONS, (6, 64, 64)).astype(np.uint16)
    hr = blobs((128, 128), seed=9)
    src = write_canonical(tmp_path / "noise.zarr", lr, hr, fov="fov007")
    out = tmp_path / "out" / "fov007.zarr"
    with caplog.at_level(logging.WARNING, logger="fastscan.register"):
        row = reg.register_fov(src, out, min_ncc=0.3)
    assert row["passed"] is False and row["ncc"] < 0.3
    assert out.is_dir() and not list(out.parent.glob("*.tmp-*"))
    assert zarr.open_group(str(out), mode="r").attrs["fastscan"]["registration"]["passed"] is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sample=mito session=s01 fov=fov007" in warnings[0]
    assert f"{row['ncc']:.3f}" in warnings[0]


def test_register_fov_rejects_mismatched_shapes(tmp_path):
    lr, hr = np.zeros((2, 16, 16), np.uint16), np.zeros((30, 32))
    src = write_canonical(tmp_path / "bad.zarr", lr, hr, fov="x")
    with pytest.raises(ValueError, match="re-run ingestion"):
        reg.register_fov(src, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_register_fov_max_frames_keeps_the_first_frames(tmp_path):
    lr, hr, _, drift = good_fov(T=8)
    src = write_canonical(tmp_path / "f1.zarr", lr, hr, fov="f1")
    row = reg.register_fov(src, tmp_path / "out.zarr", max_frames=3)
    assert row["frames"] == 3 and row["passed"] is True
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert group["lr"].shape == (3, 64, 64)
    r = group.attrs["fastscan"]["registration"]
    assert np.shape(r["drift_px"]) == (3, 2) and r["photons"]["frames"] == 3
    # The same frames as registering the whole series: their drift relative to one another is
    # measured alike (the reference, the temporal median, differs, hence the common offset).
    err = np.asarray(r["drift_px"]) + drift[:3]
    assert rms(err - err.mean(axis=0)) < 0.2
    # More frames than the series holds keeps them all; so does null.
    assert reg.register_fov(src, tmp_path / "all.zarr", max_frames=100)["frames"] == 8
    assert reg.register_fov(src, tmp_path / "none.zarr", max_frames=None)["frames"] == 8


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "10", "ten"])
def test_register_fov_refuses_a_bad_max_frames(tmp_path, bad):
    lr, hr, _, _ = good_fov(T=2)
    src = write_canonical(tmp_path / "f1.zarr", lr, hr, fov="f1")
    with pytest.raises(ValueError, match="register.max_frames"):
        reg.register_fov(src, tmp_path / "out.zarr", max_frames=bad)
    assert not (tmp_path / "out.zarr").exists()


def test_register_fov_refuses_a_store_larger_than_the_free_disk(tmp_path, monkeypatch):
    import shutil

    lr, hr, _, _ = good_fov(T=4)
    src = write_canonical(tmp_path / "f1.zarr", lr, hr, fov="f1")
    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "register" / "f1.zarr"
    with pytest.raises(OSError, match=r"4 frames of 64x64 px.*register\.max_frames"):
        reg.register_fov(src, out)
    assert not out.exists() and not list(tmp_path.glob("register/*"))


# ---------------------------------------------------------------------------------------------
# QC tables


def qc_row(sample, session, fov, ncc=0.9):
    return {
        "sample": sample,
        "session": session,
        "fov": fov,
        "frames": 10,
        "ncc": ncc,
        "line_phase_px": 0.1,
        "hr_shift_dy": 0.0,
        "hr_shift_dx": 0.0,
        "drift_rms_px": 0.5,
        "residual_drift_px": 0.02,
        "passed": ncc >= 0.3,
    }


def test_write_read_qc_round_trip(tmp_path):
    path = reg.write_qc(qc_row("mito", "001", "007", ncc=0.1), tmp_path / "a.qc.tsv")
    table = reg.read_qc(path)
    assert list(table.columns) == list(reg.QC_COLUMNS)
    assert table.loc[0, "session"] == "001" and table.loc[0, "fov"] == "007"
    assert table["passed"].dtype == bool and not table.loc[0, "passed"]
    assert table.loc[0, "ncc"] == pytest.approx(0.1)


def test_gather_qc_sorts_by_sample_session_fov(tmp_path):
    rows = [
        qc_row("tubulin", "s1", "f1"),
        qc_row("mito", "s2", "f1"),
        qc_row("mito", "s1", "f2", ncc=0.2),
        qc_row("mito", "s1", "f1"),
    ]
    paths = [reg.write_qc(r, tmp_path / f"{i}.qc.tsv") for i, r in enumerate(rows)]
    out = tmp_path / "qc" / "registration.tsv"
    table = reg.gather_qc(paths, out)
    order = [
        ("mito", "s1", "f1"),
        ("mito", "s1", "f2"),
        ("mito", "s2", "f1"),
        ("tubulin", "s1", "f1"),
    ]
    assert list(zip(table["sample"], table["session"], table["fov"])) == order
    back = reg.read_qc(out)
    assert list(zip(back["sample"], back["session"], back["fov"])) == order
    assert back["passed"].tolist() == [True, False, True, True]
    assert not list(out.parent.glob("*.tmp-*"))
    # no inputs: a header-only table
    empty = reg.gather_qc([], tmp_path / "empty.tsv")
    assert empty.empty and list(reg.read_qc(tmp_path / "empty.tsv").columns) == list(reg.QC_COLUMNS)


@pytest.mark.parametrize("offset_um", [(0.0, 0.0), (0.8, -1.2)])
def test_fit_scan_model_undoes_resonant_distortion(offset_um):
    """A plain rigid shift between a resonant LR mean and the HR target is biased by many pixels;
    forward-modelling the distortion finds the field fraction and the true offset."""
    from fastscan.register import fit_scan_model
    from fastscan.simulate import acquire_hr, acquire_lr_series, render_specimen, resolve_params

    params = resolve_params(
        {
            "field_of_view_um": 51.2,
            "hr": {"pixels": 256},
            "lr": {"pixels": 128, "frames": 8, "drift_um_per_frame": 0.0, "offset_um": list(offset_um)},
        }
    )
    rng = np.random.default_rng(3)
    n = int(round((51.2 + 8) / params["specimen_pixel_size_um"]))
    specimen = render_specimen("mitochondria", shape=(n, n), pixel_size_um=params["specimen_pixel_size_um"], rng=rng)
    hr = acquire_hr(specimen, params=params, rng=rng).astype(np.float64)
    lr, truth = acquire_lr_series(specimen, params=params, rng=rng)
    lr_mean = lr.astype(np.float64).mean(axis=0)
    phase = reg.estimate_line_phase(lr.astype(np.float64))
    fit = fit_scan_model(hr, lr_mean, scale=2, line_phase_px=phase)
    ff, shift, ncc = fit.field_fraction, fit.hr_shift, fit.ncc
    assert fit.evidence > reg.MIN_RESONANT_EVIDENCE
    assert ff == pytest.approx(truth["field_fraction"], abs=0.051)
    assert ncc > 0.9
    # Truth: the specimen appears moved by hr_to_lr_shift_px LR px in the series; the registered
    # HR sits half a line phase from the even rows (mean of both scan directions).
    expected = np.array(truth["hr_to_lr_shift_px"]) * 2 + np.array([0.0, phase])
    np.testing.assert_allclose(shift, expected, atol=0.5)  # HR px, i.e. 0.25 LR px


@pytest.mark.parametrize("lr_blur", [0.0, 1.0])
def test_linear_scan_with_a_softer_lr_is_not_fitted_a_resonant_warp(lr_blur):
    """A real confocal frame (the FV1000 OIB, a one-way linear scan) as the HR target, binned 2x2
    and shot-noise limited as its LR: the field fraction is 0, with or without an LR softer than
    the block average. Before the blur was fitted with the scan model, the softer LR was
    'explained' by a field fraction of about 0.18 (resampling a small warp blurs), which
    registration then undid on every frame."""
    import oiffile
    from scipy import ndimage as ndi

    hr = oiffile.imread(REAL_OIB)[0].astype(np.float64)
    lr = hr.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    if lr_blur:
        lr = ndi.gaussian_filter(lr, lr_blur)
    photons = 30.0  # at the brightest pixel
    noisy = np.random.default_rng(0).poisson(lr / lr.max() * photons) * lr.max() / photons
    fit = reg.fit_scan_model(hr, noisy, scale=2)
    assert fit.field_fraction == 0.0, fit
    assert not fit.evidence > reg.MIN_RESONANT_EVIDENCE
    assert fit.blur_sigma == lr_blur  # the planted softness is found on the BLUR_SIGMAS grid
