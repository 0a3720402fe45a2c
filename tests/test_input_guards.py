"""Input guards: headers that declare more than memory holds, LR/HR channel mismatches, cut OIBs.

Each refusal happens before any pixel data is read, names the file and says what to do.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from fastscan.io import InputError, ingest_fov, memory, read_fov, read_series
from fastscan.io.memory import ENV_VAR, RULE_VAR, MemoryLimit, MemoryLimitError, check_fits, set_job_limit
from fastscan.sheets import load_samples

ROOT = Path(__file__).resolve().parents[1]
OIB = ROOT / "tests" / "data" / "mitoegfp_fv1000.oib"


@pytest.fixture(autouse=True)
def _no_job_limit():
    """Every test starts without a job limit and leaves none behind (set_job_limit writes os.environ)."""
    saved = {k: os.environ.pop(k) for k in (ENV_VAR, RULE_VAR) if k in os.environ}
    yield
    for k in (ENV_VAR, RULE_VAR):
        os.environ.pop(k, None)
    os.environ.update(saved)


def _huge_tiff(path: Path, side: int = 100_000) -> Path:
    """A real 16 x 16 TIFF whose header is patched to declare ``side`` x ``side`` uint8 pixels.

    The one zlib strip stays 12 bytes long, so the file is a few hundred bytes: what a
    damaged or hand-edited header looks like.
    """
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), compression="zlib", rowsperstrip=16, metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tf:
        for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tf.pages.first.tags[name].overwrite(side)
    return path


def _ome(path: Path, data: np.ndarray, axes: str, pixel_size: float) -> Path:
    metadata = {"axes": axes, "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
    tifffile.imwrite(path, data, ome=True, metadata=metadata)
    return path


def _scene(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 4000 * rng.random(shape)).astype(np.float32)


def _gray_pair(directory: Path, *, frames: int = 3, size: int = 16) -> tuple[Path, Path]:
    """A grayscale LR series (uint16) and its 2x grayscale HR target."""
    directory.mkdir(parents=True, exist_ok=True)
    hr = _scene((2 * size, 2 * size))
    base = hr.reshape(size, 2, size, 2).mean(axis=(1, 3))
    lr = np.stack([base] * frames).astype(np.uint16)
    return _ome(directory / "lr.ome.tif", lr, "TYX", 0.4), _ome(directory / "hr.ome.tif", hr, "YX", 0.2)


def _green_rgb(path: Path, size: int) -> Path:
    """An RGB HR target exported with a green LUT: red and blue are all zero."""
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[..., 1] = np.random.default_rng(1).integers(1, 255, (size, size), dtype=np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb")
    return path


def _ingest(lr, hr, out: Path, **kwargs):
    return ingest_fov(lr=lr, hr=hr, out=out, sample="mito", session="s1", fov="f1", **kwargs)


# ------------------------------------------------------------------------------------------
# memory limits


def test_memory_limit_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    set_job_limit(4000, rule="ingest_fov")
    assert memory.memory_limit() == MemoryLimit(4_000_000_000, "job", "ingest_fov")
    assert memory.memory_limit_bytes() == 4_000_000_000
    set_job_limit(None)
    assert ENV_VAR not in os.environ and memory.memory_limit().source == "available"

    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 7_000_000)
    assert memory.memory_limit_bytes() == 7_000_000
    # Without /proc/meminfo the free pages from sysconf are the fallback; a cgroup lowers either.
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_sysconf_available", lambda: 9_000_000)
    assert memory.memory_limit_bytes() == 9_000_000
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: 5_000_000)
    assert memory.memory_limit_bytes() == 5_000_000

    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ValueError, match="FASTSCAN_MEM_MB='lots' is not a number of megabytes"):
        memory.memory_limit()


def test_available_memory_is_meminfo_on_linux() -> None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo")
    kib = next(int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable:"))
    assert memory._meminfo_available() == pytest.approx(kib * 1024, rel=0.2)


def test_cgroup_headroom(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    assert memory._cgroup_headroom(tmp_path) == 600_000
    (tmp_path / "memory.stat").write_text("anon 100000\ninactive_file 50000\nactive_file 7\n")
    assert memory._cgroup_headroom(tmp_path) == 650_000
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_headroom(tmp_path) is None


def test_check_fits_message_names_file_shape_need_limit_and_remedies() -> None:
    job = MemoryLimit(4_000_000_000, "job", "ingest_fov")
    with pytest.raises(MemoryLimitError) as err:
        check_fits("big.tif", (100_000, 100_000), np.uint8, what="LR series", factor=1.15, limit=job)
    message = str(err.value)
    assert isinstance(err.value, InputError)
    for needle in (
        "big.tif: the LR series declares 100000 x 100000 uint8 (10.0 GB)",
        "needs about 11.5 GB",
        "job's memory limit of 4000 MB (mem_mb of rule ingest_fov",
        "--set-resources ingest_fov:mem_mb=",
        "crop or bin the file",
        "header is not corrupt",
    ):
        assert needle in message, f"{needle!r} not in {message!r}"
    available = MemoryLimit(2_000_000_000, "available")
    with pytest.raises(MemoryLimitError, match="more than the 2.0 GB of memory available on this machine"):
        check_fits("big.tif", (100_000, 100_000), np.uint8, what="image", factor=1.0, limit=available)
    assert check_fits("ok.tif", (10, 10), np.uint16, what="image", factor=2.0, limit=available) == 400


_REFUSE_SCRIPT = """
import json, resource, sys
# A safety net: should the guard fail, the allocation fails here instead of filling the machine.
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from fastscan.io import InputError, {call}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    {call}({args})
    result = "read"
