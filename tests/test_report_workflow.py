"""The metrics and report rules and the self-contained HTML report, on the tiny workflow.

Training and restoration are covered by the end-to-end test in test_workflow.py; here their
outputs are written directly (small synthetic stores in the documented layouts) and only the
metrics and report rules run, so the report can be checked in seconds.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from scipy import ndimage
from test_workflow import make_workdir, snakemake

from fastscan.report import REPORT_FILES

TINY = ("--configfile", "config/tiny/config.yaml")
# The report's own targets: rule all also asks for the models' bioimage.io packages, which need a
# real model (these tests fake the training outputs).
ALLOWED = ("--allowed-rules", "metrics", "report", "--", "results/report/metrics.tsv", "results/report/summary.tsv")
MODEL = "mito"
TEST_FOV = "results/restore/fov/mito/mito/tiny/fov04.zarr"


def _model(work: Path, where: str, stage: str, tiles: int, curves: list[tuple], **extra) -> None:
    folder = work / where
    folder.mkdir(parents=True)
    meta = {"format": "fastscan-model/1", "stage": stage, "dataset": {"tiles_train": tiles}, **extra}
    (folder / "model.json").write_text(json.dumps(meta))
    pd.DataFrame(curves, columns=["stage", "epoch", "train_loss", "valid_loss", "valid_psnr"]).to_csv(folder / "curves.tsv", sep="\t", index=False)


def _restored_store(path: Path) -> None:
    """A restored FOV (one frame, 64 px LR, 128 px HR) with a GAN that invents a blob."""
    rng = np.random.default_rng(0)
    hr = ndimage.gaussian_filter(rng.random((128, 128)), 3)
    hr = ((hr - hr.min()) / (hr.max() - hr.min())).astype(np.float32)
    lr = hr.reshape(64, 2, 64, 2).mean(axis=(1, 3)) + rng.normal(0, 0.1, (64, 64))
    mse = hr + rng.normal(0, 0.03, hr.shape)
    yy, xx = np.mgrid[0:128, 0:128]
    gan = mse + 0.7 * np.exp(-((yy - 40) ** 2 + (xx - 90) ** 2) / 18.0)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("lr", data=lr[None].astype(np.float32))
    group.create_array("hr", data=hr)
    group.create_array("classical", data=(hr + rng.normal(0, 0.08, hr.shape))[None].astype(np.float32))
    group.create_array("mse", data=mse[None].astype(np.float32))
    group.create_array("gan", data=gan[None].astype(np.float32))
    group.attrs["fastscan"] = {
        "kind": "restored_fov",
        "frames": [0],
        "methods": ["classical", "mse", "gan"],
        "scale": 2,
        "normalisation": {"lr": [0.0, 1.0], "hr": [0.0, 1.0]},
        "models": {"mse": f"results/train/{MODEL}/mse", "gan": f"results/models/{MODEL}"},
        "sample": "mito",
        "session": "tiny",
        "fov": "fov04",
        "hr_pixel_size_um": [0.2, 0.2],
    }


def _slide(path: Path) -> None:
    rng = np.random.default_rng(1)
    level0 = ndimage.gaussian_filter(rng.random((192, 160)), 2).astype(np.float32)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=level0)
    group.create_array("1", data=level0.reshape(96, 2, 80, 2).mean(axis=(1, 3)))
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [s, s]}]} for i, s in ((0, 0.2), (1, 0.4))],
            }
        ],
    }


def _upstream_outputs(work: Path) -> None:
    """What training, restoration and registration QC would have left for the report."""
    _model(work, f"results/train/{MODEL}/mse", "mse", 48, [("mse", 1, 0.08, 0.06, 14.0), ("mse", 2, 0.05, 0.04, 16.0)])
    _model(work, f"results/train/{MODEL}/critic", "critic", 48, [("critic", 1, 0.6, 0.5, None)])
    _model(work, f"results/models/{MODEL}", "gan", 48, [("gan", 1, 1.3, 2.1, 15.5)], gan_steps={"generator": 0, "critic": 7})
    store = work / TEST_FOV
    store.parent.mkdir(parents=True)
    _restored_store(store)
    slide = work / "results/restore/slides/tiny_slide.ome.zarr"
    slide.parent.mkdir(parents=True)
    _slide(slide)
    qc = work / "results/qc/registration.tsv"
    qc.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "sample": ["mito"] * 4,
            "session": ["tiny"] * 4,
            "fov": ["fov01", "fov02", "fov03", "fov04"],
            "ncc": [0.95, 0.2, 0.93, 0.94],
            "min_ncc": [0.3] * 4,
            "passed": [True, False, True, True],
        }
    ).to_csv(qc, sep="\t", index=False)


def _embedded(html: str) -> dict[str, str]:
    """File name -> content of every file the report embeds as a base64 data URI."""
    out = {}
    for name, payload in re.findall(r"data:[^;\"]+;(?:charset=[^;\"]+;)?filename=([^;\"]+);base64,([A-Za-z0-9+/=]+)", html):
        out[name] = payload
    return out


def test_report_rules_and_html(root, bin_dir, tmp_path):
    work = make_workdir(root, tmp_path)
    _upstream_outputs(work)
    snakemake(bin_dir, work, *TINY, *ALLOWED)

    metrics = pd.read_csv(work / "results/report/metrics.tsv", sep="\t")
    assert set(metrics["method"]) == {"bilinear", "bicubic", "classical", "mse", "gan"}
    pairs = metrics.set_index("method")["pairs"]
    assert pairs["gan"] == 48 and pairs["mse"] == 48 and np.isnan(pairs["bilinear"]) and np.isnan(pairs["classical"])
    for name in REPORT_FILES:
        assert (work / "results/report" / name).stat().st_size > 0, name
    departures = pd.read_csv(work / "results/report/hallucination.tsv", sep="\t")
    assert len(departures) == 1 and departures["fraction_flagged"].iloc[0] > 0.001
    # No ablation or fine-tuning was configured: the report says so instead of failing.
    assert "No data-size ablation results" in (work / "results/report/ablation.html").read_text()
    assert "No generalisation results" in (work / "results/report/generalisation.html").read_text()

    report = work / "results/report.html"
    snakemake(bin_dir, work, *TINY, "--report", str(report), *ALLOWED)
    html = report.read_text(errors="replace")
    # Self-contained: no file is linked from outside the page.
    assert not re.search(r'(?:src|href)="(?!data:|#|https?://)[^"]+\.(?:png|tsv|html)"', html)
    embedded = _embedded(html)
    for name in REPORT_FILES + ("metrics.tsv",):
        assert name in embedded, f"{name} is not embedded in the report"
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert base64.b64decode(embedded[name])[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = base64.b64decode(embedded["summary.html"]).decode()
    assert "Table II" in summary and "GAN" in summary and "±" in summary
    assert "Model mito: the GAN stage trained the critic for 7 batches and never the generator" in summary
    table = base64.b64decode(embedded["summary.tsv"]).decode()
    assert table.startswith("model\tsample\tmethod\tlabel\tpairs")
    departures_html = base64.b64decode(embedded["hallucination.html"]).decode()
    assert "mito / mito / tiny / fov04" in departures_html
    # Captions are rendered into the page.
    assert "median absolute deviation" in html and "Table III" in html
