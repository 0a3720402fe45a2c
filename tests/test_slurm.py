"""The workflow submitted to a real single-node SLURM through profiles/slurm: the registration of
two FOVs and the scatter/gather restoration of a slide, in one run.

The fixture installs and starts SLURM with tests/slurm/setup_slurm.sh (root and apt-get needed; an
already running SLURM is reused) and skips, with the reason, only when this machine cannot host it.
"""

import os
import re
import subprocess
import sys
import time
from datetime import datetime

import pandas as pd
import pytest
import tifffile
import yaml
import zarr
from conftest import assert_same_restoration
from test_restore_workflow import SVS, place_model
from test_workflow import TINY_CONFIG, make_workdir, snakemake

# Two FOVs: the jobs of each stage run side by side on the node, and the QC gathers more than one.
# Both held out: registering a training FOV in the same run would rebuild the dataset behind the
# model placed for the slide, and Snakemake would (rightly) train it again.
ROWS = [("fov01", "test"), ("fov04", "test")]
QC = "results/qc/registration.tsv"
SLIDE = "results/restore/slides/crop.ome.zarr"
# A 160 x 136 px crop in regions of 48 px: 4 x 3 regions, 6 for each of the two part jobs.
RESTORE = {"tile": 64, "overlap": 8, "region": 48, "pyramid_levels": 2}
PARTS = 2
# Memory asked for each rule's jobs (set-resources), checked against what SLURM granted.
JOB_MEM_MB = {
    "simulate_fov": 1000,
    "ingest_fov": 1000,
    "register_fov": 1000,
    "registration_qc": 1000,
    "restore_slide_plan": 2000,
    "restore_slide_part": 2000,
    "restore_slide": 2000,
}
RESTORE_RULES = ("restore_slide_plan", "restore_slide_part", "restore_slide")
SETUP_CANNOT = 77


@pytest.fixture(scope="session")
def slurm_partition(root) -> str:
    """A running SLURM (started once, reused when already up): its default partition."""
    script = root / "tests" / "slurm" / "setup_slurm.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200)
    if proc.returncode == SETUP_CANNOT:
        reason = proc.stderr.strip().splitlines()[-1]
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    if proc.returncode != 0:
        pytest.fail(f"{script} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}")
    lines = proc.stdout.split()
    assert lines, f"{script} printed no partition:\n{proc.stderr[-4000:]}"
    return lines[-1]


def cluster_profile(work, partition):
    """profiles/slurm as shipped, with this cluster's partition and no account.

    squeue answers the status queries because this cluster has no accounting; the short first
    status check and the small memory requests keep the run quick on a small node. The node has
    no GPU: the slide's rules are overridden as on any CPU-only cluster (gpu 0, the restoration
    runs on the CPU), with one thread each so that the test stays light on a small machine.
    """
    shipped = yaml.safe_load((work / "profiles" / "slurm" / "config.yaml").read_text())
    assert shipped["executor"] == "slurm"
    # Placeholders, not some site's values: the user fills them in.
    defaults = shipped["default-resources"]
    assert defaults["slurm_partition"].startswith("<") and defaults["slurm_account"].startswith("<")
    resources = {rule: {"mem_mb": mem} for rule, mem in JOB_MEM_MB.items()}
    for rule in RESTORE_RULES:
        resources[rule]["gpu"] = 0
    profile = {
        **shipped,
        "default-resources": {"slurm_partition": partition},
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
        "latency-wait": 10,
        "set-resources": resources,
        "set-threads": {rule: 1 for rule in RESTORE_RULES},
    }
    folder = work / "profiles" / "slurm-test"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def slurm_job(jobid):
    """The fields of `scontrol show job` (finished jobs stay listed for the cluster's MinJobAge)."""
    proc = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True)
    assert proc.returncode == 0, f"SLURM does not know job {jobid}: {proc.stderr}"
    return dict(re.findall(r"(\w[\w/:]*)=(\S*)", proc.stdout))


def run_interval(job):
    """When SLURM started and ended a finished job (whole seconds)."""
    return datetime.fromisoformat(job["StartTime"]), datetime.fromisoformat(job["EndTime"])