except InputError as exc:
    result = type(exc).__name__ + ": " + str(exc)
except MemoryError as exc:
    result = "MemoryError: " + str(exc)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({{"result": result, "grew_kib": grew}}))
"""


def _refuse_in_subprocess(call: str, args: str, *, mem_mb: int | None, rule: str | None = None) -> dict:
    """Run ``call(args)`` in a fresh interpreter and report its outcome and peak-RSS growth."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, RULE_VAR)}
    if mem_mb is not None:
        env[ENV_VAR] = str(mem_mb)
    if rule is not None:
        env[RULE_VAR] = rule
    script = _REFUSE_SCRIPT.format(call=call, args=args)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tiny_tiff_declaring_100000_squared_is_refused_before_reading(tmp_path: Path) -> None:
    path = _huge_tiff(tmp_path / "huge.tif")
    assert path.stat().st_size < 1_000_000
    assert tifffile.TiffFile(path).series[0].shape == (100_000, 100_000)
    out = _refuse_in_subprocess("read_series", repr(str(path)), mem_mb=4000, rule="ingest_fov")
    result = out["result"]
    assert result.startswith(f"MemoryLimitError: {path}: the image series declares 100000 x 100000 uint8")
    assert "4000 MB" in result and "--set-resources ingest_fov:mem_mb=" in result
    # No timing here (CI machines are loaded): peak RSS says whether the pixels were allocated.
    assert out["grew_kib"] < 50_000, "the pixel array was allocated before the refusal"


def test_declared_size_beyond_available_memory_is_refused_without_job_limit(tmp_path: Path) -> None:
    """Outside a workflow the limit is the available memory; no machine has 1 TB free."""
    path = _huge_tiff(tmp_path / "huge.tif", side=1_000_000)
    out = _refuse_in_subprocess("read_image", repr(str(path)), mem_mb=None)
    assert out["result"].startswith(f"MemoryLimitError: {path}: the image declares 1000000 x 1000000 uint8 (1.0 TB)")
    assert "of memory available on this machine" in out["result"]
    assert out["grew_kib"] < 50_000


@pytest.mark.parametrize("role", ["lr", "hr"])
def test_ingest_refuses_huge_declared_file_and_writes_nothing(tmp_path: Path, role: str) -> None:
    lr, hr = _gray_pair(tmp_path / "raw")
    huge = _huge_tiff(tmp_path / f"huge_{role}.tif")
    lr, hr = (huge, hr) if role == "lr" else (lr, huge)
    set_job_limit(4000, rule="ingest_fov")
    out = tmp_path / "out" / "f1.zarr"
    with pytest.raises(MemoryLimitError) as err:
        _ingest(lr, hr, out, lr_pixel_size_um=0.4, hr_pixel_size_um=0.2)
    what = "LR series" if role == "lr" else "HR target (read while the LR series is in memory)"
    assert str(err.value).startswith(f"{huge}: the {what} declares 100000 x 100000 uint8")
    assert not out.exists()


def test_small_file_reads_under_a_sufficient_limit_and_is_refused_under_a_low_one(tmp_path: Path) -> None:
    """The limit is the job's total, so what the process already holds is counted against it."""
    data = np.random.default_rng(0).integers(0, 4000, (4, 1024, 1024), dtype=np.uint16)  # 8.4 MB
    path = _ome(tmp_path / "lr.ome.tif", data, "TYX", 0.4)
    in_use_mb = memory._process_rss() / 1e6
    set_job_limit(in_use_mb + 8.4 * 1.15 + 40, rule="ingest_fov")
    frames, _ = read_series(path)
    np.testing.assert_array_equal(frames, data)
    del frames
    set_job_limit(memory._process_rss() / 1e6 + 4, rule="ingest_fov")
    needle = r"declares 4 x 1024 x 1024 uint16 \(8.4 MB\); reading it needs about 9.6 MB"
    with pytest.raises(MemoryLimitError, match=needle):
        read_series(path)


