"""Workflow tests: lint, dry runs, config validation and a tiny end-to-end run."""

import os
import shutil
import subprocess
import zipfile

import pandas as pd
import pytest
import yaml

ALL_RULES = [
    "simulate_fov",
    "simulate_slide",
    "ingest_fov",
    "register_fov",
    "registration_qc",
    "build_dataset",
    "train_generator",
    "train_critic",
    "train_gan",
    "restore_fov",
    "restore_slide",
    "metrics",
    "report",
    "all",
]

# The shipped config/config.yaml names no specimen, slide or model: a project states its own.
TINY_CONFIG = {
    "samples": "config/tiny/samples.tsv",
    "slides": "config/tiny/slides.tsv",
    "models": {"mito": {"samples": ["mito"]}},
    "simulate": {
        "specimens": {"mito": "mitochondria", "tissue": "tissue"},
        "slides": {"tiny_slide": {"shape_px": [96, 80], "specimen": "tissue"}},
        "params": {"field_of_view_um": 25.6, "hr": {"pixels": 128}, "lr": {"pixels": 64, "frames": 3}},
    },
    "dataset": {"tile": 32, "stride": 32},
    "train": {
        "batch_size": 4,
        "generator": {"sizes": [32], "epochs": [1]},
        "critic": {"epochs": 1, "nf": 16},
        "gan": {"epochs": 1},
    },
    "restore": {"model": "mito", "frames": 1, "tile": 64, "overlap": 16, "region": 64, "pyramid_levels": 2},
    # The package's bioimage.io test and ONNX weights are proven in test_export on the same kind of model.
    "export": {"test": False, "onnx": False},
}

ROWS = [("fov01", "train"), ("fov02", "train"), ("fov03", "val"), ("fov04", "test")]


def sheet_row(fov, split, session="tiny"):
    base = f"results/simulated/mito/{session}/{fov}"
    return f"mito\t{session}\t{fov}\t{base}_lr.ome.tif\t{base}_hr.ome.tif\t{split}\n"


def snakemake(bin_dir, workdir, *args, check=True, timeout=1800):
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(bin_dir / "snakemake"), "--cores", "2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def make_workdir(root, tmp_path, config=TINY_CONFIG, rows=ROWS):
    """A copy of the workflow with the tiny config (as a user's project directory would be)."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    tiny = work / "config" / "tiny"
    tiny.mkdir()
    (tiny / "samples.tsv").write_text("sample\tsession\tfov\tlr\thr\tsplit\n" + "".join(sheet_row(f, s) for f, s in rows))
    (tiny / "slides.tsv").write_text("slide\tpath\tmodel\tchannel\ntiny_slide\tresults/simulated/slides/tiny_slide.ome.tif\tmito\t0\n")
    (tiny / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def planned_jobs(stdout):
    """Job counts from the 'Job stats' table of a dry run."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    jobs = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def test_lint_is_clean(root, bin_dir):
    proc = snakemake(bin_dir, root, "--lint", "--configfile", "config/demo/config.yaml")
    assert "good condition" in proc.stdout + proc.stderr


def test_demo_dry_run_plans_every_rule(root, bin_dir, tmp_path):
    # In a fresh copy: a demo already run in the checkout would leave nothing to plan.
    work = make_workdir(root, tmp_path)
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/demo/config.yaml")
    jobs = planned_jobs(proc.stdout)
    assert set(ALL_RULES) <= set(jobs), jobs
    # Everything the demo needs is in config/demo/config.yaml: its model, the fine-tuning on the
    # tissue sample (two pair counts), the new session's series and the simulated slide.
    assert "results/models/mito/generator.pth" in proc.stdout
    assert jobs["finetune"] == 2 and jobs["restore_series"] == 1 and jobs["simulate_slide"] == 1, jobs


def test_shipped_config_and_empty_sheets_plan_nothing(root, bin_dir, tmp_path):
    """The shipped config names no sample, slide or model, and its sheets are empty templates:
    a dry run succeeds, plans no work and says what to fill in."""
    from fastscan.sheets import load_samples, load_slides

    shipped = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert shipped["models"] == {} and "model" not in shipped["restore"]
    assert shipped["simulate"]["specimens"] == {} and shipped["simulate"]["slides"] == {}
    assert load_samples(root / shipped["samples"]).empty and load_slides(root / shipped["slides"]).empty

    work = make_workdir(root, tmp_path)
    proc = snakemake(bin_dir, work, "-n")
    jobs = planned_jobs(proc.stdout)
    assert set(jobs) <= {"all"}, jobs  # the target rule only, with no input
    out = proc.stdout + proc.stderr
    assert "nothing to do" in out and "Fill config/samples.tsv" in out and "`models:`" in out


