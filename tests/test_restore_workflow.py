"""Restoration through the workflow: scatter/gather of slides, series of new sessions, the real SVS."""

import numpy as np
import pytest
import tifffile
import yaml
import zarr
from conftest import DATA, assert_same_restoration
from test_workflow import make_workdir, planned_jobs, snakemake

SVS = DATA / "cmu1_small_region_he.svs"


def place_model(work, name="mito"):
    """An untrained generator (the fast low-resolution variant) where training would put it."""
    import torch

    from fastscan.models import build_generator, resolve_architecture, save_state_dict, write_model_json

    arch = resolve_architecture({"variant": "lowres", "img_size": [64, 64]})
    torch.manual_seed(0)
    model_dir = work / "results" / "models" / name
    model_dir.mkdir(parents=True)
    save_state_dict(build_generator(arch), model_dir / "generator.pth")
    meta = {"format": "fastscan-model/1", "stage": "gan", "architecture": arch, "scale": 2}
    write_model_json(model_dir, {**meta, "normalisation": {"lr": [0.0, 255.0], "hr": [0.0, 1.0]}})


def write_config(work, name, restore):
    path = work / "config" / "tiny" / name
    path.write_text(yaml.safe_dump({"restore": restore}))
    return str(path.relative_to(work))


def add_series_row(work, lr):
    sheet = work / "config" / "tiny" / "samples.tsv"
    sheet.write_text(sheet.read_text() + f"mito\tnew\tfov01\t{lr}\t\t\n")


