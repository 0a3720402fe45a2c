"""Peak memory of a slide restoration does not grow with the slide: 1x, 4x and 16x the area."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from test_restore_slide import META, SVS

TESTS = Path(__file__).resolve().parent
BASE = 512  # LR px of the 1x slide: its output is 4 MB; the 16x output is 67 MB

CHILD = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from test_infer import ConvStack
from fastscan.restore.slide import restore_slide

prov = restore_slide({slide!r}, {out!r}, generator=(ConvStack(depth=2, width=4), {meta!r}), tile=128, overlap=16,
                     region=128, pyramid_levels=3, threads=1)
print(json.dumps({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "stats": prov["stats"]}}))
"""


def peak_rss(tmp_path, factor):
    """Peak RSS (bytes) of a child restoring a slide of ``factor`` x ``factor`` copies of an SVS crop."""
    crop = tifffile.imread(SVS)[:BASE, :BASE, 1]
    slide = tmp_path / f"slide{factor}.tif"
    tifffile.imwrite(slide, np.tile(crop, (factor, factor)), tile=(256, 256))
    script = tmp_path / f"child{factor}.py"
    script.write_text(CHILD.format(tests=str(TESTS), slide=str(slide), out=str(tmp_path / f"out{factor}.ome.zarr"), meta=META))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["stats"]["computed"] == (factor * BASE // 128) ** 2
    slide.unlink()
    return result["maxrss_kb"] * 1024


def test_peak_rss_does_not_grow_with_slide_area(tmp_path):
    peaks = {f: peak_rss(tmp_path, f) for f in (1, 2, 4)}  # 1x, 4x and 16x the area
    hr_16x = 4 * (2 * 4 * BASE) ** 2  # bytes of the 16x slide's float32 output, level 0 alone
    # Holding the 16x output (or even its input as float32) in memory would add at least 16 MB;
    # a few MB of allocator and codec noise are allowed.
    growth = peaks[4] - peaks[1]
    assert growth < 16e6, f"peak RSS grew by {growth / 1e6:.0f} MB from 1x to 16x (output {hr_16x / 1e6:.0f} MB): {peaks}"
    assert peaks[2] - peaks[1] < 16e6, peaks
