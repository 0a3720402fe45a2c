"""Metric definitions, baselines geometry and per-FOV evaluation of restored stores."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from skimage import metrics as skm

from fastscan.baselines import (
    METHOD_COLOURS,
    METHOD_LABELS,
    METHODS,
    finetune_pairs,
    method_colour,
    method_label,
    method_sort_key,
    upsample,
)
from fastscan.metrics import (
    ABLATION_COLUMNS,
    GENERALISATION_COLUMNS,
    METHOD_SUMMARY_COLUMNS,
    METRIC_COLUMNS,
    SUMMARY_COLUMNS,
    ablation_table,
    evaluate_many,
    evaluate_restored,
    generalisation_table,
    model_pairs,
    nrmse,
    psnr,
    read_metrics_tsv,
    read_optional_metrics,
    ssim,
    summarise,
    summarise_methods,
    write_tsv,
)

# ----------------------------------------------------------------------------- baselines


def _reference_bilinear_1d(x: np.ndarray, scale: int) -> np.ndarray:
    """Half-pixel-centred linear interpolation, written out as torch's align_corners=False does it."""
    n = x.shape[0]
    out = np.empty(n * scale)
    for o in range(n * scale):
        src = max((o + 0.5) / scale - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, n - 1)
        w = src - i0
        out[o] = (1 - w) * x[i0] + w * x[i1]
    return out


def _reference_bilinear(image: np.ndarray, scale: int) -> np.ndarray:
    rows = np.stack([_reference_bilinear_1d(r, scale) for r in image])
    return np.stack([_reference_bilinear_1d(c, scale) for c in rows.T]).T


@pytest.mark.parametrize("scale", [2, 3])
def test_bilinear_matches_reference(scale: int) -> None:
    image = np.random.default_rng(1).random((9, 11))
    got = upsample(image, scale=scale, order=1)
    want = _reference_bilinear(image, scale)
    assert got.dtype == np.float32
    assert got.shape == (9 * scale, 11 * scale)
    # Away from the border the interpolant is pure geometry.
    np.testing.assert_allclose(got[scale:-scale, scale:-scale], want[scale:-scale, scale:-scale], atol=1e-6)
    # At the border the edge value is repeated, as torch clamps the source coordinate.
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_lr_pixel_centre_lands_on_hr_centre() -> None:
    # A linear ramp sampled at LR centres i must read back i at HR coordinate 2i + 0.5.
    image = np.tile(np.arange(8, dtype=np.float64), (8, 1))
    hr = upsample(image, scale=2, order=1)
    x = np.arange(16)
    expected = np.clip((x + 0.5) / 2 - 0.5, 0, 7)
    np.testing.assert_allclose(hr[4], expected, atol=1e-6)


