"""The registered per-FOV store (fastscan.stores): its writer and reader agree, and a store without
its scan model is refused by name instead of being restored uncorrected."""

import json
import re

import numpy as np
import pytest
import zarr
from conftest import write_registered

from fastscan import stores
from fastscan.stores import Registration, RegistrationQC, ScanModel, StoreError, read_registered, scan_model
from fastscan.stores import write_registered as write_store


def _registration() -> Registration:
    return Registration(
        drift_px=[[0.0, 0.0], [0.25, -0.5]],
        hr_shift_px=[1.5, -2.0],
        scan=ScanModel(line_phase_px=0.6, field_fraction=0.8, resonant_field_fraction=0.8, resonant_evidence=None, blur_sigma_px=0.5),
        qc=RegistrationQC(passed=True, ncc=0.93, min_ncc=0.3, lr_per_hr=0.05, lr_at_zero_hr=12.5),
        residual_drift_px=0.02,
        photons={"gain_adu_per_photon": 8.0, "offset_adu": None},
    )


def _without(path, key):
    """Drop ``registration.key`` from a store's attributes, as an incomplete or foreign writer would."""
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["fastscan"])
    attrs["registration"] = {k: v for k, v in attrs["registration"].items() if k != key}
    group.attrs["fastscan"] = attrs
    return path


def test_round_trip(tmp_path):
    lr = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    hr = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    reg = _registration()
    out = write_store(tmp_path / "r.zarr", lr=lr, hr=hr, attrs={"scale": 2, "sample": "m", "registration": "replaced"}, registration=reg)
    store = read_registered(out)
    np.testing.assert_array_equal(store.lr[...], lr)
    np.testing.assert_array_equal(store.hr[...], hr)
    assert store.lr.chunks == (1, 8, 8) and store.hr.chunks == (16, 16)
    assert store.attrs["scale"] == 2 and store.attrs["sample"] == "m"
    assert store.scan == reg.scan == scan_model(out)
    assert store.qc == reg.qc and store.photons == reg.photons
    assert Registration.from_attrs(store.registration, store=out) == reg
    # The file format: the keys of docs/architecture.md, in that order, null for the unknown evidence.
    written = json.loads((out / "zarr.json").read_text())["attributes"]["fastscan"]["registration"]
    assert list(written) == [
        "drift_px",
        "hr_shift_px",
        "line_phase_px",
        "field_fraction",
        "resonant_field_fraction",
        "resonant_evidence",
        "blur_sigma_px",
        "ncc",
        "residual_drift_px",
        "passed",
        "min_ncc",
        "lr_per_hr",
        "lr_at_zero_hr",
        "photons",
    ]
    assert written["resonant_evidence"] is None and written["line_phase_px"] == 0.6


def test_hr_target_as_acquired_or_matched_to_its_series(tmp_path):
    """Matched, the target goes through the line registration fitted (LR = 0.05 HR + 12.5); a
    store without the line (older, or a flat target) names itself and how to measure it."""
    lr = np.zeros((2, 8, 8), dtype=np.float32)
    hr = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    store = read_registered(write_store(tmp_path / "r.zarr", lr=lr, hr=hr, attrs={"scale": 2}, registration=_registration()))
    np.testing.assert_array_equal(store.hr_target(), hr)
    matched = store.hr_target(matched=True)
    assert matched.dtype == np.float32
    np.testing.assert_allclose(matched, 0.05 * hr + 12.5, rtol=1e-6)  # float32 arithmetic
    old = read_registered(write_store(tmp_path / "old.zarr", lr=lr, hr=hr, attrs={"scale": 2}, registration=Registration.aligned(2)))
    np.testing.assert_array_equal(old.hr_target(), hr)
    with pytest.raises(StoreError, match=r"old.zarr: .*lr_per_hr and lr_at_zero_hr .*--forcerun register_fov"):
        old.hr_target(matched=True)


def test_numpy_values_are_written_as_json(tmp_path):
    reg = Registration.aligned(3)
    out = write_store(tmp_path / "r.zarr", lr=np.zeros((3, 4, 4), np.float32), hr=np.zeros((8, 8), np.float32), attrs={"scale": np.int64(2)}, registration=reg)
    assert read_registered(out).attrs["scale"] == 2
    assert Registration.from_attrs(read_registered(out).registration, store=out) == reg


@pytest.mark.parametrize("key", ["line_phase_px", "field_fraction"])
def test_missing_scan_model_names_the_store_and_the_key(tmp_path, key):
    path = _without(write_registered(tmp_path / "r.zarr"), key)
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "r.zarr")) + f".*registration\\.{key}"):
        read_registered(path)
    with pytest.raises(ValueError, match=key):  # a ValueError, as the callers' error handling expects
        scan_model(path)


def test_missing_registration_and_bad_values_are_refused(tmp_path):
    path = write_registered(tmp_path / "r.zarr")
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["fastscan"])
    group.attrs["fastscan"] = {k: v for k, v in attrs.items() if k != "registration"}
    with pytest.raises(StoreError, match="not a registered per-FOV store"):
        read_registered(path)
    group.attrs["fastscan"] = {**attrs, "registration": {**attrs["registration"], "field_fraction": "resonant"}}
    with pytest.raises(StoreError, match="field_fraction.*must be a number"):
        read_registered(path)
    group.attrs["fastscan"] = {**attrs, "registration": {**attrs["registration"], "passed": "yes"}}
    with pytest.raises(StoreError, match="passed must be true or false"):
        _ = read_registered(path).qc


def test_missing_qc_fails_the_dataset(tmp_path):
    from fastscan.dataset import FovEntry, build_dataset

    path = _without(write_registered(tmp_path / "r.zarr"), "passed")
    with pytest.raises(StoreError, match=r"r\.zarr.*registration\.passed"):
        build_dataset([FovEntry(str(path), "m", "s", "a", "train")], tmp_path / "ds.zarr", tile=32, stride=32)
    assert not list(tmp_path.glob("ds.zarr*"))


def test_restore_fov_refuses_a_store_without_its_scan_model(tmp_path, monkeypatch):
    """Before: restored with line phase and field fraction 0, i.e. uncorrected, and nothing failed."""
    pytest.importorskip("torch")
    import fastscan.models
    from fastscan.restore.fov import restore_fov

    path = _without(write_registered(tmp_path / "r.zarr", size=16), "field_fraction")
    loaded = []
    monkeypatch.setattr(fastscan.models, "load_generator", lambda *a, **k: loaded.append(a))
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "r.zarr")) + r".*registration\.field_fraction"):
        restore_fov(path, tmp_path / "out.zarr", models={"mse": "m"}, frames=2)
    assert not loaded  # refused before any model is loaded
    assert not (tmp_path / "out.zarr").exists()


def test_the_synthetic_store_is_a_valid_registered_store(tmp_path):
    store = read_registered(write_registered(tmp_path / "r.zarr", frames=2, passed=False))
    assert store.scan == ScanModel(line_phase_px=0.0, field_fraction=0.0)
    assert store.qc == RegistrationQC(passed=False, ncc=0.1, min_ncc=0.3)
    assert store.registration["drift_px"] == [[0.0, 0.0], [0.0, 0.0]] and store.photons is None
    assert stores.REGISTRATION in store.attrs