def test_glob_is_checked_as_first_frame_times_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        tifffile.imwrite(tmp_path / f"frame{i}.tif", np.full((256, 256), i + 1, np.uint16))
    pattern = str(tmp_path / "frame*.tif")
    monkeypatch.setattr(memory, "_process_rss", lambda: 100_000_000)
    set_job_limit(100.4)  # 100 MB in use leave room for three 131 kB frames, not five
    needle = r"image series of 5 files declares 5 x 256 x 256 uint16 .*100 MB already in use"
    with pytest.raises(MemoryLimitError, match=needle):
        read_series(pattern)
    set_job_limit(None)
    frames, meta = read_series(pattern)
    assert frames.shape == (5, 256, 256) and frames[:, 0, 0].tolist() == [1, 2, 3, 4, 5]
    assert meta["format"] == "glob"


def test_oib_declared_shape_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_process_rss", lambda: 100_000_000)
    set_job_limit(100.2)  # the OIB holds 3 x 256 x 256 uint16 = 393 kB
    needle = r"mitoegfp_fv1000.oib: the image series declares 3 x 256 x 256 uint16"
    with pytest.raises(MemoryLimitError, match=needle):
        read_series(OIB)
    set_job_limit(101)
    assert read_series(OIB)[0].shape == (1, 256, 256)


def test_ingest_script_sets_the_job_limit_from_mem_mb(tmp_path: Path) -> None:
    """The rule's script passes snakemake.resources.mem_mb on; the refusal names the rule."""
    lr, hr = _gray_pair(tmp_path / "raw")
    huge = _huge_tiff(tmp_path / "huge.tif")
    fov = {"lr": str(huge), "hr": str(hr), "channel": None, "lr_pixel_size_um": 0.4, "hr_pixel_size_um": None, "scale": 2}
    out = tmp_path / "results" / "f1.zarr"
    fake = SimpleNamespace(
        log=[str(tmp_path / "ingest.log")],
        params=SimpleNamespace(fov=fov),
        output=[str(out)],
        wildcards=SimpleNamespace(sample="mito", session="s1", fov="f1"),
        resources=SimpleNamespace(mem_mb=4000),
        rule="ingest_fov",
    )
    with pytest.raises(MemoryLimitError, match=r"--set-resources ingest_fov:mem_mb="):
        runpy.run_path(str(ROOT / "workflow" / "scripts" / "ingest_fov.py"), init_globals={"snakemake": fake})
    assert os.environ[ENV_VAR] == "4000" and os.environ[RULE_VAR] == "ingest_fov"
    assert "the LR series declares 100000 x 100000 uint8" in (tmp_path / "ingest.log").read_text()
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# channels of the LR/HR pair


def test_rgb_hr_with_gray_lr_needs_the_channel(tmp_path: Path) -> None:
    lr, _ = _gray_pair(tmp_path / "raw")
    hr = _green_rgb(tmp_path / "hr_rgb.tif", 32)
    out = tmp_path / "out" / "f1.zarr"
    with pytest.raises(InputError) as err:
        _ingest(lr, hr, out)
    assert str(err.value) == (
        f"{hr}: the HR target has 3 channels (RGB) but the LR series {lr} has 1; say which HR channel to "
        "use in the sample sheet's 'channel' column (0 = red, 1 = green, 2 = blue)"
    )
    assert not out.exists()


def test_sheet_channel_picks_the_green_channel_of_an_rgb_hr(tmp_path: Path) -> None:
    lr, _ = _gray_pair(tmp_path / "raw")
    hr = _green_rgb(tmp_path / "hr_rgb.tif", 32)
    out = tmp_path / "out" / "f1.zarr"
    attrs = _ingest(lr, hr, out, channel=1, hr_pixel_size_um=0.2)
    _, stored_hr, stored = read_fov(out)
    green = tifffile.imread(hr)[..., 1].astype(np.float32)
    np.testing.assert_array_equal(stored_hr, green)
    assert stored_hr.any(), "the green channel must not be all zero"
    assert attrs["channel"] == 1 and stored == attrs
    assert attrs["source"]["hr"]["channel_read"] == 1 and attrs["source"]["lr"]["channel_read"] == 0
    # The red channel of the same file is all zero: the old silent default.
    with pytest.raises(InputError, match="HR image is all zero"):
        _ingest(lr, hr, tmp_path / "out" / "red.zarr", channel=0, hr_pixel_size_um=0.2)