def test_bilinear_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    stack = np.random.default_rng(2).random((3, 10, 12)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(stack)[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(upsample(stack, scale=2, order=1), want, atol=1e-6)


def test_upsample_stack_is_per_frame() -> None:
    stack = np.random.default_rng(3).random((3, 6, 7))
    for order in (1, 3):
        got = upsample(stack, scale=2, order=order)
        assert got.shape == (3, 12, 14)
        for i in range(3):
            np.testing.assert_allclose(got[i], upsample(stack[i], scale=2, order=order), atol=1e-6)


def test_bicubic_reproduces_smooth_signal_better_than_bilinear() -> None:
    y, x = np.mgrid[0:16, 0:16]
    lr = np.sin(x / 3.0) * np.cos(y / 4.0)
    hy, hx = np.mgrid[0:32, 0:32]
    # HR pixel centres in LR coordinates under the pixel-area geometry.
    truth = np.sin(((hx + 0.5) / 2 - 0.5) / 3.0) * np.cos(((hy + 0.5) / 2 - 0.5) / 4.0)
    inner = (slice(4, -4), slice(4, -4))
    err1 = np.abs(upsample(lr, order=1) - truth)[inner].max()
    err3 = np.abs(upsample(lr, order=3) - truth)[inner].max()
    assert err3 < err1 / 3


@pytest.mark.parametrize("bad", [{"scale": 0}, {"scale": 1.5}, {"order": 7}])
def test_upsample_rejects_bad_options(bad: dict) -> None:
    with pytest.raises(ValueError):
        upsample(np.zeros((4, 4)), **bad)
    with pytest.raises(ValueError, match="shape"):
        upsample(np.zeros(4))


def test_method_vocabulary() -> None:
    assert METHODS == ("bilinear", "bicubic", "classical", "mse", "gan", "finetuned")
    assert set(METHOD_LABELS) == set(METHODS) == set(METHOD_COLOURS)
    assert len(set(METHOD_COLOURS.values())) == len(METHODS)
    assert METHOD_LABELS["classical"] == "Classical cascade"
    assert sorted(["gan", "zzz", "bilinear", "aaa", "mse"], key=method_sort_key) == [
        "bilinear",
        "mse",
        "gan",
        "aaa",
        "zzz",
    ]


def test_finetune_methods_have_labels_colours_and_order() -> None:
    assert finetune_pairs("finetune_250") == 250
    assert finetune_pairs("finetuned") is None and finetune_pairs("finetune_x") is None
    assert method_label("finetune_250") == "GAN fine-tuned (250 pairs)"
    assert method_label("finetune_1") == "GAN fine-tuned (1 pair)"
    # Numeric, not lexical, order of the sizes, after the source GAN.
    assert sorted(["finetune_100", "gan", "finetune_20", "bilinear"], key=method_sort_key) == [
        "bilinear",
        "gan",
        "finetune_20",
        "finetune_100",
    ]
    colours = [method_colour(f"finetune_{n}") for n in (10, 100, 1000, 10000)]
    assert len(set(colours)) == 4
    assert all(c.startswith("#") and len(c) == 7 for c in colours)
    # A size keeps its colour wherever it appears, and none takes another method's colour.
    assert method_colour("finetune_100") == colours[1]
    assert not set(colours) & set(METHOD_COLOURS.values())
    # More pairs, darker shade.
    lum = [sum(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colours]
    assert lum == sorted(lum, reverse=True)


# ----------------------------------------------------------------------------- metric definitions


def test_psnr_of_known_mse() -> None:
    target = np.zeros((16, 16))
    pred = np.full((16, 16), 0.1)
    # MSE = 0.01, so PSNR = 10 log10(1 / 0.01) = 20 dB.
    assert psnr(pred, target) == pytest.approx(20.0)
    # The peak enters squared: halving the range costs 20 log10(2) dB.
    assert psnr(pred, target, data_range=0.5) == pytest.approx(20.0 - 20 * math.log10(2))


def test_psnr_identical_is_infinite_without_warning(recwarn: pytest.WarningsRecorder) -> None:
    a = np.random.default_rng(0).random((8, 8))
    assert psnr(a, a) == math.inf
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_nrmse_by_hand() -> None:
    target = np.ones((2, 2))
    pred = target.copy()
    pred[0, 0] = 1.2
    # RMSE = sqrt(0.2**2 / 4) = 0.1 and ||target|| / sqrt(4) = 1.
    assert nrmse(pred, target) == pytest.approx(0.1)
    assert psnr(pred, target) == pytest.approx(20.0)


def test_ssim_by_hand_single_window() -> None:
    # On a 7 x 7 image the 7 x 7 window fits once, centred on the middle pixel, so the mean SSIM
    # is the SSIM formula with the statistics of the whole image (sample covariance, N - 1 = 48).
    target = np.arange(49, dtype=np.float64).reshape(7, 7) / 48
    pred = 0.5 * target + 0.2
    mx, my = pred.mean(), target.mean()
    vx, vy = pred.var(ddof=1), target.var(ddof=1)
    cxy = ((pred - mx) * (target - my)).sum() / 48
    c1, c2 = 0.01**2, 0.03**2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(pred, target) == pytest.approx(want, rel=1e-10)
    # Constant images: only the luminance term is left, (2 * 0.6 * 0.5 + c1) / (0.36 + 0.25 + c1).
    flat = ssim(np.full((7, 7), 0.6), np.full((7, 7), 0.5))
    assert flat == pytest.approx((0.6 + c1) / (0.61 + c1), rel=1e-10)


def test_nrmse_definition() -> None:
    rng = np.random.default_rng(4)
    target = rng.random((10, 10)) + 0.5
    pred = target + rng.normal(0, 0.1, target.shape)
    want = np.sqrt(np.mean((pred - target) ** 2)) / np.sqrt(np.mean(target**2))
    assert nrmse(pred, target) == pytest.approx(want, rel=1e-12)
    assert nrmse(pred, target) == pytest.approx(np.linalg.norm(pred - target) / np.linalg.norm(target))


def test_ssim_definition() -> None:
    rng = np.random.default_rng(5)
    a = rng.random((32, 32))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    want = skm.structural_similarity(a, b, data_range=1.0, win_size=7, gaussian_weights=False)
    assert ssim(b, a) == pytest.approx(want, rel=1e-12)
    assert 0 < ssim(b, a) < 1
    # A brightness offset changes the luminance term only, so the score drops but stays close to 1.
    shifted = ssim(a + 0.1, a)
    assert 0.9 < shifted < 1.0


def test_ssim_uses_data_range_and_float64() -> None:
    rng = np.random.default_rng(6)
    a = rng.random((20, 20)).astype(np.float32)
    b = (a + 0.05 * rng.standard_normal(a.shape)).astype(np.float32)
    # A wider range enlarges the stabilising constants (K * L)**2, which pulls SSIM towards 1.
    assert ssim(b, a, data_range=10.0) > ssim(b, a, data_range=1.0)
    assert ssim(b, a) == pytest.approx(ssim(b.astype(np.float64), a.astype(np.float64)), rel=1e-12)


def test_metrics_reject_shape_mismatch() -> None:
    for fn in (psnr, ssim, nrmse):
        with pytest.raises(ValueError, match="shape"):
            fn(np.zeros((8, 8)), np.zeros((8, 9)))


# ----------------------------------------------------------------------------- restored stores


def _write_restored(
    path: Path,
    *,
    n: int = 2,
    lr_size: int = 12,
    scale: int = 2,
    methods: tuple[str, ...] = ("mse", "gan"),
    frames: list[int] | None = None,
    perfect: str | None = "gan",
    shape_override: dict[str, tuple[int, ...]] | None = None,
) -> Path:
    rng = np.random.default_rng(7)
    hr = rng.random((lr_size * scale, lr_size * scale)).astype(np.float32)
    lr = rng.random((n, lr_size, lr_size)).astype(np.float32)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("lr", data=lr)
    group.create_array("hr", data=hr)
    for method in methods:
        if method == perfect:
            data = np.broadcast_to(hr, (n, *hr.shape)).copy()
        else:
            data = np.clip(hr + rng.normal(0, 0.05, (n, *hr.shape)), 0, 1).astype(np.float32)
        if shape_override and method in shape_override:
            data = np.zeros(shape_override[method], dtype=np.float32)
        group.create_array(method, data=data)
    group.attrs["fastscan"] = {
        "frames": frames if frames is not None else [10 + i for i in range(n)],
        "methods": list(methods),
        "scale": scale,
        "normalisation": {"hr": [0.0, 1.0]},
    }
    return path


def test_evaluate_restored_rows(tmp_path: Path) -> None:
    store = _write_restored(tmp_path / "fov1.zarr", n=3)
    df = evaluate_restored(store, model="m1", sample="mito", session="s1", fov="001")
    assert list(df.columns) == list(METRIC_COLUMNS)
    assert len(df) == 3 * 4
    assert list(df["method"].iloc[:4]) == ["bilinear", "bicubic", "mse", "gan"]
    assert sorted(df["frame"].unique()) == [10, 11, 12]
    assert set(df["fov"]) == {"001"}
    gan = df[df["method"] == "gan"]
    assert np.isinf(gan["psnr"]).all()
    assert gan["ssim"].to_numpy() == pytest.approx(1.0)
    assert gan["nrmse"].to_numpy() == pytest.approx(0.0)
    mse = df[df["method"] == "mse"]
    assert np.isfinite(mse["psnr"]).all()


def test_evaluate_restored_baseline_values(tmp_path: Path) -> None:
    store = _write_restored(tmp_path / "fov.zarr", n=1)
    group = zarr.open_group(str(store), mode="r")
    hr = group["hr"][...]
    bilinear = upsample(group["lr"][0], scale=2, order=1)
    df = evaluate_restored(store, model="m", sample="s", session="x", fov="f")
    row = df[df["method"] == "bilinear"].iloc[0]
    assert row["psnr"] == pytest.approx(psnr(bilinear, hr))
    assert row["ssim"] == pytest.approx(ssim(bilinear, hr))


def test_a_denoising_store_scores_the_input_frame_once(tmp_path: Path) -> None:
    """At scale 1 bilinear and bicubic would both be the frame itself: one row, named bilinear."""
    store = _write_restored(tmp_path / "fov.zarr", n=2, scale=1)
    group = zarr.open_group(str(store), mode="r")
    df = evaluate_restored(store, model="m", sample="s", session="x", fov="f")
    assert list(df["method"].iloc[:3]) == ["bilinear", "mse", "gan"] and len(df) == 2 * 3
    row = df[df["method"] == "bilinear"].iloc[0]
    assert row["psnr"] == pytest.approx(psnr(group["lr"][0].astype(np.float64), group["hr"][...]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape_override": {"gan": (2, 20, 20)}}, "'gan'"),
        ({"frames": [0]}, "frames"),
        ({"scale": 3, "lr_size": 8}, None),
    ],
)
def test_evaluate_restored_shape_errors(tmp_path: Path, kwargs: dict, match: str | None) -> None:
    store = _write_restored(tmp_path / "bad.zarr", **kwargs)
    if match is None:
        # scale 3 is consistent, so it must evaluate; break it by editing the attribute instead.
        group = zarr.open_group(str(store), mode="a")
        attrs = dict(group.attrs["fastscan"])
        attrs["scale"] = 2
        group.attrs["fastscan"] = attrs
        match = "'lr'.*'hr'"
    with pytest.raises(ValueError, match=match) as info:
        evaluate_restored(store, model="m", sample="s", session="x", fov="f")
    assert "bad.zarr" in str(info.value)


def test_evaluate_restored_missing_array(tmp_path: Path) -> None:
    store = _write_restored(tmp_path / "fov.zarr")
    group = zarr.open_group(str(store), mode="a")
    attrs = dict(group.attrs["fastscan"])
    attrs["methods"] = ["mse", "gan", "finetuned"]
    group.attrs["fastscan"] = attrs
    with pytest.raises(ValueError, match="finetuned"):
        evaluate_restored(store, model="m", sample="s", session="x", fov="f")


def _model_dir(path: Path, dataset: dict) -> Path:
    path.mkdir(parents=True)
    (path / "model.json").write_text(json.dumps({"format": "fastscan-model/1", "dataset": dataset}))
    return path


def test_model_pairs_reads_model_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert model_pairs(_model_dir(tmp_path / "a", {"tiles_train": 120, "counts": {"train": 7}})) == 120
    assert model_pairs(_model_dir(tmp_path / "b", {"counts": {"train": 288, "val": 108}})) == 288
    with caplog.at_level(logging.WARNING, logger="fastscan.metrics"):
        assert model_pairs(_model_dir(tmp_path / "c", {"path": "x"})) is None
        assert model_pairs(tmp_path / "missing") is None
    assert "missing" in caplog.text


def test_evaluate_restored_pairs_column(tmp_path: Path) -> None:
    store = _write_restored(tmp_path / "fov.zarr", n=1, methods=("mse", "gan", "finetune_40"), perfect=None)
    mse_dir = _model_dir(tmp_path / "train" / "m" / "mse", {"tiles_train": 96})
    # Relative paths in the store resolve against the run's working directory (`root`).
    group = zarr.open_group(str(store), mode="a")
    attrs = dict(group.attrs["fastscan"])
    attrs["models"] = {"mse": str(mse_dir.relative_to(tmp_path)), "gan": "models/gone"}
    group.attrs["fastscan"] = attrs
    df = evaluate_restored(store, model="m", sample="s", session="x", fov="f", root=tmp_path).set_index("method")
    assert df.loc["mse", "pairs"] == 96
    assert pd.isna(df.loc["gan", "pairs"])  # model.json not found
    assert df.loc["finetune_40", "pairs"] == 40  # from the method's name
    assert df.loc[["bilinear", "bicubic"], "pairs"].isna().all()
    assert df["pairs"].dtype == "Int64"
    override = evaluate_restored(store, model="m", sample="s", session="x", fov="f", pairs={"gan": 500}, root=tmp_path)
    assert override.set_index("method").loc["gan", "pairs"] == 500
    out = write_tsv(df.reset_index()[list(METRIC_COLUMNS)], tmp_path / "metrics.tsv")
    back = read_metrics_tsv(out).set_index("method")
    assert back.loc["mse", "pairs"] == 96 and pd.isna(back.loc["bilinear", "pairs"])


def test_read_metrics_tsv_pairs_spellings(tmp_path: Path) -> None:
    df = _table().drop(columns="pairs")
    old = tmp_path / "old.tsv"
    df.to_csv(old, sep="\t", index=False)
    assert read_metrics_tsv(old)["pairs"].isna().all()  # tables from before the column existed
    df["pairs"] = ["NA", "12", "", "12", "NaN", "12"]
    other = tmp_path / "other.tsv"
    df.to_csv(other, sep="\t", index=False)
    assert read_metrics_tsv(other)["pairs"].tolist()[:2] == [pd.NA, 12]
    df["pairs"] = ["12", "12", "12", "1.5", "12", "12"]
    df.to_csv(other, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"other\.tsv: row 5: 'pairs'"):
        read_metrics_tsv(other)


def test_evaluate_many_concatenates(tmp_path: Path) -> None:
    a = _write_restored(tmp_path / "a.zarr", n=1)
    b = _write_restored(tmp_path / "b.zarr", n=2, methods=("mse",))
    df = evaluate_many(
        [
            {"restored": a, "model": "m", "sample": "mito", "session": "1", "fov": "a"},
            {"restored": b, "model": "m", "sample": "actin", "session": "1", "fov": "b"},
        ]
    )
    assert len(df) == 1 * 4 + 2 * 3
    assert evaluate_many([]).empty


# ----------------------------------------------------------------------------- summary and TSV


def _table() -> pd.DataFrame:
    rows = []
    for method, (p, s) in {"gan": (30.0, 0.9), "bilinear": (22.0, 0.5), "mse": (28.0, 0.8)}.items():
        for frame, delta in enumerate((-1.0, 1.0)):
            rows.append(
                {
                    "model": "m",
                    "sample": "mito",
                    "session": "1",
                    "fov": "001",
                    "frame": frame,
                    "method": method,
                    "psnr": p + delta,
                    "ssim": s + delta / 100,
                    "nrmse": 0.1,
                }
            )
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def test_summarise_table_ii() -> None:
    summary = summarise(_table())
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert list(summary["method"]) == ["bilinear", "mse", "gan"]
    gan = summary.set_index("method").loc["gan"]
    assert gan["n"] == 2
    assert gan["psnr_mean"] == pytest.approx(30.0)
    assert gan["psnr_sd"] == pytest.approx(math.sqrt(2.0))  # sample SD of 29 and 31
    assert gan["ssim_mean"] == pytest.approx(0.9)
    assert gan["label"] == "GAN"


def test_summarise_ignores_infinite_psnr(caplog: pytest.LogCaptureFixture) -> None:
    df = _table()
    df.loc[(df["method"] == "gan") & (df["frame"] == 0), "psnr"] = math.inf
    with caplog.at_level(logging.WARNING, logger="fastscan.metrics"):
        summary = summarise(df)
    gan = summary.set_index("method").loc["gan"]
    assert gan["n"] == 2
    assert gan["psnr_n"] == 1
    assert gan["psnr_mean"] == pytest.approx(31.0)
    assert math.isnan(gan["psnr_sd"])
    assert "not finite" in caplog.text


def test_summarise_methods_pools_a_models_samples() -> None:
    """What a model's own documents show: each method over all its test images, whatever their
    sample, with Table II's statistics (an infinite PSNR left out of the mean)."""
    other = _table().assign(sample="tissue", psnr=lambda d: d["psnr"] + 2.0)
    df = pd.concat([_table(), other], ignore_index=True)
    df.loc[(df["method"] == "bilinear") & (df["sample"] == "mito") & (df["frame"] == 0), "psnr"] = math.inf  # 21 dB before
    summary = summarise_methods(df)
    assert list(summary.columns) == list(METHOD_SUMMARY_COLUMNS)
    assert list(summary["method"]) == ["bilinear", "mse", "gan"] and list(summary["n"]) == [4, 4, 4]
    by = summary.set_index("method")
    assert by.loc["gan", "psnr_mean"] == pytest.approx(31.0)  # 29, 31, 31, 33
    assert by.loc["bilinear", "psnr_mean"] == pytest.approx((23.0 + 23.0 + 25.0) / 3) and by.loc["bilinear", "psnr_n"] == 3


def test_write_tsv_roundtrip(tmp_path: Path) -> None:
    df = _table()
    df.loc[0, "psnr"] = math.inf
    df.loc[1, "psnr"] = 12.345678
    out = write_tsv(df, tmp_path / "sub" / "metrics.tsv")
    text = out.read_text()
    assert "12.3457" in text and "12.34567" not in text
    assert "\tinf\t" in text
    assert not list(out.parent.glob(".*tmp"))
    back = read_metrics_tsv(out)
    assert list(back.columns) == list(METRIC_COLUMNS)
    assert back["fov"].iloc[0] == "001"
    assert back["psnr"].iloc[0] == math.inf
    assert back["frame"].dtype == np.int64


def _rows(key: str, name: str, method: str, pairs: int | None, psnrs: list[float], frames: list[int] | None = None):
    frames = frames if frames is not None else list(range(len(psnrs)))
    return [
        {
            key: name,
            "model": "m",
            "sample": "mito",
            "session": "1",
            "fov": "001",
            "frame": f,
            "method": method,
            "psnr": p,
            "ssim": p / 100,
            "nrmse": 0.1,
            "pairs": pairs,
        }
        for f, p in zip(frames, psnrs, strict=True)
    ]


def test_ablation_table() -> None:
    rows = []
    for n, (a, b) in {100: (20.0, 22.0), 30: (18.0, 18.0)}.items():
        rows += _rows("ablation", "m", "gan", n, [a, b])
        rows += _rows("ablation", "m", "mse", n, [a + 1, b + 1])
        # The baseline is scored again with every training-set size: the same two frames.
        rows += _rows("ablation", "m", "bilinear", None, [15.0, 17.0])
    table = ablation_table(pd.DataFrame(rows))
    assert list(table.columns) == list(ABLATION_COLUMNS)
    assert list(zip(table["method"], table["pairs"].astype("float"), strict=True))[1:] == [
        ("mse", 30.0),
        ("mse", 100.0),
        ("gan", 30.0),
        ("gan", 100.0),
    ]
    bilinear = table.iloc[0]
    assert bilinear["method"] == "bilinear" and pd.isna(bilinear["pairs"])
    assert bilinear["n"] == 2  # counted once, not once per size
    assert bilinear["psnr_mean"] == pytest.approx(16.0)
    gan100 = table[(table["method"] == "gan") & (table["pairs"] == 100)].iloc[0]
    assert gan100["psnr_mean"] == pytest.approx(21.0)
    assert gan100["psnr_sd"] == pytest.approx(math.sqrt(2.0))
    assert gan100["ssim_mean"] == pytest.approx(0.21)
    assert ablation_table(pd.DataFrame(columns=["ablation", *METRIC_COLUMNS])).empty


def test_generalisation_table() -> None:
    rows = _rows("finetune", "tissue", "finetune_100", 100, [25.0, 27.0])
    rows += _rows("finetune", "tissue", "gan", 288, [20.0, 21.0])
    rows += _rows("finetune", "tissue", "finetune_20", 20, [23.0, 23.0])
    rows += _rows("finetune", "tissue", "bilinear", None, [15.0, 16.0])
    table = generalisation_table(pd.DataFrame(rows))
    assert list(table.columns) == list(GENERALISATION_COLUMNS)
    assert list(table["method"]) == ["bilinear", "gan", "finetune_20", "finetune_100"]
    assert list(table["label"])[-1] == "GAN fine-tuned (100 pairs)"
    assert table.set_index("method").loc["finetune_100", "psnr_mean"] == pytest.approx(26.0)
    assert table.set_index("method").loc["finetune_20", "pairs"] == 20


def test_read_optional_metrics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    present = tmp_path / "ablation" / "mito" / "metrics.tsv"
    present.parent.mkdir(parents=True)
    write_tsv(_table(), present)
    missing = tmp_path / "ablation" / "actin" / "metrics.tsv"
    with caplog.at_level(logging.INFO, logger="fastscan.metrics"):
        df = read_optional_metrics([present, missing], key="ablation")
    assert set(df["ablation"]) == {"mito"} and len(df) == len(_table())
    assert "actin" in caplog.text
    none = read_optional_metrics([missing], key="ablation")
    assert none.empty and "ablation" in none.columns


def test_write_tsv_replaces_existing(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("old\n")
    write_tsv(summarise(_table()), path)
    assert path.read_text().startswith("model\tsample\tmethod")