@pytest.mark.slow
def test_registration_and_scattered_slide_run_as_slurm_jobs(root, bin_dir, tmp_path, slurm_partition):
    from fastscan.restore.slide import restore_slide

    config = {**TINY_CONFIG, "restore": {**TINY_CONFIG["restore"], **RESTORE, "parts": PARTS}}
    work = make_workdir(root, tmp_path, config=config, rows=ROWS)
    profile = cluster_profile(work, slurm_partition)
    place_model(work)
    crop = tifffile.imread(SVS)[:160, :136, 1]
    tifffile.imwrite(work / "crop.tif", crop, tile=(64, 64))
    (work / "config/tiny/slides.tsv").write_text("slide\tpath\tmodel\tchannel\ncrop\tcrop.tif\tmito\t0\n")

    start = time.monotonic()
    # One run for both targets: the slide's jobs run while the FOVs are registered.
    # --workflow-profile none: profiles/default holds local-only settings (one GPU at a time).
    proc = snakemake(
        bin_dir,
        work,
        "--profile",
        str(profile.relative_to(work)),
        "--workflow-profile",
        "none",
        "--configfile",
        "config/tiny/config.yaml",
        "--",
        QC,
        SLIDE,
        timeout=900,
    )
    print(f"SLURM run of {QC} and {SLIDE}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    out = proc.stdout + proc.stderr

    jobids = set(re.findall(r"has been submitted with SLURM jobid (\d+)", out))
    per_rule = {}
    for jobid in jobids:
        job = slurm_job(jobid)
        assert job["JobState"] == "COMPLETED", (jobid, job)
        assert job["Partition"] == slurm_partition and job["WorkDir"] == str(work), (jobid, job)
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", job["Comment"]).group(1)
        per_rule.setdefault(rule, []).append(job)
        # What the rule asked for, with the profile's overrides, is what SLURM granted. (A job asking
        # for a GPU is refused at submission on this node, which has none.)
        assert job["MinMemoryNode"] == f"{JOB_MEM_MB[rule]}M" and job["NumCPUs"] == "1", (jobid, job)
        # The plugin's log of the job, named by its SLURM job id.
        assert job["StdOut"].startswith(str(work / ".snakemake" / "slurm_logs" / f"rule_{rule}" / ""))
        assert job["StdOut"].endswith(f"/{jobid}.log") and os.path.getsize(job["StdOut"]) > 0
    expected = {
        "simulate_fov": len(ROWS),
        "ingest_fov": len(ROWS),
        "register_fov": len(ROWS),
        "registration_qc": 1,
        "restore_slide_plan": 1,
        "restore_slide_part": PARTS,
        "restore_slide": 1,
    }
    assert {rule: len(jobs) for rule, jobs in per_rule.items()} == expected, out[-6000:]

    # The part jobs ran side by side: the later one started before the earlier one ended. The node
    # has room for both beside a stage's two FOV jobs (setup_slurm.sh), so they start when Snakemake
    # submits them; SLURM records whole seconds, and a part job takes several (Snakemake and torch
    # start-up). Parts that SLURM could only run one after the other fail here.
    intervals = sorted(run_interval(job) for job in per_rule["restore_slide_part"])
    print("part jobs ran " + ", ".join(f"{a:%H:%M:%S}-{b:%H:%M:%S}" for a, b in intervals), file=sys.stderr)
    latest_start = max(started for started, _ in intervals)
    earliest_end = min(ended for _, ended in intervals)
    assert latest_start < earliest_end, f"the part jobs did not run at the same time: {intervals}"

    qc = pd.read_csv(work / QC, sep="\t", dtype={"fov": str})
    assert sorted(qc["fov"]) == sorted(fov for fov, _ in ROWS)
    assert qc["passed"].astype(str).str.lower().eq("true").all(), qc

    # The gathered store equals the slide restored in one job, in this process (up to the
    # rounding of other thread counts: see assert_same_restoration).
    assert not (work / f"{SLIDE}.partial").exists()
    assert not any((work / "results/restore/slides/crop.parts").glob("*.json"))  # temp() plan and parts
    assert all((work / f"logs/restore/slides/crop.part{i}.log").is_file() for i in range(PARTS))
    reference = tmp_path / "single.ome.zarr"
    restore_slide(work / "crop.tif", reference, model_dir=work / "results/models/mito", channel=0, **RESTORE)
    for level in map(str, range(RESTORE["pyramid_levels"])):
        gathered = zarr.open_array(work / SLIDE / level, mode="r")[:]
        assert_same_restoration(gathered, zarr.open_array(reference / level, mode="r")[:])


class FakeResources(dict):
    """A job's resources as the plugin reads them: by key and by attribute."""

    __getattr__ = dict.__getitem__


class FakeJob:
    def __init__(self, threads, **resources):
        self.threads = threads
        self.resources = FakeResources(resources)


@pytest.mark.parametrize(
    ("resources", "gpu_flag"),
    [
        ({"gpu": 1}, "--gpus=1"),
        ({"gpu": 1, "gpu_model": "a100"}, "--gpus=a100:1"),
        ({"gpu": 0, "gres": "gpu:a100:1"}, "--gres=gpu:a100:1"),
    ],
)
def test_gpu_resource_becomes_a_slurm_gpu_request(resources, gpu_flag):
    # What profiles/slurm promises for the training and restoration rules (threads 8, gpu=1).
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = FakeJob(8, mem_mb=16000, runtime=720, **resources)
    params = {
        "run_uuid": "run",
        "slurm_logfile": "job.log",
        "comment_str": "rule_train_gan",
        "account": "",
        "partition": "-p gpu",
        "workdir": "/work",
    }
    call = (get_submit_command(job, params) + set_gres_string(job)).split()
    assert gpu_flag in call and sum(arg.startswith(("--gpus", "--gres")) for arg in call) == 1
    assert "--cpus-per-task=8" in call
    assert call[call.index("--mem") + 1] == "16000" and call[call.index("-t") + 1] == "720"
