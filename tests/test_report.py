"""Report figures and tables from small synthetic inputs."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from fastscan.baselines import METHODS
from fastscan.metrics import METRIC_COLUMNS, SUMMARY_COLUMNS, write_tsv
from fastscan.report import (
    REPORT_FILES,
    plot_ablation,
    plot_example_panels,
    plot_hallucination_panels,
    plot_metric_boxes,
    plot_slide_thumbnails,
    plot_training_curves,
    registration_qc_table,
    table_html,
    write_report_figures,
)
from fastscan.report.curves import _curve_runs
from fastscan.report.panels import _brightest_variance_region, _lowest_level, _nice_bar_length

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# A placeholder is a 6.5 x 2 inch text figure at 150 dpi.
PLACEHOLDER_SIZE = (975, 300)


def _metrics_table(rng: np.random.Generator) -> pd.DataFrame:
    centres = {"bilinear": (22.7, 0.52), "bicubic": (23.1, 0.55), "mse": (28.5, 0.83), "gan": (29.7, 0.87)}
    rows = []
    for sample in ("mito", "actin"):
        for fov in ("001", "002"):
            for frame in range(5):
                for method, (p, s) in centres.items():
                    rows.append(
                        {
                            "model": "demo",
                            "sample": sample,
                            "session": "s1",
                            "fov": fov,
                            "frame": frame,
                            "method": method,
                            "psnr": p + rng.normal(0, 1.0),
                            "ssim": min(1.0, s + rng.normal(0, 0.03)),
                            "nrmse": 0.2 + rng.normal(0, 0.02),
                        }
                    )
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def _blobs(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    image = np.zeros(shape)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for _ in range(25):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1.5, 4) ** 2))
    return image / image.max()


def _restored_store(path: Path, rng: np.random.Generator, *, methods=("mse", "gan"), pixel=True) -> Path:
    hr = _blobs((128, 128), rng).astype(np.float32)
    lr = hr.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    lr = np.stack([lr + rng.normal(0, 0.08, lr.shape) for _ in range(2)]).astype(np.float32)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("lr", data=lr)
    group.create_array("hr", data=hr)
    for k, method in enumerate(methods):
        noise = 0.1 / (k + 1)
        group.create_array(method, data=(hr + rng.normal(0, noise, (2, *hr.shape))).astype(np.float32))
    attrs = {"frames": [3, 4], "methods": list(methods), "scale": 2}
    if pixel:
        attrs["hr_pixel_size_um"] = [0.2, 0.2]
    group.attrs["fastscan"] = attrs
    return path


def _curves(path: Path, rng: np.random.Generator) -> Path:
    rows = []
    for stage, n, base in (("mse", 6, 0.05), ("critic", 3, 0.7), ("gan", 5, 0.3)):
        for epoch in range(n):
            rows.append(
                {
                    "stage": stage,
                    "epoch": epoch,
                    "train_loss": base * 0.8**epoch * rng.uniform(0.9, 1.1),
                    "valid_loss": base * 0.85**epoch * rng.uniform(0.9, 1.1),
                    "valid_psnr": math.nan if stage == "critic" else 24 + epoch * 0.8 + (stage == "gan") * 4,
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def _qc(path: Path) -> Path:
    pd.DataFrame(
        {
            "sample": ["mito", "mito", "actin"],
            "session": ["s1", "s1", "s1"],
            "fov": ["001", "002", "<003>"],
            "ncc": [0.91, 0.42, 0.88],
            "min_ncc": [0.6, 0.6, 0.6],
            "passed": [True, False, True],
        }
    ).to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_plot_metric_boxes(tmp_path: Path, metric: str) -> None:
    df = _metrics_table(np.random.default_rng(0))
    out = plot_metric_boxes(df, tmp_path / f"{metric}.png", metric=metric)
    _assert_png(out)


def test_plot_metric_boxes_tolerates_infinite_psnr(tmp_path: Path) -> None:
    df = _metrics_table(np.random.default_rng(1))
    df.loc[df["method"] == "gan", "psnr"] = math.inf
    _assert_png(plot_metric_boxes(df, tmp_path / "b.png", metric="psnr"))
    with pytest.raises(ValueError, match="metric"):
        plot_metric_boxes(df, tmp_path / "c.png", metric="psnr_db")


def test_plot_example_panels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    stores = [
        _restored_store(tmp_path / "mito" / "s1" / "001.zarr", rng),
        _restored_store(tmp_path / "actin" / "s1" / "002.zarr", rng, methods=("mse",), pixel=False),
    ]
    _assert_png(plot_example_panels(stores, tmp_path / "examples.png", frame_index=1))
    _assert_png(plot_example_panels(stores[:1], tmp_path / "fixed.png", inset=(10, 20, 32, 32)))
    with pytest.raises(ValueError, match="inset"):
        plot_example_panels(stores[:1], tmp_path / "bad.png", inset=(120, 120, 32, 32))
    with pytest.raises(ValueError, match="frame_index"):
        plot_example_panels(stores[:1], tmp_path / "bad.png", frame_index=5)


def test_brightest_variance_region_finds_structure() -> None:
    image = np.zeros((200, 200))
    image[130:150, 40:60] = 1.0
    y0, x0, h, w = _brightest_variance_region(image, 64)
    assert (h, w) == (64, 64)
    assert y0 <= 130 and y0 + h >= 150 and x0 <= 40 and x0 + w >= 60
    assert 0 <= y0 <= 200 - 64 and 0 <= x0 <= 200 - 64


def test_nice_bar_length() -> None:
    assert _nice_bar_length(102.4) == 20.0
    assert _nice_bar_length(25.6) == 5.0
    assert _nice_bar_length(6.0) == 1.0


def test_plot_training_curves(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    one = _curves(tmp_path / "m1" / "curves.tsv", rng)
    two = _curves(tmp_path / "m2" / "curves.tsv", rng)
    _assert_png(plot_training_curves([one], tmp_path / "curves1.png"))
    _assert_png(plot_training_curves([one, two], tmp_path / "curves2.png"))
    bad = tmp_path / "bad.tsv"
    pd.DataFrame({"stage": ["mse"], "epoch": [0]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match="valid_psnr"):
        plot_training_curves([bad], tmp_path / "bad.png")


def test_registration_qc_table(tmp_path: Path) -> None:
    qc = _qc(tmp_path / "registration.tsv")
    before = qc.read_bytes()
    fragment = registration_qc_table(qc)
    assert "1 of 3 FOVs failed" in fragment
    assert fragment.count("FAILED") == 1
    assert fragment.count("<tr") == 4
    assert "&lt;003&gt;" in fragment and "<003>" not in fragment
    assert qc.read_bytes() == before


def test_registration_qc_names_hr_targets_of_another_brightness(tmp_path: Path) -> None:
    """Within a sample, a FOV whose target is 3x dimmer for its frames is named with its factor;
    other samples (another microscope), unmeasured values and failed FOVs do not count."""
    qc = tmp_path / "registration.tsv"
    rows = {
        "sample": ["mito"] * 5 + ["actin"] * 2,
        "session": ["s1"] * 7,
        "fov": ["001", "002", "003", "004", "005", "a1", "a2"],
        "ncc": [0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9],
        "min_ncc": [0.3] * 7,
        "passed": [True, True, True, True, False, True, True],
        "lr_per_hr": [0.050, 0.053, 0.0167, "", 0.5, 5.0, 5.2],
    }
    pd.DataFrame(rows).to_csv(qc, sep="\t", index=False)
    fragment = registration_qc_table(qc)
    assert "sample <b>mito</b> (median 0.05): s1/003 (x0.33)" in fragment
    assert "s1/005" not in fragment.split("<table")[0] and "actin</b>" not in fragment
    pd.DataFrame({**rows, "lr_per_hr": [0.050, 0.053, 0.051, "", 0.5, 5.0, 5.2]}).to_csv(qc, sep="\t", index=False)
    assert "brighter or dimmer" not in registration_qc_table(qc)


def test_registration_qc_without_passed_column(tmp_path: Path) -> None:
    qc = tmp_path / "qc.tsv"
    pd.DataFrame({"fov": ["a", "b"], "ncc": [0.9, 0.1], "min_ncc": [0.5, 0.5]}).to_csv(qc, sep="\t", index=False)
    assert "1 of 2 FOVs failed" in registration_qc_table(qc)


def test_write_report_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    metrics = write_tsv(_metrics_table(rng), tmp_path / "metrics.tsv")
    stores = [_restored_store(tmp_path / "restore" / s / "s1" / "001.zarr", rng) for s in ("mito", "actin")]
    curves = [_curves(tmp_path / "train" / "demo" / "curves.tsv", rng)]
    out_dir = tmp_path / "report"
    written = write_report_figures(metrics_tsv=metrics, restored=stores, curves=curves, qc_tsv=_qc(tmp_path / "qc.tsv"), out_dir=out_dir)
    assert [p.name for p in written] == list(REPORT_FILES)
    for path in written:
        if path.suffix == ".png":
            _assert_png(path)
    summary = pd.read_csv(out_dir / "summary.tsv", sep="\t")
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert len(summary) == 2 * 4
    methods = list(summary.loc[summary["sample"] == "mito", "method"])
    assert methods == [m for m in METHODS if m in methods]
    assert "FAILED" in (out_dir / "registration_qc.html").read_text()


def test_write_report_figures_with_empty_inputs(tmp_path: Path) -> None:
    metrics = write_tsv(pd.DataFrame(columns=list(METRIC_COLUMNS)), tmp_path / "metrics.tsv")
    written = write_report_figures(metrics_tsv=metrics, restored=[], curves=[], qc_tsv=None, out_dir=tmp_path / "r")
    assert all(p.is_file() for p in written)


# ----------------------------------------------------------------------------- optional tables, new figures


def _ablation_metrics(path: Path, rng: np.random.Generator) -> Path:
    rows = []
    for n in (30, 100, 300):
        for frame in range(3):
            for method, base in (("mse", 24.0), ("gan", 23.0), ("bilinear", 20.0)):
                rows.append(
                    {
                        "model": "demo",
                        "sample": "mito",
                        "session": "s1",
                        "fov": "001",
                        "frame": frame,
                        "method": method,
                        "psnr": base + (0 if method == "bilinear" else 2 * np.log10(n)) + rng.normal(0, 0.2),
                        "ssim": 0.5 + (0 if method == "bilinear" else 0.05 * np.log10(n)),
                        "nrmse": 0.2,
                        "pairs": None if method == "bilinear" else n,
                    }
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tsv(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)), path)


def _finetune_metrics(path: Path, rng: np.random.Generator) -> Path:
    rows = []
    for frame in range(3):
        for method, pairs, p in (
            ("bilinear", None, 20.0),
            ("gan", 288, 21.0),
            ("finetune_100", 100, 25.0),
            ("finetune_20", 20, 23.0),
        ):
            rows.append(
                {
                    "model": "demo",
                    "sample": "tissue",
                    "session": "s1",
                    "fov": "007",
                    "frame": frame,
                    "method": method,
                    "psnr": p + rng.normal(0, 0.2),
                    "ssim": p / 40,
                    "nrmse": 0.2,
                    "pairs": pairs,
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tsv(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)), path)


def _ome_zarr(path: Path, *, version: str = "0.5", shape: tuple[int, int] = (96, 160)) -> Path:
    rng = np.random.default_rng(9)
    group = zarr.open_group(str(path), mode="w")
    level0 = rng.random(shape).astype(np.float32)
    level1 = level0.reshape(shape[0] // 2, 2, shape[1] // 2, 2).mean(axis=(1, 3))
    group.create_array("0", data=level0)
    group.create_array("1", data=level1)
    multiscales = [
        {
            "axes": [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space"}],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.2, 0.2]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [0.4, 0.4]}]},
            ],
        }
    ]
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    else:
        multiscales[0]["version"] = "0.4"
        group.attrs["multiscales"] = multiscales
    return path


def test_report_files_match_the_rule_outputs(root: Path) -> None:
    text = (root / "workflow" / "rules" / "report.smk").read_text()
    rule = text[text.index("rule report:") :]
    declared = re.findall(r'"results/report/([^"/]+)"', rule)
    assert sorted(declared) == sorted(REPORT_FILES)
    for caption in re.findall(r'caption="\.\./report/([^"]+)"', text):
        assert (root / "workflow" / "report" / caption).is_file(), caption


def test_curve_files_of_one_model_form_one_run() -> None:
    paths = [
        Path("results/train/mito/mse/curves.tsv"),
        Path("results/train/mito/critic/curves.tsv"),
        Path("results/models/mito/curves.tsv"),
        Path("results/train/actin/mse/curves.tsv"),
        Path("results/models/actin/curves.tsv"),
    ]
    runs = _curve_runs(paths)
    assert list(runs) == ["mito", "actin"]
    assert runs["mito"] == paths[:3]


def test_training_stages_are_laid_end_to_end(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(5)
    full = pd.read_csv(_curves(tmp_path / "all.tsv", rng), sep="\t")
    files = []
    for stage, where in (("mse", "train/m/mse"), ("critic", "train/m/critic"), ("gan", "models/m")):
        path = tmp_path / where / "curves.tsv"
        path.parent.mkdir(parents=True)
        full[full["stage"] == stage].to_csv(path, sep="\t", index=False)
        files.append(path)
    captured = {}
    original = plt.close

    def keep(fig=None):  # the figure is closed after saving; look at it first
        if fig is not None and not isinstance(fig, str):
            captured["fig"] = fig
        return original(fig)

    plt.close = keep
    try:
        plot_training_curves(files[::-1], tmp_path / "curves.png")
    finally:
        plt.close = original
    ax_loss = captured["fig"].axes[0]
    xs = sorted({float(x) for line in ax_loss.get_lines() for x in line.get_xdata()})
    # 6 generator epochs, then 3 critic epochs, then 5 GAN epochs on one cumulative axis.
    assert xs == [float(x) for x in range(1, 15)]
    assert "critic" in {t.get_text().lower() for t in ax_loss.texts}


def test_table_html_marks_best_and_escapes() -> None:
    from fastscan.metrics import summarise

    df = _metrics_table(np.random.default_rng(6))
    df.loc[df["sample"] == "mito", "sample"] = "<mito>"
    page = table_html(summarise(df), title="Table II", empty_note="none")
    assert page.count("<tr>") == 1 + 2 * 4
    assert "&lt;mito&gt;" in page and "<mito>" not in page
    assert page.count("±") >= 2 * 4 * 3
    assert "Generator (MSE)" in page
    # Per block the best PSNR, SSIM and NRMSE are bold: the GAN's PSNR/SSIM in this table.
    assert page.count('class="num best"') == 2 * 3
    empty = table_html(summarise(df.iloc[0:0]), title="Table II", empty_note="Nothing was restored.")
    assert "Nothing was restored." in empty and "<table>" not in empty


def test_plot_ablation(tmp_path: Path) -> None:
    from fastscan.metrics import ablation_table, read_optional_metrics

    metrics = _ablation_metrics(tmp_path / "ablation" / "demo" / "metrics.tsv", np.random.default_rng(7))
    table = ablation_table(read_optional_metrics([metrics], key="ablation"))
    out = plot_ablation(table, tmp_path / "fig6.png")
    _assert_png(out)
    assert _png_size(out) != PLACEHOLDER_SIZE
    empty = plot_ablation(table.iloc[0:0], tmp_path / "none.png")
    assert _png_size(empty) == PLACEHOLDER_SIZE


def test_plot_hallucination_panels(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    stores = [
        _restored_store(tmp_path / "mito" / "s1" / "001.zarr", rng),
        _restored_store(tmp_path / "actin" / "s1" / "002.zarr", rng, methods=("mse",)),
    ]
    out = plot_hallucination_panels(stores, tmp_path / "h.png")
    _assert_png(out)
    assert _png_size(out) != PLACEHOLDER_SIZE
    assert _png_size(plot_hallucination_panels(stores[1:], tmp_path / "none.png")) == PLACEHOLDER_SIZE


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_slide_thumbnails_read_the_lowest_level(tmp_path: Path, version: str) -> None:
    slide = _ome_zarr(tmp_path / "s.ome.zarr", version=version)
    image, pixel, info = _lowest_level(slide)
    assert image.shape == (48, 80)
    assert pixel == (0.4, 0.4)
    assert info["full_shape"] == (96, 160) and info["level"] == "1"
    _assert_png(plot_slide_thumbnails([slide, slide], tmp_path / "slides.png"))
    assert _png_size(plot_slide_thumbnails([], tmp_path / "none.png")) == PLACEHOLDER_SIZE
    bad = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    bad.create_array("0", data=np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="plain.zarr.*multiscales"):
        _lowest_level(tmp_path / "plain.zarr")


def test_write_report_figures_with_optional_tables(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    metrics = write_tsv(_metrics_table(rng), tmp_path / "metrics.tsv")
    stores = [_restored_store(tmp_path / "restore" / "demo" / "mito" / "s1" / "001.zarr", rng)]
    out_dir = tmp_path / "report"
    write_report_figures(
        metrics_tsv=metrics,
        restored=stores,
        curves=[],
        qc_tsv=None,
        out_dir=out_dir,
        ablation_metrics=[_ablation_metrics(tmp_path / "ablation" / "demo" / "metrics.tsv", rng)],
        finetune_metrics=[
            _finetune_metrics(tmp_path / "finetune" / "tissue" / "metrics.tsv", rng),
            tmp_path / "finetune" / "not_run" / "metrics.tsv",
        ],
        slides=[_ome_zarr(tmp_path / "slide.ome.zarr")],
        example_fovs=1,
    )
    ablation = pd.read_csv(out_dir / "ablation.tsv", sep="\t")
    assert len(ablation) == 1 + 2 * 3  # bilinear once, mse and gan at three sizes
    assert "Table III" in (out_dir / "ablation.html").read_text()
    assert _png_size(out_dir / "ablation.png") != PLACEHOLDER_SIZE
    generalisation = pd.read_csv(out_dir / "generalisation.tsv", sep="\t")
    assert list(generalisation["method"]) == ["bilinear", "gan", "finetune_20", "finetune_100"]
    assert set(generalisation["finetune"]) == {"tissue"}
    page = (out_dir / "generalisation.html").read_text()
    assert "GAN fine-tuned (20 pairs)" in page and "GAN fine-tuned (100 pairs)" in page
    departures = pd.read_csv(out_dir / "hallucination.tsv", sep="\t", dtype={"fov": str})
    assert len(departures) == 2 and set(departures["fov"]) == {"001"}
    assert set(departures["model"]) == {"demo"}
    assert "flagged" in (out_dir / "hallucination.html").read_text().lower()
    assert _png_size(out_dir / "slides.png") != PLACEHOLDER_SIZE


def test_write_report_figures_without_optional_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    metrics = write_tsv(_metrics_table(rng), tmp_path / "metrics.tsv")
    out_dir = tmp_path / "report"
    write_report_figures(
        metrics_tsv=metrics,
        restored=[],
        curves=[],
        qc_tsv=None,
        out_dir=out_dir,
        ablation_metrics=[tmp_path / "ablation" / "demo" / "metrics.tsv"],
    )
    assert "No data-size ablation results" in (out_dir / "ablation.html").read_text()
    assert "No generalisation results" in (out_dir / "generalisation.html").read_text()
    assert _png_size(out_dir / "ablation.png") == PLACEHOLDER_SIZE
    assert pd.read_csv(out_dir / "ablation.tsv", sep="\t").empty
    assert pd.read_csv(out_dir / "hallucination.tsv", sep="\t").empty


def test_registration_qc_shows_photons_and_the_photon_transfer_plot(tmp_path: Path) -> None:
    qc = tmp_path / "registration.tsv"
    curve = ";".join(f"{m}:{8 * (m - 100) + 9}" for m in (101, 120, 160, 240))
    pd.DataFrame(
        {
            "sample": ["mito", "mito"],
            "session": ["s1", "s1"],
            "fov": ["001", "002"],
            "frames": [100, 1],
            "passed": [True, True],
            "gain_adu_per_photon": [8.0, float("nan")],
            "offset_adu": [100.0, float("nan")],
            "read_noise_adu": [3.0, float("nan")],
            "photons_at_median": [0.125, float("nan")],
            "photon_curve": [curve, ""],
        }
    ).to_csv(qc, sep="\t", index=False)
    fragment = registration_qc_table(qc)
    # Photons at the median signal are a column of the table; the curve is drawn, not printed.
    assert "<th>photons_at_median</th>" in fragment and "<td>0.125</td>" in fragment
    assert "photon_curve" not in fragment and curve not in fragment
    assert fragment.count("<tr") == 3
    assert fragment.count('src="data:image/png;base64,') == 1
    png = base64.b64decode(fragment.split('src="data:image/png;base64,')[1].split('"')[0])
    assert png.startswith(b"\x89PNG")
    # The one-frame FOV has no curve, and the page says so.
    assert "No photon transfer curve for 1 FOV(s)" in fragment and "mito/s1/002" in fragment
    # A table from before the calibration existed renders without a plot.
    assert "<img" not in registration_qc_table(_qc(tmp_path / "old.tsv"))


def test_table_ii_says_what_each_gan_stage_trained(tmp_path: Path) -> None:
    """A GAN stage whose critic never handed over leaves the stage-1 generator as the "gan" row:
    Table II says so under the table, from the model's model.json (gan_steps)."""
    from fastscan.models import resolve_architecture, write_model_json

    metrics = write_tsv(_metrics_table(np.random.default_rng(5)), tmp_path / "metrics.tsv")
    models = []
    for name, steps in {"inert": {"generator": 0, "critic": 180}, "trained": {"generator": 12, "critic": 40}, "older": None}.items():
        meta = {"format": "fastscan-model/1", "stage": "gan", "architecture": resolve_architecture({}), "scale": 2}
        meta["normalisation"] = {"lr": [0.0, 1.0], "hr": [0.0, 1.0]}
        if steps:
            meta["gan_steps"] = steps
        (tmp_path / "models" / name).mkdir(parents=True)
        write_model_json(tmp_path / "models" / name, meta)
        models.append(tmp_path / "models" / name)
    write_report_figures(metrics_tsv=metrics, restored=[], curves=[], qc_tsv=None, out_dir=tmp_path / "r", models=models)
    page = (tmp_path / "r" / "summary.html").read_text()
    assert "Model inert: the GAN stage trained the critic for 180 batches and never the generator" in page
    assert "so the model is the stage-1 generator; more training tiles or critic epochs" in page
    assert "Model trained: the GAN stage trained the generator for 12 batches and the critic for 40." in page
    assert "Model older" not in page  # trained before the record existed: no claim either way
    # A damaged model.json costs its line, not the report (restoring with it had checked it).
    (tmp_path / "models" / "inert" / "model.json").write_text("{")
    write_report_figures(metrics_tsv=metrics, restored=[], curves=[], qc_tsv=None, out_dir=tmp_path / "r2", models=models)
    page = (tmp_path / "r2" / "summary.html").read_text()
    assert "Model inert: its model.json could not be read" in page and "Model trained: the GAN stage trained the generator" in page
    (tmp_path / "models" / "inert" / "model.json").write_text('{"gan_steps": {"generator": "many"}}')
    write_report_figures(metrics_tsv=metrics, restored=[], curves=[], qc_tsv=None, out_dir=tmp_path / "r3", models=models)
    assert "Model inert: its model.json&#x27;s gan_steps is not two batch counts" in (tmp_path / "r3" / "summary.html").read_text()
