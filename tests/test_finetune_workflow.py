"""The optional experiments through the workflow: fine-tuning on a new sample (Table IV) and the
data-size ablation (Table III), on the tiny simulated project."""

import re

import pandas as pd
import pytest
import yaml
from conftest import copy_run
from test_workflow import TINY_CONFIG, make_workdir, planned_jobs, sheet_row, snakemake

TISSUE = [("fov11", "train"), ("fov12", "val"), ("fov13", "test")]


def tissue_row(fov, split):
    return sheet_row(fov, split).replace("mito", "tissue")


EXPERIMENTS = {
    "finetune": {"ft": {"model": "mito", "sample": "tissue", "pairs": [4, 8], "epochs": 1}},
    "ablation": {"models": ["mito"], "pairs": [6]},
}


def add_experiments(work):
    """The experiments' config and the new sample's FOVs, added to a tiny project."""
    (work / "config/tiny/config.yaml").write_text(yaml.safe_dump({**TINY_CONFIG, **EXPERIMENTS}))
    sheet = work / "config/tiny/samples.tsv"
    sheet.write_text(sheet.read_text() + "".join(tissue_row(f, s) for f, s in TISSUE))
    return work


def experiment_workdir(root, tmp_path):
    return add_experiments(make_workdir(root, tmp_path))


def test_experiments_are_planned_only_when_configured(root, bin_dir, tmp_path):
    work = experiment_workdir(root, tmp_path)
    jobs = planned_jobs(snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml").stdout)
    assert jobs["finetune_dataset"] == jobs["finetune"] == 2  # one per number of pairs
    assert jobs["finetune_restore"] == 1 and jobs["finetune_metrics"] == 1  # one tissue test FOV
    assert jobs["ablation_dataset"] == jobs["ablation_train"] == 1 and jobs["ablation_metrics"] == 1
    (tmp_path / "plain").mkdir()
    plain = make_workdir(root, tmp_path / "plain")
    jobs = planned_jobs(snakemake(bin_dir, plain, "-n", "--configfile", "config/tiny/config.yaml").stdout)
    assert not any(k.startswith(("finetune", "ablation")) for k in jobs)


def test_finetune_needs_the_new_samples_splits(root, bin_dir, tmp_path):
    work = experiment_workdir(root, tmp_path)
    sheet = work / "config/tiny/samples.tsv"
    sheet.write_text("".join(line for line in sheet.read_text().splitlines(True) if "fov13" not in line))
    proc = snakemake(bin_dir, work, "-n", "--configfile", "config/tiny/config.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "finetune.ft" in out and "no test FOV" in out


@pytest.mark.slow
def test_finetune_and_ablation_run(tiny_run, bin_dir, tmp_path):
    # On a copy of the finished tiny project, as a user adds the experiments to theirs: the source
    # model is not trained again (the experiments' keys are no params of its rules), only the new
    # sample's FOVs and the experiments run.
    work = add_experiments(copy_run(tiny_run, tmp_path / "work"))
    proc = snakemake(bin_dir, work, "results/finetune/ft/metrics.tsv", "results/ablation/mito/metrics.tsv", "--configfile", "config/tiny/config.yaml")
    ran = set(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", proc.stdout + proc.stderr, re.M))
    assert {"register_fov", "finetune", "ablation_train"} <= ran and not {"build_dataset", "train_generator", "train_critic", "train_gan"} & ran, ran

    ft = pd.read_csv(work / "results/finetune/ft/metrics.tsv", sep="\t")
    assert set(ft["method"]) == {"bilinear", "bicubic", "classical", "gan", "finetune_4", "finetune_8"}
    assert set(ft["sample"]) == {"tissue"} and ft["psnr"].notna().all()
    assert ft.loc[ft["method"] == "finetune_8", "pairs"].eq(8).all()
    # Fine-tuning continued the source model with its normalisation and geometry.
    src = yaml.safe_load((work / "results/models/mito/model.json").read_text())
    tuned = yaml.safe_load((work / "results/finetune/ft/n8/model.json").read_text())
    assert tuned["normalisation"] == src["normalisation"] and tuned["geometry"]["correct"] == src["geometry"]["correct"]
    assert tuned["dataset"]["tiles_train"] == 8

    abl = pd.read_csv(work / "results/ablation/mito/metrics.tsv", sep="\t")
    assert {"mse", "gan", "bilinear"} <= set(abl["method"])
    assert abl.loc[abl["method"] == "gan", "pairs"].eq(6).all()
