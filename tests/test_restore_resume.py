"""A killed slide restoration resumes from the regions already written and ends as if never killed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import assert_same_restoration
from test_restore_slide import META, standin, svs_crop

from fastscan.restore.slide import restore_slide

TESTS = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_infer import ConvStack
from fastscan.restore.slide import restore_slide

class Slow(ConvStack):
    # Slow enough that the parent can kill the job part-way; same weights as ConvStack().
    def forward(self, x):
        time.sleep({delay})
        return super().forward(x)

prov = restore_slide({slide!r}, {out!r}, generator=(Slow(), {meta!r}), tile=64, overlap=16, region=32, pyramid_levels=2, threads=1)
print(json.dumps(prov["stats"]))
"""


def done_markers(partial):
    root = Path(partial) / ".progress" / "done"
    return [p for p in root.rglob("*") if p.is_file() and p.name.isdigit()] if root.is_dir() else []


def every_chunk(arr):
    """Read every chunk of ``arr`` on its own, so a corrupt chunk raises here."""
    cy, cx = arr.chunks
    for y in range(0, arr.shape[0], cy):
        for x in range(0, arr.shape[1], cx):
            yield np.asarray(arr[y : y + cy, x : x + cx])


def test_sigkill_then_rerun_continues_and_equals_an_uninterrupted_run(tmp_path):
    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=160, cols=160)
    out = tmp_path / "killed.ome.zarr"
    partial = tmp_path / "killed.ome.zarr.partial"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), delay=0.2, slide=str(slide), out=str(out), meta=META))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while len(done_markers(partial)) < 5:
            assert proc.poll() is None, f"the job ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "the job did not get going"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial.is_dir()  # the unfinished output never looks finished
    n_done = len(done_markers(partial))
    assert 5 <= n_done < 25

    # A region that was being written when the job died may have left a torn chunk: it is not
    # marked done, so the re-run must rewrite it. Make one such chunk unreadable on purpose.
    done = {tuple(int(v) for v in p.relative_to(partial / ".progress" / "done").parts) for p in done_markers(partial)}
    c, iy, ix = next((0, y, x) for y in range(5) for x in range(5) if (0, y, x) not in done)
    written = [p for p in (partial / "0" / "c").rglob("*") if p.is_file()]
    assert len(written) >= n_done  # chunks live at 0/c/{row}/{column}
    torn = partial / "0" / "c" / str(iy) / str(ix)
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"\x28\xb5\x2f\xfd torn")
    with pytest.raises(Exception):  # noqa: B017  (the codec's error type differs between numcodecs versions)
        zarr.open_array(partial / "0", mode="r")[64 * iy : 64 * iy + 64, 64 * ix : 64 * ix + 64]

    prov = restore_slide(slide, out, generator=standin(), tile=64, overlap=16, region=32, pyramid_levels=2)
    assert prov["stats"] == {"units": 25, "computed": 25 - n_done, "skipped": n_done}
    assert not partial.exists() and not (out / ".progress").exists()

    ref = tmp_path / "ref.ome.zarr"
    restore_slide(slide, ref, generator=standin(), tile=64, overlap=16, region=32, pyramid_levels=2)
    for level in ("0", "1"):
        got, want = zarr.open_array(out / level, mode="r"), zarr.open_array(ref / level, mode="r")
        chunks = list(every_chunk(got))
        assert all(np.isfinite(ch).all() for ch in chunks)  # NaN would mark a chunk never written
        # The killed child wrote some regions with its own thread count: see assert_same_restoration.
        assert_same_restoration(got[:], want[:])


def test_background_reads_and_writes_give_the_same_store(tmp_path, monkeypatch):
    """The CUDA / spare-core path (reads ahead, writes behind) writes exactly what the plain loop does."""
    from fastscan.restore import slide as restore_slide_module

    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=100, cols=90)
    plain = tmp_path / "plain.ome.zarr"
    restore_slide(slide, plain, generator=standin(), tile=64, overlap=16, region=32, pyramid_levels=2)
    monkeypatch.setattr(restore_slide_module, "_overlap_io", lambda device: True)
    threaded = tmp_path / "threaded.ome.zarr"
    restore_slide(slide, threaded, generator=standin(), tile=64, overlap=16, region=32, pyramid_levels=2)
    np.testing.assert_array_equal(zarr.open_array(threaded / "0", mode="r")[:], zarr.open_array(plain / "0", mode="r")[:])


def test_write_failure_leaves_no_output_and_resumes(tmp_path, monkeypatch):
    """A job that fails part-way keeps the regions it finished and publishes nothing."""
    from fastscan.restore import resumable

    slide = tmp_path / "crop.tif"
    svs_crop(slide, rows=96, cols=96)
    out = tmp_path / "o.ome.zarr"
    real = resumable._mark_done
    calls = []

    def failing(partial, key):
        if len(calls) == 4:
            raise OSError("disk full")
        calls.append(key)
        real(partial, key)

    monkeypatch.setattr(resumable, "_mark_done", failing)
    with pytest.raises(OSError, match="disk full"):
        restore_slide(slide, out, generator=standin(), tile=64, overlap=16, region=32)
    assert not out.exists()
    monkeypatch.setattr(resumable, "_mark_done", real)
    prov = restore_slide(slide, out, generator=standin(), tile=64, overlap=16, region=32)
    assert prov["stats"]["skipped"] == 4 and prov["stats"]["computed"] == 5
    assert json.loads(json.dumps(prov))["regions"] == 9