def test_multichannel_lr_with_gray_hr_needs_the_channel(tmp_path: Path) -> None:
    _, hr = _gray_pair(tmp_path / "raw")
    series = np.stack([np.full((3, 16, 16), 10, np.uint16), np.full((3, 16, 16), 20, np.uint16)], axis=1)
    lr = _ome(tmp_path / "lr_tcyx.ome.tif", series, "TCYX", 0.4)
    out = tmp_path / "out" / "f1.zarr"
    with pytest.raises(InputError) as err:
        _ingest(lr, hr, out)
    assert str(err.value) == (
        f"{lr}: the LR series has 2 channels but the HR target {hr} has 1; say which LR channel to use in the sample sheet's 'channel' column (0..1)"
    )
    assert not out.exists()
    attrs = _ingest(lr, hr, out, channel=1)
    stored_lr, _, _ = read_fov(out)
    assert (stored_lr == 20).all()
    assert attrs["source"]["lr"]["channel_read"] == 1 and attrs["source"]["hr"]["channel_read"] == 0


def test_equal_channel_counts_keep_channel_zero_by_default(tmp_path: Path) -> None:
    lr, hr = _gray_pair(tmp_path / "raw")
    attrs = _ingest(lr, hr, tmp_path / "f1.zarr")
    assert attrs["channel"] == 0
    rgb_lr = np.zeros((3, 16, 16, 3), np.uint8)
    rgb_lr[..., 0] = 50
    lr_rgb = tmp_path / "lr_rgb.tif"
    tifffile.imwrite(lr_rgb, rgb_lr, photometric="rgb")
    hr = tmp_path / "hr_rgb.tif"
    tifffile.imwrite(hr, np.full((32, 32, 3), 9, np.uint8), photometric="rgb")
    attrs = _ingest(lr_rgb, hr, tmp_path / "f2.zarr", lr_pixel_size_um=0.4, hr_pixel_size_um=0.2)
    stored_lr, _, _ = read_fov(tmp_path / "f2.zarr")
    assert attrs["channel"] == 0 and (stored_lr == 50).all()


def test_sheet_keeps_an_empty_channel_distinguishable(tmp_path: Path) -> None:
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tsession\tfov\tlr\thr\tchannel\nm\ts\tf1\ta.tif\tb.tif\t\nm\ts\tf2\ta.tif\tb.tif\t1\n")
    df = load_samples(sheet)
    assert df.loc["m/s/f1", "channel"] == 0 and not df.loc["m/s/f1", "channel_given"]
    assert df.loc["m/s/f2", "channel"] == 1 and df.loc["m/s/f2", "channel_given"]
    bare = tmp_path / "bare.tsv"
    bare.write_text("sample\tsession\tfov\tlr\thr\nm\ts\tf1\ta.tif\tb.tif\n")
    assert not load_samples(bare).loc["m/s/f1", "channel_given"]


# ------------------------------------------------------------------------------------------
# truncated Olympus OIB


@pytest.mark.parametrize("length", [100, 512, 5_000, 600_000, 1_230_000, 1_300_000, 1_339_000])
def test_truncated_oib_says_truncated(tmp_path: Path, length: int) -> None:
    """Cut copies fail in oiffile with struct.error, a settings error, or not at all (the
    lost sectors are not image data); each is named a truncated copy."""
    assert OIB.stat().st_size == 1_339_392
    cut = tmp_path / "cut.oib"
    cut.write_bytes(OIB.read_bytes()[:length])
    with pytest.raises(InputError) as err:
        read_series(cut)
    message = str(err.value)
    assert message.startswith(f"{cut}: the Olympus OIB file is truncated or damaged ({length} bytes; ")
    assert message.endswith("— copy it again from the microscope PC")
    assert OIB.stat().st_size == 1_339_392  # the original is never touched


def test_truncated_oib_as_hr_target_is_refused_by_ingest(tmp_path: Path) -> None:
    lr = _ome(tmp_path / "lr.ome.tif", np.ones((3, 128, 128), np.uint16), "TYX", 0.35)
    cut = tmp_path / "cut.oib"
    cut.write_bytes(OIB.read_bytes()[:700_000])
    out = tmp_path / "f1.zarr"
    with pytest.raises(InputError) as err:
        _ingest(lr, cut, out, channel=0)
    assert str(err.value) == (
        f"{cut}: the Olympus OIB file is truncated or damaged (700000 bytes; its header and sector "
        "table call for 1339392) — copy it again from the microscope PC"
    )
    assert not out.exists()


def test_complete_oib_copy_still_reads(tmp_path: Path) -> None:
    copy = Path(shutil.copy(OIB, tmp_path / "copy.oib"))
    frames, meta = read_series(copy, channel=1)
    assert frames.shape == (1, 256, 256) and meta["channels"] == 3
    np.testing.assert_array_equal(frames, read_series(OIB, channel=1)[0])
