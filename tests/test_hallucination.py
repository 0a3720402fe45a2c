"""Departure of the GAN from the MSE generator: noise estimates, flagged pixels, per-image table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage, stats

from fastscan.hallucination import (
    HALLUCINATION_COLUMNS,
    departure_map,
    estimate_noise_sd,
    hallucination_table,
    robust_sd,
)


def _specimen(shape: tuple[int, int] = (96, 96), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), 4)
    image = (image - image.min()) / (image.max() - image.min())
    return image


def _blob(shape: tuple[int, int], centre: tuple[float, float], sigma: float, amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return amplitude * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def test_robust_sd_ignores_outliers() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0.3, 0.05, 20000)
    values[:1000] = 5.0  # 5 % wild values, e.g. errors at structure edges
    assert robust_sd(values) == pytest.approx(0.05, rel=0.08)
    assert np.std(values) > 0.5  # what a plain standard deviation would have said
    assert np.isnan(robust_sd(np.array([np.nan])))


def test_noise_estimates() -> None:
    rng = np.random.default_rng(2)
    target = _specimen((128, 128))
    noisy = target + rng.normal(0, 0.04, target.shape)
    # The high-pass estimate sees the noise of the image alone, not its smooth structure.
    assert estimate_noise_sd(noisy, method="highpass") == pytest.approx(0.04, rel=0.1)
    assert estimate_noise_sd(target, method="highpass") < 0.005
    # The residual estimate is the spread of reference - target.
    reference = target + rng.normal(0.01, 0.02, target.shape)
    assert estimate_noise_sd(target, reference=reference) == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="reference"):
        estimate_noise_sd(target)
    with pytest.raises(ValueError, match="noise method"):
        estimate_noise_sd(target, reference=reference, method="mad")


def test_identical_outputs_flag_nothing() -> None:
    rng = np.random.default_rng(3)
    target = _specimen()
    mse = (target + rng.normal(0, 0.03, target.shape)).astype(np.float32)
    result = departure_map(mse.copy(), mse, target=target)
    assert not result.flagged.any()
    assert result.fraction_flagged == 0.0
    assert np.isnan(result.flagged_away_share)
    assert result.threshold > 0
    # Even a perfect MSE prediction (noise level 0) does not flag two identical outputs.
    assert not departure_map(target, target, target=target).flagged.any()


def test_invented_blob_is_flagged_exactly_there() -> None:
    rng = np.random.default_rng(4)
    target = _specimen()
    mse = target + rng.normal(0, 0.02, target.shape)
    blob = _blob(target.shape, (30, 60), 3.0, 0.6)
    gan = mse + blob
    result = departure_map(gan, mse, target=target, k=3.0)
    residual = mse - target
    sigma = np.median(np.abs(residual - np.median(residual))) / stats.norm.ppf(0.75)
    assert result.noise_sd == pytest.approx(sigma, rel=1e-6)
    assert result.threshold == pytest.approx(3 * sigma, rel=1e-6)
    np.testing.assert_array_equal(result.flagged, blob > 3 * sigma)
    assert result.flagged[30, 60]
    assert not result.flagged[:, :40].any() and not result.flagged[50:].any()
    assert result.fraction_flagged == pytest.approx((blob > 3 * sigma).mean())
    # The blob is not in the target: the flagged pixels moved away from the truth (all but a few
    # at the blob's rim, where the blob is smaller than twice the MSE generator's own error).
    assert result.flagged_away_share > 0.95


def test_recovered_detail_is_flagged_but_towards_the_target() -> None:
    rng = np.random.default_rng(5)
    base = _specimen()
    detail = _blob(base.shape, (50, 50), 2.5, 0.5)
    target = base + detail
    mse = base + rng.normal(0, 0.01, base.shape)  # blurred the detail away
    gan = mse + detail  # put it back
    result = departure_map(gan, mse, target=target, noise_sd=0.01)
    assert result.flagged[50, 50]
    assert result.flagged_away_share < 0.05


def test_departure_map_rejects_bad_input() -> None:
    a = np.zeros((8, 8))
    with pytest.raises(ValueError, match="shape"):
        departure_map(a, np.zeros((8, 9)), target=a)
    with pytest.raises(ValueError, match="k must be positive"):
        departure_map(a, a, target=a, k=0)
    with pytest.raises(ValueError, match="target"):
        departure_map(a, a)


def _store(path: Path, *, invent: bool, methods: tuple[str, ...] = ("mse", "gan")) -> Path:
    rng = np.random.default_rng(6)
    hr = _specimen((64, 64)).astype(np.float32)
    lr = hr.reshape(32, 2, 32, 2).mean(axis=(1, 3))[None].repeat(2, axis=0).astype(np.float32)
    mse = np.stack([hr + rng.normal(0, 0.02, hr.shape) for _ in range(2)]).astype(np.float32)
    gan = mse.copy()
    if invent:
        gan[1] += _blob(hr.shape, (20, 20), 3.0, 0.8).astype(np.float32)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("lr", data=lr)
    group.create_array("hr", data=hr)
    arrays = {"mse": mse, "gan": gan}
    for method in methods:
        group.create_array(method, data=arrays[method])
    group.attrs["fastscan"] = {"frames": [4, 7], "methods": list(methods), "scale": 2, "session": "s1", "fov": "f1"}
    return path


def test_hallucination_table(tmp_path: Path) -> None:
    root = tmp_path / "restore" / "fov"
    invented = _store(root / "mito" / "mito" / "s1" / "f1.zarr", invent=True)
    same = _store(root / "mito" / "mito" / "s1" / "f2.zarr", invent=False)
    only_mse = _store(root / "mito" / "mito" / "s1" / "f3.zarr", invent=False, methods=("mse",))
    df = hallucination_table([invented, {"restored": same, "sample": "mito", "fov": "f2"}, only_mse])
    assert list(df.columns) == list(HALLUCINATION_COLUMNS)
    assert len(df) == 4  # two frames of each store with both methods
    assert df["model"].tolist() == ["mito"] * 4
    assert df["fov"].tolist() == ["f1", "f1", "f2", "f2"]
    assert df["frame"].tolist() == [4, 7, 4, 7]
    flagged = df["fraction_flagged"].tolist()
    assert flagged[0] == 0.0 and flagged[1] > 0.005 and flagged[2:] == [0.0, 0.0]
    np.testing.assert_allclose(df["threshold"], 3 * df["noise_sd"], rtol=1e-12)
    assert set(df["noise"]) == {"residual"}
