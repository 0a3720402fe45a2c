"""The GPU benchmark of benchmarks/device: its CPU smoke run and its package lists.

The benchmark runs on a GPU machine without network access, where only the packages of
present.txt and the wheelhouse of wheels.txt exist; the smoke run here sees only those too
(``DEVICE_SITE=simulate``), so a wheel missing from wheels.txt fails here first.
"""

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

DEVICE = Path(__file__).resolve().parents[1] / "benchmarks" / "device"
sys.path.insert(0, str(DEVICE))
import device_env  # noqa: E402


def _finite(row, *keys):
    for key in keys:
        value = row.get(key)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, row)


def test_smoke_run_measures_every_section(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "DEVICE_SITE": "simulate"}
    proc = subprocess.run(["bash", str(DEVICE / "run.sh"), "--smoke"], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((out / "device.json").read_text(encoding="utf-8"))
    assert data["mode"] == "smoke" and data["finished"], data["errors"]
    assert data["errors"] == []
    assert data["env"]["torch"] and data["env"]["device"] == "cpu"

    inference = {(r["generator"], r["variant"]): r for r in data["inference"]}
    want = {(g, v) for g in ("faithful", "lowres") for v in ("fp32", "bf16", "bf16+cl")} | {("faithful", "bf16+cl+compile")}
    assert want <= set(inference)
    for row in inference.values():
        assert row["status"] == "ok"
        _finite(row, "mpx_per_s", "tiles_per_s", "ms_per_batch")
    assert inference[("faithful", "bf16+cl+compile")]["compile_s"] > 0

    kinds = {r["kind"]: r for r in data["end_to_end"]}
    assert set(kinds) == {"slide", "series"}
    _finite(kinds["slide"], "mpx_per_s", "engine_mpx_s", "over_engine", "restore_s")
    _finite(kinds["series"], "fps", "over_realtime", "engine_fps", "over_engine")

    # restore.compile: the engine with compile off and auto, eager on the CPU either way.
    compiled = {(r["generator"], r["compile"]): r for r in data["engine_compile"]}
    assert set(compiled) == {(g, c) for g in ("faithful", "lowres") for c in ("off", "auto")}
    for row in compiled.values():
        assert row["status"] == "ok" and row["compiled"] is False
        _finite(row, "fps", "mpx_per_s", "first_call_s")

    stages = {r["stage"] for r in data["training"] if r["status"] == "ok"}
    assert stages == {"mse", "critic", "gan"}
    for row in data["training"]:
        _finite(row, "steps_per_s", "tiles_per_s")
    assert {r["mode"] for r in data["loader"]} == {"in-memory", "tile by tile"}
    for row in data["loader"]:
        _finite(row, "tiles_per_s", "over_step")

    assert set(data["targets"]) == {"faithful_bf16_mpx_s", "lowres_over_faithful", "end_to_end_over_engine", "series_over_realtime", "loader_over_step"}
    assert all(t["value"] is not None for t in data["targets"].values())
    log = (out / "device.log").read_text(encoding="utf-8")
    assert "targets (not asserted)" in log and "packages: simulate" in log


def test_package_lists_are_consistent():
    proc = subprocess.run(
        ["bash", str(DEVICE / "prepare.sh"), "--check"], env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pinned wheels" in proc.stdout


def test_every_runtime_dependency_reaches_the_device(root):
    """fastscan's dependencies (and fastai, the ml extra's) are on the device, shipped, or named as left out."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = project["dependencies"] + [d for d in project["optional-dependencies"]["ml"]]
    names = {device_env.canonical(d.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()) for d in deps}
    missing = sorted(n for n in names if not device_env.available(n) and n not in device_env.NOT_SHIPPED)
    assert missing == []


def test_wheels_are_pinned_to_the_project_environment():
    """The wheelhouse carries the versions the test suite runs with here."""
    from importlib import metadata as md

    for name, version in device_env.shipped().items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            pytest.fail(f"{name} is in wheels.txt but not installed here")
        assert installed == version, name


def test_simulated_site_holds_only_what_the_device_has(tmp_path):
    site = device_env.simulated_site(tmp_path / "site")
    entries = {p.name for p in site.iterdir()}
    assert {"zarr", "fastai", "dask", "torch", "numpy"} <= entries
    # In this environment, but neither on the device machine nor in the wheelhouse.
    for absent in ("xarray", "snakemake", "pytest", "spacy"):
        assert absent not in entries