def test_dry_run_shows_the_parts_and_a_new_session_adds_only_its_own_jobs(root, bin_dir, tmp_path):
    work = make_workdir(root, tmp_path)
    parts = write_config(work, "parts.yaml", {"parts": 3})
    before = planned_jobs(snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", parts).stdout)
    assert before["restore_slide_plan"] == 1 and before["restore_slide_part"] == 3 and before["restore_slide"] == 1
    assert "restore_series" not in before
    # A session without HR target: its simulation and its restoration, nothing else.
    add_series_row(work, "results/simulated/mito/new/fov01_lr.ome.tif")
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", parts)
    after = planned_jobs(proc.stdout)
    added = {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}
    assert {k: v for k, v in added.items() if v} == {"simulate_fov": 1, "restore_series": 1}
    assert "results/restore/series/mito/mito/new/fov01.ome.zarr" in proc.stdout
    one = planned_jobs(snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", "--", "restore_sessions").stdout)
    # The target of the sessions alone: the series and what its model needs, no slide or report.
    assert one["restore_series"] == 1 and one["restore_sessions"] == 1
    assert not {"restore_slide", "restore_fov", "report"} & set(one)


@pytest.mark.slow
def test_scattered_slide_equals_single_job_and_a_session_series_restores(root, bin_dir, tmp_path):
    from fastscan.restore.slide import restore_slide

    work = make_workdir(root, tmp_path)
    place_model(work)
    crop = tifffile.imread(SVS)[:160, :136, 1]
    tifffile.imwrite(work / "crop.tif", crop, tile=(64, 64))
    (work / "config/tiny/slides.tsv").write_text("slide\tpath\tmodel\tchannel\ncrop\tcrop.tif\tmito\t0\n")
    rng = np.random.default_rng(0)
    tifffile.imwrite(work / "series.tif", (rng.random((3, 48, 40)) * 200).astype(np.uint8), photometric="minisblack", metadata={"axes": "TYX"})
    add_series_row(work, "series.tif")
    common = {"tile": 64, "overlap": 8, "region": 48, "pyramid_levels": 2}
    target = "results/restore/slides/crop.ome.zarr"

    scattered = write_config(work, "scatter.yaml", {**common, "parts": 2})
    snakemake(bin_dir, work, "--configfile", "config/tiny/config.yaml", scattered, "--", target, "restore_sessions")
    assert all((work / f"logs/restore/slides/crop.part{i}.log").is_file() for i in range(2))
    assert not (work / "results/restore/slides/crop.ome.zarr.partial").exists()
    assert not any((work / "results/restore/slides/crop.parts").glob("*.json"))  # temp() part results
    # The single-job path (what restore_slide runs with restore.parts = 1).
    reference = tmp_path / "single.ome.zarr"
    restore_slide(work / "crop.tif", reference, model_dir=work / "results/models/mito", **common)
    for level in ("0", "1"):
        # Snakemake's jobs ran with other thread counts than this process: see assert_same_restoration.
        assert_same_restoration(zarr.open_array(work / target / level, mode="r")[:], zarr.open_array(reference / level, mode="r")[:])

    series = zarr.open_group(work / "results/restore/series/mito/mito/new/fov01.ome.zarr", mode="r")
    assert series["0"].shape == (3, 96, 80)
    assert [a["name"] for a in series.attrs["ome"]["multiscales"][0]["axes"]] == ["t", "y", "x"]
    assert np.isfinite(series["0"][:]).all()

    # Speed and memory knobs rerun nothing (they are no params); a slide setting reruns the slide only.
    def plan(name, **restore):
        proc = snakemake(
            bin_dir,
            work,
            "-n",
            "--configfile",
            "config/tiny/config.yaml",
            write_config(work, name, {**common, "parts": 2, **restore}),
            "--",
            target,
            "restore_sessions",
        )
        return {} if "Nothing to be done" in proc.stdout + proc.stderr else planned_jobs(proc.stdout)

    assert plan("fast.yaml", batch_size=2, frames_per_chunk=1) == {}
    assert plan("region.yaml", region=32) == {"restore_slide_plan": 1, "restore_slide_part": 2, "restore_slide": 1}


@pytest.mark.slow
def test_real_svs_restores_through_the_workflow(root, bin_dir, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    work = make_workdir(root, tmp_path)
    place_model(work)
    (work / "config/tiny/slides.tsv").write_text(f"slide\tpath\tmodel\tchannel\nsvs\t{SVS}\tmito\t1\n")
    # Region 512 with a small overlap keeps the recomputed margins to about 15 % of the slide.
    cfg = write_config(work, "svs.yaml", {"tile": 256, "overlap": 8, "region": 512, "pyramid_levels": 3, "parts": 1})
    snakemake(bin_dir, work, "--configfile", "config/tiny/config.yaml", cfg, "--", "results/restore/slides/svs.ome.zarr")
    out = work / "results/restore/slides/svs.ome.zarr"
    node = next(iter(Reader(parse_url(str(out)))()))
    assert [d.shape for d in node.data] == [(5934, 4440), (2967, 2220), (1483, 1110)]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([0.2495, 0.2495])
    attrs = zarr.open_group(out, mode="r").attrs["fastscan"]
    assert attrs["model"] == "results/models/mito" and attrs["input"] == str(SVS) and attrs["regions"] == 6 * 5
    level2 = np.asarray(node.data[2])
    assert np.isfinite(level2).all() and level2.std() > 0


def test_sheets_accept_channel_lists_and_series_rows(tmp_path):
    from fastscan.sheets import SheetError, load_samples, load_slides

    slides = tmp_path / "slides.tsv"
    slides.write_text("slide\tpath\tchannel\na\tx.svs\t\nb\tx.svs\t2\nc\tx.svs\tall\nd\tx.svs\t0,2\n")
    df = load_slides(slides)
    assert list(df["channel"]) == [0, 2, "all", "0,2"]
    slides.write_text("slide\tpath\tchannel\na\tx.svs\tred\n")
    with pytest.raises(SheetError, match="row 2: column 'channel' must be an index, a list like 0,2 or all"):
        load_slides(slides)

    samples = tmp_path / "samples.tsv"
    head = "sample\tsession\tfov\tlr\thr\tsplit\trestore\n"
    samples.write_text(head + "m\ts1\tf1\ta.tif\tb.tif\ttrain\tyes\nm\tnew\tf1\tc.tif\t\t\t\n")
    df = load_samples(samples)
    assert list(df["hr"]) == ["b.tif", ""] and list(df["restore"]) == ["yes", ""]
    samples.write_text(head + "m\tnew\tf1\tc.tif\t\ttest\t\n")
    with pytest.raises(SheetError, match="no HR target"):
        load_samples(samples)
    samples.write_text(head + "m\tnew\tf1\tc.tif\tb.tif\t\tmaybe\n")
    with pytest.raises(SheetError, match="restore must be yes, no or empty"):
        load_samples(samples)
