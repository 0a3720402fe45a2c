"""The generator's input geometry: scan-model correction of resonant frames."""

import numpy as np
import pytest

from fastscan.geometry import correct_frames, model_geometry, prepare_frames
from fastscan.simulate import acquire_hr, acquire_lr_series, render_specimen, resolve_params


@pytest.fixture(scope="module")
def scan():
    p = resolve_params({"field_of_view_um": 25.6, "hr": {"pixels": 128}, "lr": {"pixels": 64, "frames": 6, "drift_um_per_frame": 0.0}})
    rng = np.random.default_rng(3)
    fov = p["field_of_view_um"]
    n = int(round(fov / p["specimen_pixel_size_um"]))
    specimen = render_specimen("mitochondria", shape=(n, n), pixel_size_um=p["specimen_pixel_size_um"], rng=rng)
    hr = acquire_hr(specimen, params=p, rng=rng).astype(np.float32)
    lr, truth = acquire_lr_series(specimen, params=p, rng=rng)
    return p, hr, lr.astype(np.float32), truth


def _error(lr, hr):
    # LR-grid view of the HR target, both standardised: what is left is geometry and noise.
    small = hr.reshape(hr.shape[0] // 2, 2, hr.shape[1] // 2, 2).mean(axis=(1, 3))
    a, b = lr.mean(axis=0), small
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float(np.mean((a - b) ** 2))


def test_correction_puts_frames_on_the_hr_geometry(scan):
    p, hr, lr, _ = scan
    lr_p = p["lr"]
    corrected = correct_frames(lr, line_phase_px=lr_p["line_phase_px"], field_fraction=lr_p["field_fraction"])
    assert corrected.shape == lr.shape and corrected.dtype == np.float32
    # The true scan model removes most of the misfit; a wrong one (no warp) does not.
    assert _error(corrected, hr) < 0.6 * _error(lr, hr)
    wrong = correct_frames(lr, line_phase_px=lr_p["line_phase_px"], field_fraction=0.0)
    assert _error(corrected, hr) < 0.8 * _error(wrong, hr)


def test_prepare_frames_follows_the_model(scan):
    p, _, lr, _ = scan
    raw = prepare_frames(lr, {"geometry": {"correct": False, "field_fraction": 0.8}})
    np.testing.assert_array_equal(raw, lr.astype(np.float32))
    assert model_geometry({}) is None and model_geometry({"geometry": {"correct": True, "field_fraction": 0.8}})
    meta = {"geometry": {"correct": True, "field_fraction": p["lr"]["field_fraction"]}}
    known = prepare_frames(lr, meta, line_phase_px=p["lr"]["line_phase_px"])
    estimated = prepare_frames(lr, meta)  # line phase estimated from the series itself
    assert np.abs(estimated - known).mean() < 0.05 * np.abs(known).mean()


def test_bad_scan_model_is_refused():
    with pytest.raises(ValueError, match="field_fraction"):
        correct_frames(np.ones((4, 8, 8)), line_phase_px=0.0, field_fraction=1.5)
    with pytest.raises(ValueError, match="line_phase_px"):
        correct_frames(np.ones((8, 8)), line_phase_px=float("nan"), field_fraction=0.5)
