"""The workflow submitted to a real single-node SLURM through profiles/slurm.

The fixture installs and starts SLURM with tests/slurm/setup_slurm.sh (root and apt-get needed; an
already running SLURM is reused) and skips, with the reason, only when this machine cannot host it.
"""

import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from test_workflow import TINY_CONFIG, make_workdir, snakemake

# Two FOVs: the jobs of each stage run side by side on the node, and the QC gathers more than one.
ROWS = [("fov01", "train"), ("fov04", "test")]
TARGET = "results/qc/registration.tsv"
TARGET_RULES = ("simulate_fov", "ingest_fov", "register_fov", "registration_qc")
JOB_MEM_MB = 1000
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
    status check and the small memory requests keep the run quick on a small node.
    """
    shipped = yaml.safe_load((work / "profiles" / "slurm" / "config.yaml").read_text())
    assert shipped["executor"] == "slurm"
    # Placeholders, not some site's values: the user fills them in.
    defaults = shipped["default-resources"]
    assert defaults["slurm_partition"].startswith("<") and defaults["slurm_account"].startswith("<")
    profile = {
        **shipped,
        "default-resources": {"slurm_partition": partition},
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 5,
        "slurm-keep-successful-logs": True,
        "latency-wait": 10,
        "set-resources": {rule: {"mem_mb": JOB_MEM_MB} for rule in TARGET_RULES},
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


@pytest.mark.slow
def test_registration_qc_runs_as_slurm_jobs(root, bin_dir, tmp_path, slurm_partition):
    work = make_workdir(root, tmp_path, config=TINY_CONFIG, rows=ROWS)
    profile = cluster_profile(work, slurm_partition)

    start = time.monotonic()
    # --workflow-profile none: profiles/default holds local-only settings (one GPU at a time).
    proc = snakemake(
        bin_dir,
        work,
        TARGET,
        "--profile",
        str(profile.relative_to(work)),
        "--workflow-profile",
        "none",
        "--configfile",
        "config/tiny/config.yaml",
        timeout=900,
    )
    print(f"SLURM run of {TARGET}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    out = proc.stdout + proc.stderr

    jobids = set(re.findall(r"has been submitted with SLURM jobid (\d+)", out))
    per_rule = {}
    for jobid in jobids:
        job = slurm_job(jobid)
        assert job["JobState"] == "COMPLETED", (jobid, job)
        assert job["Partition"] == slurm_partition and job["WorkDir"] == str(work), (jobid, job)
        assert job["MinMemoryNode"] == f"{JOB_MEM_MB}M", (jobid, job)
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", job["Comment"]).group(1)
        per_rule[rule] = per_rule.get(rule, 0) + 1
        # The plugin's log of the job, named by its SLURM job id.
        assert job["StdOut"].startswith(str(work / ".snakemake" / "slurm_logs" / f"rule_{rule}" / ""))
        assert job["StdOut"].endswith(f"/{jobid}.log") and os.path.getsize(job["StdOut"]) > 0
    expected = {"simulate_fov": len(ROWS), "ingest_fov": len(ROWS), "register_fov": len(ROWS), "registration_qc": 1}
    assert per_rule == expected, out[-6000:]

    qc = pd.read_csv(work / TARGET, sep="\t", dtype={"fov": str})
    assert sorted(qc["fov"]) == sorted(fov for fov, _ in ROWS)
    assert qc["passed"].astype(str).str.lower().eq("true").all(), qc


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
