import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The bin folder of the interpreter running the tests (snakemake lives beside it)."""
    return Path(sys.executable).parent


def write_registered(path, *, seed=0, frames=3, size=64, scale=2, passed=True, offset=0.0, lr_per_hr=None, lr_at_zero_hr=None, hr_gain=1.0):
    """A small registered FOV store (layout of docs/architecture.md) with correlated LR/HR;
    ``lr_per_hr`` and ``lr_at_zero_hr`` are what its registration records (None: not measured),
    ``hr_gain`` multiplies the HR target only (a slow scan at another detector gain)."""
    import dataclasses

    import numpy as np
    from scipy import ndimage as ndi

    from fastscan import stores

    rng = np.random.default_rng(seed)
    hr = (ndi.gaussian_filter(rng.random((scale * size, scale * size)), 2) * 4000 + offset).astype(np.float32)
    base = hr.reshape(size, scale, size, scale).mean(axis=(1, 3))
    lr = np.stack([base + rng.normal(0, 30, base.shape) for _ in range(frames)]).astype(np.float32)
    # Already aligned, a linear scan: written by the library's writer, so it is a valid store.
    registration = stores.Registration.aligned(frames, passed=passed, ncc=0.9 if passed else 0.1, min_ncc=0.3)
    registration = dataclasses.replace(registration, qc=dataclasses.replace(registration.qc, lr_per_hr=lr_per_hr, lr_at_zero_hr=lr_at_zero_hr))
    attrs = {"scale": scale, "lr_pixel_size_um": [0.4, 0.4], "hr_pixel_size_um": [0.2, 0.2]}
    stores.write_registered(path, lr=lr, hr=hr * np.float32(hr_gain), attrs=attrs, registration=registration)
    return path


@pytest.fixture
def tiny_dataset(tmp_path):
    """A dataset store with two train FOVs and one val FOV of 64x64 LR frames."""
    from fastscan.dataset import FovEntry, build_dataset

    entries = []
    for i, split in enumerate(["train", "train", "val"]):
        p = write_registered(tmp_path / f"reg{i}.zarr", seed=i)
        entries.append(FovEntry(str(p), "mito", "s1", f"f{i}", split))
    out = tmp_path / "ds.zarr"
    build_dataset(entries, out, tile=32, stride=32)
    return out


def assert_same_restoration(got, want):
    """Two restorations of the same input with the same model, made in different processes.

    Exact equality is wrong here: processes run torch with different thread counts (a SLURM or
    Snakemake job gets its rule's threads, the test process the machine's cores), which changes
    the order of the convolutions' sums. float32 values then differ by an ulp or two (seen: 26 %
    of a gathered slide's values by one ulp, at most 1.2e-7), and on CPUs with bf16 units the
    U-Net's correction (``precision: auto``) can round the other way, by 2**-8 of the correction.
    A wrong stitch, a lost or shifted region or an unwritten chunk (NaN) differs by the order of
    the values themselves, so 1e-3 separates the two by orders of magnitude.
    """
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.isfinite(got).all() and np.isfinite(want).all(), "a chunk was never written (NaN)"
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3, equal_nan=False)


@pytest.fixture(scope="session")
def tiny_run(root, bin_dir, tmp_path_factory):
    """The tiny workflow of test_workflow run to the end once per session, for the tests that
    inspect it and plan on top of it. A test that changes more than a sheet it puts back works on
    a copy (``copy_run``)."""
    from test_workflow import make_workdir, snakemake

    work = make_workdir(root, tmp_path_factory.mktemp("tiny"))
    snakemake(bin_dir, work, "--configfile", "config/tiny/config.yaml")
    return work


def copy_run(work, dest):
    """A copy of a finished workflow directory that Snakemake finds up to date: copytree keeps
    the files' modification times, and .snakemake travels with them (the code, params and input
    records that Snakemake's rerun triggers compare against)."""
    import shutil

    shutil.copytree(work, dest, symlinks=True)
    return dest