def test_pairs_without_a_model_name_the_config_key(root, bin_dir, tmp_path):
    """A user's sheet with the shipped config alone: refused at planning, naming the file and key."""
    work = make_workdir(root, tmp_path)
    user = work / "config" / "tiny" / "user.yaml"
    user.write_text(yaml.safe_dump({"samples": "config/tiny/samples.tsv", "slides": "config/tiny/slides.tsv"}))
    proc = snakemake(bin_dir, work, "-n", "--configfile", str(user.relative_to(work)), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config/tiny/samples.tsv has 4 FOV(s) with an HR target (samples ['mito'])" in out, out[-3000:]
    assert "config/config.yaml" in out and "`models:`" in out and "samples: [mito]" in out


def test_user_config_with_one_model_plans_ingest_to_report(root, bin_dir, tmp_path):
    """A first run on one's own data: a sample sheet of real files, a slide, and one model name."""
    import numpy as np
    import tifffile

    work = make_workdir(root, tmp_path)
    data = work / "data"
    data.mkdir()
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"], start=1):
        tifffile.imwrite(data / f"lr{i}.tif", np.ones((2, 32, 32), np.uint16))
        tifffile.imwrite(data / f"hr{i}.tif", np.ones((64, 64), np.uint16))
        rows.append(f"cells\tday1\tfov{i}\tdata/lr{i}.tif\tdata/hr{i}.tif\t{split}\t0.4\t0.2\n")
    mine = work / "mine"
    mine.mkdir()
    (mine / "samples.tsv").write_text("sample\tsession\tfov\tlr\thr\tsplit\tlr_pixel_size_um\thr_pixel_size_um\n" + "".join(rows))
    tifffile.imwrite(data / "slide.tif", np.ones((96, 96), np.uint16))
    # No model column: with a single model it is the one used.
    (mine / "slides.tsv").write_text("slide\tpath\nwhole\tdata/slide.tif\n")
    (mine / "config.yaml").write_text(
        yaml.safe_dump({"samples": "mine/samples.tsv", "slides": "mine/slides.tsv", "models": {"cells_model": {"samples": ["cells"]}}})
    )
    proc = snakemake(bin_dir, work, "-n", "--configfile", "mine/config.yaml")
    jobs = planned_jobs(proc.stdout)
    assert jobs == {
        "ingest_fov": 4,
        "register_fov": 4,
        "registration_qc": 1,
        "build_dataset": 1,
        "train_generator": 1,
        "train_critic": 1,
        "train_gan": 1,
        "restore_fov": 1,
        "restore_slide": 1,
        "export_model": 1,
        "metrics": 1,
        "report": 1,
        "all": 1,
    }, jobs
    assert "results/models/cells_model/generator.pth" in proc.stdout and "mito" not in proc.stdout

    # train.pretrain: simulated puts the calibrated-simulator pretraining before stage 1, on the
    # model's two training FOVs (not its validation or test FOVs).
    (mine / "pretrain.yaml").write_text(yaml.safe_dump({"train": {"pretrain": "simulated"}}))
    proc = snakemake(bin_dir, work, "-n", "-p", "--configfile", "mine/config.yaml", "mine/pretrain.yaml")
    assert planned_jobs(proc.stdout) == {**jobs, "pretrain": 1}
    block = proc.stdout[proc.stdout.index("rule pretrain:") :].split("\n\n")[0]
    assert "results/register/cells/day1/fov1.zarr" in block and "results/register/cells/day1/fov2.zarr" in block
    assert "fov3" not in block and "fov4" not in block
    train = proc.stdout[proc.stdout.index("rule train_generator:") :].split("\n\n")[0]
    assert "results/pretrain/cells_model/generator.pth" in train


def test_schema_error_names_the_key(root, bin_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"batch_size": "eight"}}))
    proc = snakemake(bin_dir, root, "-n", "--configfile", "config/demo/config.yaml", str(bad), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "batch_size" in out and "'eight' is not of type 'integer'" in out


def test_unknown_config_key_is_refused(root, bin_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataset": {"tiles": 64}}))
    proc = snakemake(bin_dir, root, "-n", "--configfile", "config/demo/config.yaml", str(bad), check=False)
    assert proc.returncode != 0 and "'tiles' was unexpected" in proc.stdout + proc.stderr


def test_bad_sheet_names_the_row(root, bin_dir, tmp_path):
    work = make_workdir(root, tmp_path, rows=ROWS + [("fov01", "train")])
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "duplicate" in out and "mito/tiny/fov01" in out


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tiny_run, bin_dir):
    work = tiny_run

    metrics = pd.read_csv(work / "results/report/metrics.tsv", sep="\t")
    assert set(metrics["method"]) == {"bilinear", "bicubic", "classical", "mse", "gan"}
    assert metrics["psnr"].between(0, 100).all() and metrics["ssim"].between(-1, 1).all()
    qc = pd.read_csv(work / "results/qc/registration.tsv", sep="\t")
    assert len(qc) == len(ROWS)
    for name in ("psnr_boxes.png", "ssim_boxes.png", "examples.png", "training_curves.png", "summary.tsv"):
        assert (work / "results/report" / name).stat().st_size > 0
    # Under Table II: what the GAN stage trained (the tiny schedule's critic may or may not hand over).
    assert "Model mito: the GAN stage trained the " in (work / "results/report/summary.html").read_text()

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    slide = work / "results/restore/slides/tiny_slide.ome.zarr"
    node = next(iter(Reader(parse_url(str(slide)))()))
    level0 = node.data[0]
    assert level0.shape == (2 * 96, 2 * 80) and len(node.data) == 2
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([0.2, 0.2], rel=1e-3)  # pixel size halved from 0.4 µm

    package = work / "results/models/mito/mito.bioimageio.zip"
    with zipfile.ZipFile(package) as z:
        assert {"rdf.yaml", "generator.pth", "generator.torchscript.pt", "test_input.npy", "README.md"} <= set(z.namelist())
        assert "| gan |" in z.read("README.md").decode()  # the model's metrics table

    report = work / "results/report.html"
    snakemake(bin_dir, work, "--configfile", "config/tiny/config.yaml", "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 10_000 and "metrics.tsv" in html

    # Nothing is left to do; adding a held-out FOV re-runs only that FOV's jobs plus the aggregates.
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    sheet = work / "config/tiny/samples.tsv"
    original = sheet.read_text()
    sheet.write_text(original + sheet_row("fov09", "test", session="new"))
    jobs = planned_jobs(snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml").stdout)
    assert jobs == {
        "simulate_fov": 1,
        "ingest_fov": 1,
        "register_fov": 1,
        "registration_qc": 1,
        "restore_fov": 1,
        "metrics": 1,
        "export_model": 1,  # its README carries the metrics
        "report": 1,
        "all": 1,
    }

    # A new training FOV: only its own registration plus the dataset and everything downstream.
    sheet.write_text(original + sheet_row("fov08", "train", session="new"))
    jobs = planned_jobs(snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml").stdout)
    assert jobs["simulate_fov"] == jobs["ingest_fov"] == jobs["register_fov"] == 1
    assert jobs["build_dataset"] == 1 and jobs["train_generator"] == 1
    sheet.write_text(original)  # the completed run again, for the other tests of tiny_run


@pytest.mark.slow
def test_restore_knobs_rerun_only_what_they_change(tiny_run, bin_dir):
    """A changed config key reruns a job through its params (Snakemake's default rerun triggers):
    each rule takes only the keys its script reads, so a knob reruns only the jobs it can change."""
    work = tiny_run
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr

    def plan(**restore):
        knob = work / "config" / "tiny" / "knob.yaml"
        knob.write_text(yaml.safe_dump({"restore": restore}))
        proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", str(knob.relative_to(work)))
        return {} if "Nothing to be done" in proc.stdout + proc.stderr else planned_jobs(proc.stdout)

    slide = {"restore_slide": 1, "report": 1, "all": 1}  # the report shows the restored slide
    # Slide settings: region sets the slide's chunks and tiles, precision its numbers. The FOV
    # restorations behind the metrics always run in float32 and read neither.
    assert plan(region=32) == slide
    assert plan(precision="float32") == slide
    # Speed and memory alone: nothing can change, nothing reruns.
    assert plan(batch_size=2) == {}
    assert plan(frames_per_chunk=2) == {}
    assert plan(compile="auto") == {}
    # The calibrated-simulator pretraining's settings while it is off: nothing reruns.
    knob = work / "config" / "tiny" / "knob.yaml"
    knob.write_text(yaml.safe_dump({"train": {"pretrain_set": {"fovs": 3}}}))
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", str(knob.relative_to(work)))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # Matching the HR targets to their series rebuilds the dataset and what follows from it, not
    # the registration (which measured the lines already).
    knob.write_text(yaml.safe_dump({"dataset": {"match_hr_intensity": True}}))
    jobs = planned_jobs(snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", str(knob.relative_to(work))).stdout)
    assert jobs["build_dataset"] == jobs["train_generator"] == jobs["restore_fov"] == 1 and "register_fov" not in jobs
    # Scattering the slide over jobs changes its jobs (a plan and the parts), not the FOVs'.
    assert plan(parts=2) == {"restore_slide_plan": 1, "restore_slide_part": 2, **slide}
    # What the metrics are computed on still reruns them.
    assert plan(frames=2) == {"restore_fov": 1, "metrics": 1, "export_model": 1, "report": 1, "all": 1}
