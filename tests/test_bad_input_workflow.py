"""Bad input seen through the workflow: clear errors at planning time, failing FOVs that leave
nothing behind, a FOV that fails registration QC without stopping the run, raw files untouched.

Library-level cases are in tests/test_bad_input.py. Runs here are dry runs or the cheapest
targets (ingest/register of a few tiny FOVs, one small dataset).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from test_workflow import make_workdir, sheet_row, snakemake

DATA = Path(__file__).resolve().parent / "data"
OIB = DATA / "mitoegfp_fv1000.oib"
HEADER = "sample\tsession\tfov\tlr\thr\tsplit\n"
CONFIG = ("--configfile", "config/tiny/config.yaml")


def _write_sheet(work: Path, rows: str, name: str = "samples.tsv") -> Path:
    path = work / "config" / "tiny" / name
    path.write_text(rows)
    return path


def _ome(path: Path, data: np.ndarray, axes: str, pixel_size: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "axes": axes,
        "PhysicalSizeX": pixel_size,
        "PhysicalSizeY": pixel_size,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    tifffile.imwrite(path, data, ome=True, metadata=metadata)
    return path


def _digests(paths: list[Path]) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def test_missing_raw_file_is_named_with_its_fov(root, bin_dir, tmp_path):
    work = make_workdir(root, tmp_path)
    _write_sheet(work, HEADER + sheet_row("fov01", "train") + "mito\tlab\tlost\tdata/lost_lr.tif\tdata/lost_hr.tif\ttrain\n")
    proc = snakemake(bin_dir, work, "-n", *CONFIG, check=False)
    out = _output(proc)
    assert proc.returncode != 0
    assert "Missing input files for rule ingest_fov" in out
    assert "wildcards: sample=mito, session=lab, fov=lost" in out
    assert "data/lost_lr.tif" in out and "data/lost_hr.tif" in out


def test_missing_slide_file_is_named_with_its_slide(root, bin_dir, tmp_path):
    work = make_workdir(root, tmp_path)
    _write_sheet(work, "slide\tpath\tmodel\tchannel\nlost_slide\tdata/lost.svs\tmito\t0\n", "slides.tsv")
    proc = snakemake(bin_dir, work, "-n", *CONFIG, check=False)
    out = _output(proc)
    assert proc.returncode != 0
    assert "Missing input files for rule restore_slide" in out
    assert "wildcards: slide=lost_slide" in out and "data/lost.svs" in out


def test_bad_sheet_values_stop_the_run_before_any_job(root, bin_dir, tmp_path):
    work = make_workdir(root, tmp_path)
    sheet = work / "config" / "tiny" / "samples.tsv"
    good = sheet.read_text()
    cases = [
        ("mi/to\tlab\tf1\ta.tif\tb.tif\ttrain\n", "row 6: column 'sample' is 'mi/to'; names may only hold letters"),
        ("mito\tlab\tf1\tdata/frames/*.tif\tb.tif\ttrain\n", "FOV mito/lab/f1: no file matches 'data/frames/*.tif'"),
    ]
    for row, needle in cases:
        sheet.write_text(good + row)
        proc = snakemake(bin_dir, work, "-n", *CONFIG, check=False)
        assert proc.returncode != 0 and needle in _output(proc), _output(proc)[-3000:]
        assert "config/tiny/samples.tsv" in _output(proc)
    assert not (work / "results").exists()


def test_failing_fovs_leave_nothing_and_log_why(root, bin_dir, tmp_path):
    """A truncated LR series and an HR of the wrong size: both jobs fail, naming the file."""
    work = make_workdir(root, tmp_path)
    rng = np.random.default_rng(0)
    lr = _ome(work / "data" / "good_lr.ome.tif", rng.integers(1, 4000, (3, 32, 32), dtype=np.uint16), "TYX", 0.4)
    hr = _ome(work / "data" / "good_hr.ome.tif", rng.random((64, 64), dtype=np.float32) * 4000, "YX", 0.2)
    wrong = _ome(work / "data" / "wrong_hr.ome.tif", rng.random((60, 64), dtype=np.float32) * 4000, "YX", 0.2)
    cut = work / "data" / "cut_lr.ome.tif"
    cut.write_bytes(lr.read_bytes()[: lr.stat().st_size // 2])
    _write_sheet(
        work,
        HEADER
        + "mito\tlab\tcut\tdata/cut_lr.ome.tif\tdata/good_hr.ome.tif\ttrain\n"
        + "mito\tlab\twrong\tdata/good_lr.ome.tif\tdata/wrong_hr.ome.tif\ttrain\n",
    )
    raw = [lr, hr, wrong, cut]
    before = _digests(raw)

    targets = ["results/register/mito/lab/cut.qc.tsv", "results/register/mito/lab/wrong.qc.tsv"]
    # Through the local profile a user runs with: a bad input is not retried (profiles/default
    # has retries: 0), so each error is in the log once.
    proc = snakemake(bin_dir, work, "--profile", "profiles/default", "--keep-going", *targets, *CONFIG, check=False)
    assert proc.returncode != 0
    assert "Error in rule ingest_fov" in _output(proc)
    for fov in ("cut", "wrong"):
        assert (work / f"logs/ingest/mito/lab/{fov}.log").read_text().count("job failed") == 1, fov

    cut_log = (work / "logs/ingest/mito/lab/cut.log").read_text()
    assert "fastscan.io.InputError: data/cut_lr.ome.tif:" in cut_log and "truncated or corrupt" in cut_log
    wrong_log = (work / "logs/ingest/mito/lab/wrong.log").read_text()
    assert (
        "fastscan.io.InputError: data/wrong_hr.ome.tif: HR image is 60x64 but the LR frames of "
        "data/good_lr.ome.tif are 32x32; with scale=2 the HR must be 64x64"
    ) in wrong_log
    # Nothing that looks like an output, finished or not.
    for stage in ("ingest", "register"):
        folder = work / "results" / stage / "mito" / "lab"
        assert not folder.exists() or list(folder.iterdir()) == []
    assert _digests(raw) == before


def test_fov_failing_registration_qc_is_excluded_not_fatal(root, bin_dir, tmp_path):
    """Pure noise against the real OIB: the QC table says failed, the dataset skips it, the run succeeds.

    The raw inputs (the simulated series of the tiny workflow, the noise series and the copy of
    tests/data's OIB) are checksummed before and after and must be byte-identical.
    """
    work = make_workdir(root, tmp_path)
    data = work / "data"
    data.mkdir()
    oib = Path(shutil.copy(OIB, data / OIB.name))
    rng = np.random.default_rng(1)
    # The OIB is 256x256 at 0.177 um/px, so its LR series is 128x128 at twice that.
    noise = _ome(data / "noise_lr.ome.tif", rng.poisson(300, (3, 128, 128)).astype(np.uint16), "TYX", 0.354)
    # The OIB has 3 channels and the noise 1: the sheet says which OIB channel is the target.
    _write_sheet(
        work,
        HEADER.replace("\n", "\tchannel\n")
        + sheet_row("fov01", "train").replace("\n", "\t\n")
        + f"mito\tlab\tnoisy\tdata/{noise.name}\tdata/{oib.name}\ttrain\t0\n",
    )
    simulated = [f"results/simulated/mito/tiny/fov01_{kind}.ome.tif" for kind in ("lr", "hr")]
    snakemake(bin_dir, work, *simulated, *CONFIG)
    raw = [*(work / s for s in simulated), noise, oib]
    before = _digests(raw)

    snakemake(bin_dir, work, "results/qc/registration.tsv", "results/dataset/mito.zarr", *CONFIG)

    qc = pd.read_csv(work / "results/qc/registration.tsv", sep="\t", dtype={"fov": str}).set_index("fov")
    assert qc.loc["noisy", "passed"] in (False, "False") and qc.loc["noisy", "ncc"] < 0.3
    assert qc.loc["fov01", "passed"] in (True, "True")
    log = (work / "logs/register/mito/lab/noisy.log").read_text()
    assert "registration QC failed for sample=mito session=lab fov=noisy" in log

    dataset = work / "results/dataset/mito.zarr"
    tiles = pd.read_csv(dataset / "tiles.tsv", sep="\t", dtype=str)
    assert set(tiles["fov"]) == {"fov01"}
    attrs = json.loads((dataset / "zarr.json").read_text())["attributes"]["fastscan"]
    assert attrs["counts"]["excluded_fovs"] == ["mito/lab/noisy"]
    assert "excluding FOV mito/lab/noisy from the dataset" in (work / "logs/dataset/mito.log").read_text()

    after = _digests(raw)
    assert after == before
    assert after[str(oib)][0] == hashlib.sha256(OIB.read_bytes()).hexdigest()
