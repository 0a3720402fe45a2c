"""Bad input: every refusal names the file or row and the problem, and leaves nothing half-written.

Cases already covered elsewhere are not repeated here: the missing/unknown sample-sheet columns,
the wrong column type and the bad split value (tests/test_sheets.py); a plain truncated TIFF, a
TIFF cut before its last page, a truncated OIB, HR 3x the LR, NaN in the HR, an all-zero LR, a
failed ``create_array`` during ingestion (tests/test_io.py); a FOV whose
registration QC fails being written with ``passed=False`` (tests/test_register.py) and skipped
by the dataset (tests/test_dataset.py); ``load_generator`` without ``model.json`` or with a
pickle carrying code (tests/test_models.py). The workflow-level cases (a missing file named in
a sheet, a failing FOV that does not stop the run, raw inputs never modified) are in
tests/test_bad_input_workflow.py.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import functools
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr
from conftest import write_registered
from scipy import ndimage
from zarr.storage import LocalStore

from fastscan.dataset import FovEntry, build_dataset, read_dataset
from fastscan.io import InputError, ingest_fov, open_slide, read_fov, read_series
from fastscan.register import read_qc, register_fov
from fastscan.sheets import SheetError, load_samples, load_slides

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
OIB = DATA / "mitoegfp_fv1000.oib"
SVS = DATA / "cmu1_small_region_he.svs"

# ------------------------------------------------------------------------------------------
# helpers


def _ome(path: Path, data: np.ndarray, axes: str, pixel_size: float) -> Path:
    metadata = {
        "axes": axes,
        "PhysicalSizeX": pixel_size,
        "PhysicalSizeY": pixel_size,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    tifffile.imwrite(path, data, ome=True, metadata=metadata)
    return path


def _scene(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth random structure (float32, 100..4100) that registration can lock on to."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (100 + 4000 * img).astype(np.float32)


def _pair(directory: Path, *, frames: int = 4, size: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """A video-rate LR series (uint16, ``(T, size, size)``) and its 2x HR target, as OME-TIFFs."""
    directory.mkdir(parents=True, exist_ok=True)
    hr = _scene((2 * size, 2 * size), seed)
    base = hr.reshape(size, 2, size, 2).mean(axis=(1, 3))
    rng = np.random.default_rng(seed + 1)
    lr = np.stack([base + rng.normal(0, 20, base.shape) for _ in range(frames)])
    lr_path = _ome(directory / "lr.ome.tif", np.clip(lr, 0, 65535).astype(np.uint16), "TYX", 0.4)
    hr_path = _ome(directory / "hr.ome.tif", hr, "YX", 0.2)
    return lr_path, hr_path


def _leftovers(directory: Path) -> list[str]:
    """Temporaries of an atomic write (``*.tmp-*``, ``*.old-*``) left in ``directory``."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _digests(paths: list[Path]) -> dict[str, tuple[str, int]]:
    return {os.fspath(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def _refused(exc_type: type[Exception], call: Callable[[], object], *needles: str, out: Path) -> str:
    """Run ``call``, expect ``exc_type`` whose message holds every needle, and no output at ``out``."""
    with pytest.raises(exc_type) as err:
        call()
    message = str(err.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert not out.exists(), f"{out} was written although the input was refused"
    assert _leftovers(out.parent) == []
    print(f"{exc_type.__name__}: {message}")  # shown with pytest -s: the catalogue of messages
    return message


def _ingest(tmp_path: Path, lr: Path | str, hr: Path | str, **kwargs) -> Callable[[], object]:
    """Ingestion of ``lr``/``hr`` into ``_out(tmp_path)``, ready to call."""
    return functools.partial(ingest_fov, lr=lr, hr=hr, out=_out(tmp_path), sample="mito", session="s1", fov="fov", **kwargs)


def _out(tmp_path: Path) -> Path:
    return tmp_path / "ingest" / "fov.zarr"


def _sheet(tmp_path: Path, text: str, name: str = "samples.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "sample\tsession\tfov\tlr\thr\n"

# ------------------------------------------------------------------------------------------
# sample and slide sheets


def test_sheet_paths_that_are_no_sheet(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match=r"slides\.tsv does not exist"):
        load_slides(tmp_path / "slides.tsv")
    with pytest.raises(SheetError, match=r"is a directory, not a tab-separated file"):
        load_samples(tmp_path)
    with pytest.raises(SheetError, match=r"empty.tsv is empty: it needs a header line"):
        load_samples(_sheet(tmp_path, "", "empty.tsv"))
    with pytest.raises(SheetError, match=r"Expected 5 fields in line 3, saw 6"):
        load_samples(_sheet(tmp_path, HEADER + "m\ts\tf1\ta\tb\nm\ts\tf2\ta\tb\textra\n"))


def test_duplicate_fov_names_the_key_and_the_lines(tmp_path: Path) -> None:
    # Comment and blank lines are skipped by the reader but counted by an editor.
    text = HEADER + "# imaging day 1\nmito\ts1\tf1\ta.tif\tb.tif\nmito\ts1\tf2\tc.tif\td.tif\n\nmito\ts1\tf1\te.tif\tf.tif\n"
    path = _sheet(tmp_path, text)
    with pytest.raises(SheetError) as err:
        load_samples(path)
    assert str(err.value) == f"sheet {path}: duplicate (sample, session, fov) 'mito/s1/f1' (rows 3, 6)"


def test_duplicate_slide_names_the_lines(tmp_path: Path) -> None:
    path = _sheet(tmp_path, "slide\tpath\nw\tx.svs\nv\ty.svs\nw\tz.svs\n", "slides.tsv")
    with pytest.raises(SheetError, match=r"duplicate slide name\(s\) 'w' \(rows 2, 4\)"):
        load_slides(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("slide\tfile\nw\tx.svs\n", "lacks the column(s) ['path']"),
        ("slide\tpath\tzoom\nw\tx.svs\t2\n", "has unknown column(s) ['zoom']"),
    ],
)
def test_slide_sheet_columns(tmp_path: Path, text: str, needle: str) -> None:
    path = _sheet(tmp_path, text, "slides.tsv")
    with pytest.raises(SheetError) as err:
        load_slides(path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("channel", "-1", "row 3: column 'channel' must be 0 or more, got '-1'"),
        ("channel", "1.5", "row 3: column 'channel' must be int, got '1.5'"),
        ("lr_pixel_size_um", "0.4um", "row 3: column 'lr_pixel_size_um' must be float, got '0.4um'"),
        ("hr_pixel_size_um", "-0.2", "row 3: column 'hr_pixel_size_um' must be a positive number, got '-0.2'"),
        ("lr_pixel_size_um", "nan", "row 3: column 'lr_pixel_size_um' must be a positive number, got 'nan'"),
        ("sample", "mi/to", "row 3: column 'sample' is 'mi/to'; names may only hold letters"),
        ("fov", ".hidden", "row 3: column 'fov' is '.hidden'; names may only hold letters"),
        ("session", "", "row 3: column 'session' is empty"),
        ("lr", "", "row 3: column 'lr' is empty"),  # an empty hr is a session to restore, not an error
    ],
)
def test_sample_sheet_wrong_values_name_row_and_column(tmp_path: Path, column: str, value: str, needle: str) -> None:
    columns = ["sample", "session", "fov", "lr", "hr", "channel", "lr_pixel_size_um", "hr_pixel_size_um"]
    good = {"sample": "mito", "session": "s1", "fov": "f1", "lr": "a.tif", "hr": "b.tif", "channel": "0", "lr_pixel_size_um": "0.4", "hr_pixel_size_um": "0.2"}
    bad = {**good, "fov": "f2", column: value}
    lines = ["\t".join(columns)] + ["\t".join(row[c] for c in columns) for row in (good, bad)]
    path = _sheet(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(SheetError) as err:
        load_samples(path)
    assert str(err.value).startswith(f"sheet {path}, ") and needle in str(err.value)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("my slide\tx.svs\t0", "row 2: column 'slide' is 'my slide'"),
        ("w\tx.svs\tred", "row 2: column 'channel' must be an index, a list like 0,2 or all, got 'red'"),
        ("w\t\t0", "row 2: column 'path' is empty"),
    ],
)
def test_slide_sheet_wrong_values_name_row_and_column(tmp_path: Path, row: str, needle: str) -> None:
    path = _sheet(tmp_path, "slide\tpath\tchannel\n" + row + "\n", "slides.tsv")
    with pytest.raises(SheetError) as err:
        load_slides(path)
    assert str(path) in str(err.value) and needle in str(err.value)


# ------------------------------------------------------------------------------------------
# config schema


def _merged(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize(
    ("override", "problem", "where"),
    [
        ({"register": {"min_ncc": "high"}}, "'high' is not of type 'number'", "['register']['min_ncc']"),
        ({"ingest": {"scale": 2.5}}, "2.5 is not of type 'integer'", "['ingest']['scale']"),
        ({"seed": -1}, "-1 is less than the minimum of 0", "['seed']"),
        ({"models": {"mito": {"samples": "mito"}}}, "'mito' is not of type 'array'", "['models']['mito']['samples']"),
        ({"restore": {"tile": "128"}}, "'128' is not of type 'integer'", "['restore']['tile']"),
        ({"dataset": {"tiles": 64}}, "('tiles' was unexpected)", "['dataset']"),
    ],
)
def test_config_schema_errors_name_the_key(override: dict, problem: str, where: str) -> None:
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = _merged(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), override)
    with pytest.raises(WorkflowError) as err:
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    message = str(err.value)
    assert problem in message and f"On instance{where}" in message, message


# ------------------------------------------------------------------------------------------
# raw files: missing, unreadable, truncated, corrupt


def test_missing_or_directory_or_unmatched_lr(tmp_path: Path) -> None:
    lr, hr = _pair(tmp_path / "raw")
    out = _out(tmp_path)
    missing = tmp_path / "raw" / "missing_lr.ome.tif"
    _refused(InputError, _ingest(tmp_path, missing, hr), f"{missing}: file not found", out=out)
    _refused(InputError, _ingest(tmp_path, tmp_path / "raw", hr), "is a directory, expected an image file", out=out)
    pattern = tmp_path / "raw" / "frame_*.tif"
    _refused(InputError, _ingest(tmp_path, pattern, hr), f"{pattern}: no files match this pattern", out=out)


def test_truncated_and_corrupt_tiffs(tmp_path: Path) -> None:
    lr, hr = _pair(tmp_path / "raw")
    out = _out(tmp_path)
    raw = lr.read_bytes()

    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(raw[: len(raw) // 2])
    _refused(InputError, _ingest(tmp_path, cut, hr), str(cut), "truncated or corrupt", out=out)

    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    _refused(InputError, _ingest(tmp_path, empty, hr), f"{empty}: not a valid TIF file", "truncated or corrupt", out=out)

    text = tmp_path / "notes.tif"
    text.write_text("exported with the wrong extension")
    _refused(InputError, _ingest(tmp_path, lr, text), f"{text}: not a valid TIF file", out=out)

    # A damaged compressed strip: the header and page structure are intact, the pixels are not.
    packed = tmp_path / "packed.tif"
    tifffile.imwrite(packed, np.arange(5 * 32 * 32, dtype=np.uint16).reshape(5, 32, 32), compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(packed) as tf:
        page = tf.pages.first
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    damaged = bytearray(packed.read_bytes())
    damaged[offset : offset + count] = bytes(count)
    packed.write_bytes(bytes(damaged))
    _refused(InputError, _ingest(tmp_path, packed, hr), f"{packed}: cannot read TIFF", "truncated or corrupt", out=out)

    # A corrupt page directory (IFD): tifffile would otherwise log and return fewer pages.
    ifd = tmp_path / "ifd.tif"
    tifffile.imwrite(ifd, np.ones((5, 32, 32), np.uint16), photometric="minisblack", metadata=None)
    with tifffile.TiffFile(ifd) as tf:
        third = tf.pages[2].offset
    broken = bytearray(ifd.read_bytes())
    broken[third : third + 2] = b"\xff\xff"  # the page's tag count
    ifd.write_bytes(bytes(broken))
    _refused(InputError, _ingest(tmp_path, ifd, hr), f"{ifd}: TIFF page structure is broken", out=out)


def test_unreadable_file_chmod(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not block reads (see the simulated variant below)")
    lr, hr = _pair(tmp_path / "raw")
    lr.chmod(0)
    try:
        _refused(InputError, _ingest(tmp_path, lr, hr), f"{lr}: cannot be read", "Permission denied", out=_out(tmp_path))
        with pytest.raises(InputError, match="Permission denied"):
            open_slide(lr)
    finally:
        lr.chmod(0o644)


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission error of an unreadable file, raised by the first read of the reader."""
    import builtins

    import fastscan.io.sources

    lr, hr = _pair(tmp_path / "raw")
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(lr):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(fastscan.io.sources, "open", guarded_open, raising=False)
    _refused(InputError, _ingest(tmp_path, lr, hr), f"{lr}: cannot be read ([Errno 13] Permission denied", out=_out(tmp_path))
    with pytest.raises(InputError, match=r"cannot be read \(\[Errno 13\] Permission denied"):
        open_slide(lr)


# ------------------------------------------------------------------------------------------
# channels, shapes, frames and values


def test_oib_with_fewer_channels_than_asked(tmp_path: Path) -> None:
    """The real FV1000 OIB has 3 channels; a sheet asking for channel 3 (the fourth) is refused."""
    rng = np.random.default_rng(0)
    lr = _ome(tmp_path / "lr4c.ome.tif", rng.integers(1, 4000, (3, 4, 128, 128), dtype=np.uint16), "TCYX", 0.354)
    _refused(
        InputError,
        _ingest(tmp_path, lr, OIB, channel=3),
        f"{OIB}: has 3 channels (indices 0..2), channel 3 was asked for",
        out=_out(tmp_path),
    )


def test_oib_single_scan_as_lr_series_needs_its_channel(tmp_path: Path) -> None:
    """An OIB holds one slow scan: as the LR series it is a valid one-frame pair, but its 3
    channels against a grayscale target still need the channel named (tests/test_single_frame.py
    registers such a pair)."""
    hr = _ome(tmp_path / "hr.ome.tif", _scene((512, 512), 0), "YX", 0.0885)
    _refused(
        InputError,
        _ingest(tmp_path, OIB, hr),
        f"{OIB}: the LR series has 3 channels",
        f"the HR target {hr} has 1; say which LR channel to use",
        out=_out(tmp_path),
    )
    attrs = _ingest(tmp_path, OIB, hr, channel=0)()
    assert attrs["source"]["lr"]["shape"] == [1, 256, 256]


@pytest.mark.parametrize(
    ("hr_size", "scale", "expected", "hint"),
    [
        (64, 3, "96x96", "(the HR is 2x the LR: for such pairs set ingest.scale: 2 in the workflow's config)"),
        (32, 2, "64x64", "(the HR is 1x the LR: for such pairs set ingest.scale: 1 in the workflow's config)"),
        (65, 2, "64x64", "64x64"),  # no whole factor: no setting to suggest
    ],
)
def test_hr_not_scale_times_lr(tmp_path: Path, hr_size: int, scale: int, expected: str, hint: str) -> None:
    lr, _ = _pair(tmp_path / "raw", size=32)
    hr = _ome(tmp_path / "hr_bad.ome.tif", _scene((hr_size, hr_size), 1), "YX", 0.2)
    err = _refused(
        InputError,
        _ingest(tmp_path, lr, hr, scale=scale),
        f"{hr}: HR image is {hr_size}x{hr_size} but the LR frames of {lr} are 32x32",
        f"with scale={scale} the HR must be {expected}",
        hint,
        out=_out(tmp_path),
    )
    assert ("ingest.scale" in str(err)) == (hr_size % 32 == 0)


def test_a_suggested_scale_is_one_the_config_accepts(tmp_path: Path) -> None:
    """The hint names only factors the workflow schema allows for ingest.scale."""
    import yaml

    from fastscan.io.fov_store import MAX_SCALE

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["ingest"]["properties"]["scale"]["maximum"] == MAX_SCALE
    lr, _ = _pair(tmp_path / "raw", size=8)
    hr = _ome(tmp_path / "hr_big.ome.tif", _scene((8 * (MAX_SCALE + 1), 8 * (MAX_SCALE + 1)), 1), "YX", 0.2)
    message = _refused(InputError, _ingest(tmp_path, lr, hr, scale=2), "with scale=2 the HR must be 16x16", out=_out(tmp_path))
    assert "ingest.scale" not in message


def test_lr_series_without_frames(tmp_path: Path) -> None:
    """One frame is a pair (tests/test_single_frame.py); a series of none is refused.

    No TIFF writer produces a frameless series that reaches this check (a zero-size TIFF is
    refused earlier for its axes), so the check that ingestion runs on the declared and on the
    read frame count is called directly.
    """
    from fastscan.io.fov_store import _check_frame_count

    lr = tmp_path / "lr.ome.tif"
    with pytest.raises(InputError, match="LR series has no frame") as err:
        _check_frame_count(lr, 0)
    assert str(lr) in str(err.value)
    _check_frame_count(lr, 1)


def test_lr_frames_of_different_sizes(tmp_path: Path) -> None:
    _, hr = _pair(tmp_path / "raw")
    out = _out(tmp_path)

    # Pages of different sizes in one TIFF used to be read as the first page only.
    mixed = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(mixed) as tw:
        for shape in [(32, 32), (32, 32), (32, 40)]:
            tw.write(np.full(shape, 9, np.uint16), photometric="minisblack")
    _refused(InputError, _ingest(tmp_path, mixed, hr), f"{mixed}: holds 3 separate image series", "[32, 40] x1", out=out)

    # Appending a block of other-sized frames used to drop that block silently.
    appended = tmp_path / "appended.tif"
    tifffile.imwrite(appended, np.full((3, 32, 32), 9, np.uint16), photometric="minisblack")
    tifffile.imwrite(appended, np.full((2, 30, 32), 9, np.uint16), photometric="minisblack", append=True)
    shapes = "holds 2 separate image series (shapes [3, 32, 32] x1, [2, 30, 32] x1)"
    _refused(InputError, _ingest(tmp_path, appended, hr), f"{appended}: {shapes}", out=out)

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, shape in enumerate([(32, 32), (32, 32), (31, 32)], start=1):
        tifffile.imwrite(frames / f"f{i}.tif", np.full(shape, 9, np.uint16))
    _refused(InputError, _ingest(tmp_path, frames / "f*.tif", hr), f"{frames / 'f3.tif'}: frame is (31, 32) uint16", out=out)


def test_single_series_with_a_thumbnail_is_still_read(tmp_path: Path) -> None:
    """A reduced-resolution preview page is not a second series of frames."""
    path = tmp_path / "with_preview.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.full((3, 32, 32), 5, np.uint16), photometric="minisblack")
        tw.write(np.full((8, 8), 5, np.uint16), subfiletype=1)
    frames, meta = read_series(path)
    assert frames.shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("role", "bad", "problem"),
    [
        ("lr", "zero", "LR series is all zero"),
        ("hr", "zero", "HR image is all zero"),
        ("lr", "nan", "LR series contains NaN or infinite values"),
        ("hr", "inf", "HR image contains NaN or infinite values"),
        ("lr", "-inf", "LR series contains NaN or infinite values"),
    ],
)
def test_all_zero_or_non_finite_images(tmp_path: Path, role: str, bad: str, problem: str) -> None:
    lr, hr = _pair(tmp_path / "raw")
    if role == "lr":
        data = read_series(lr)[0].astype(np.float32)
        path, axes, px = tmp_path / f"lr_{bad}.ome.tif", "TYX", 0.4
    else:
        data = read_series(hr)[0][0]
        path, axes, px = tmp_path / f"hr_{bad}.ome.tif", "YX", 0.2
    if bad == "zero":
        data = np.zeros_like(data)
    else:
        data[..., 3, 5] = float(bad)  # one pixel (in every frame) is enough
    _ome(path, data, axes, px)
    args = (path, hr) if role == "lr" else (lr, path)
    _refused(InputError, _ingest(tmp_path, *args), f"{path}: {problem}", out=_out(tmp_path))


def test_failed_ingest_keeps_raw_files_unchanged(tmp_path: Path) -> None:
    lr, hr = _pair(tmp_path / "raw")
    before = _digests([lr, hr, OIB])
    for call in (_ingest(tmp_path, lr, OIB, channel=3), _ingest(tmp_path, OIB, hr), _ingest(tmp_path, lr, hr, scale=3)):
        with pytest.raises(InputError):
            call()
    _ingest(tmp_path, lr, hr)()
    assert _digests([lr, hr, OIB]) == before


# ------------------------------------------------------------------------------------------
# slides


def test_slide_directory_unreadable_or_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "slide_folder"
    folder.mkdir()
    (folder / "tile_0.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"slide_folder: is a directory but not a Zarr store"):
        open_slide(folder)
    cut = tmp_path / "cut.svs"
    cut.write_bytes(SVS.read_bytes()[: SVS.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        open_slide(cut)
    assert str(err.value) == f"{cut}: TIFF file contains no image series; it may be truncated or corrupt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained-model directory (untrained weights, the layout restore expects)."""
    from fastscan.models import build_generator, save_state_dict, write_model_json

    path = tmp_path_factory.mktemp("model")
    save_state_dict(build_generator(), path / "generator.pth")
    write_model_json(path, {"architecture": {}, "scale": 2, "normalisation": {"lr": [0.0, 1.0], "hr": [0.0, 1.0]}})
    return path


class _Payload:
    """Pickles to a call that leaves a file behind: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _restore(tmp_path: Path, slide: Path, model: Path, caplog: pytest.LogCaptureFixture) -> tuple[int, str, Path]:
    from fastscan.cli import main

    out = tmp_path / "restored" / "slide.ome.zarr"
    with caplog.at_level(logging.ERROR, logger="fastscan"):
        code = main(["restore", str(slide), "--model", str(model), "--out", str(out), "--device", "cpu"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not out.exists() and _leftovers(out.parent) == []
    return code, "\n".join(errors), out


def test_restore_refuses_a_directory_slide(tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "not_a_slide"
    folder.mkdir()
    code, errors, _ = _restore(tmp_path, folder, model_dir, caplog)
    assert code == 2 and f"{folder}: is a directory but not a Zarr store" in errors


def test_restore_refuses_model_without_model_json(tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    slide = _ome(tmp_path / "slide.ome.tif", _scene((64, 64), 3), "YX", 0.4)
    import torch

    bare = tmp_path / "bare_model"
    bare.mkdir()
    torch.save({"weight": torch.zeros(1)}, bare / "generator.pth")
    code, errors, _ = _restore(tmp_path, slide, bare, caplog)
    assert code == 2 and f"model directory {bare} has no model.json" in errors


def test_restore_refuses_weights_that_carry_code(tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    slide = _ome(tmp_path / "slide.ome.tif", _scene((64, 64), 3), "YX", 0.4)
    evil = tmp_path / "evil_model"
    evil.mkdir()
    (evil / "model.json").write_bytes((model_dir / "model.json").read_bytes())
    marker = tmp_path / "code_ran"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)}, evil / "generator.pth")
    # The file really is unsafe: a plain load runs the payload.
    torch.load(evil / "generator.pth", weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil / "generator.pth", weights_only=True)
    code, errors, _ = _restore(tmp_path, slide, evil, caplog)
    assert code == 2 and not marker.exists()
    assert f"{evil / 'generator.pth'} is not a plain state_dict and was refused by torch.load(weights_only=True)" in errors
    assert "a pickle that carries code or objects cannot be loaded safely" in errors


# ------------------------------------------------------------------------------------------
# a full disk while writing a Zarr store


class _DiskFull:
    """zarr's local store fails with ENOSPC once ``after`` keys were written.

    Accepted chunk writes take ``delay`` seconds, so that, as on a real disk, writes started
    before the failure are still landing in the temporary store while the error propagates.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int, delay: float = 0.02) -> None:
        self.after = after
        self.written: list[str] = []
        self.refused = 0
        real_set = LocalStore.set
        owner = self

        async def set_(self, key, value, *args, **kwargs):
            if len(owner.written) >= owner.after:
                owner.refused += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            owner.written.append(key)
            if "/c/" in key:
                await asyncio.sleep(delay)
            return await real_set(self, key, value, *args, **kwargs)

        monkeypatch.setattr(LocalStore, "set", set_)

    def assert_part_way(self) -> None:
        assert self.refused and any("/c/" in key for key in self.written), self.written


def _assert_disk_full(err: pytest.ExceptionInfo, out: Path) -> None:
    """A clear error naming ``out``, and no temporary left, even by writes still in flight."""
    time.sleep(0.1)  # longer than _DiskFull's delay: a late write would re-create the temporary
    assert _leftovers(out.parent) == []
    assert err.value.errno == errno.ENOSPC
    assert f"writing {out} failed: No space left on device" in str(err.value)
    print(f"{type(err.value).__name__}: {err.value}")


def _canonical(tmp_path: Path) -> Path:
    lr, hr = _pair(tmp_path / "raw", frames=4, size=32, seed=4)
    src = tmp_path / "ingest" / "fov.zarr"
    ingest_fov(lr=lr, hr=hr, out=src, sample="mito", session="s1", fov="fov")
    return src


def test_disk_full_while_writing_registered_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _canonical(tmp_path)
    out = tmp_path / "register" / "fov.zarr"
    register_fov(src, out)
    previous = (out.stat().st_ino, read_fov(out)[0], dict(zarr.open_group(out, mode="r").attrs["fastscan"]))

    full = _DiskFull(monkeypatch, after=3)
    with pytest.raises(OSError) as err:
        register_fov(src, out)
    full.assert_part_way()
    _assert_disk_full(err, out)
    # The previous complete store is still in place, untouched, and nothing else is left.
    assert out.stat().st_ino == previous[0]
    np.testing.assert_array_equal(read_fov(out)[0], previous[1])
    assert dict(zarr.open_group(out, mode="r").attrs["fastscan"]) == previous[2]
    assert _leftovers(out.parent) == []

    monkeypatch.undo()  # space freed
    register_fov(src, out)
    assert out.stat().st_ino != previous[0]
    np.testing.assert_array_equal(read_fov(out)[0], previous[1])
    assert _leftovers(out.parent) == []


def test_disk_full_while_writing_dataset_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        FovEntry(str(write_registered(tmp_path / f"reg{i}.zarr", seed=i)), "mito", "s1", f"f{i}", split) for i, split in enumerate(["train", "train", "val"])
    ]
    out = tmp_path / "dataset" / "mito.zarr"
    full = _DiskFull(monkeypatch, after=5)
    with pytest.raises(OSError) as err:
        build_dataset(entries, out, tile=32, stride=32)
    full.assert_part_way()
    _assert_disk_full(err, out)
    assert not out.exists() and _leftovers(out.parent) == []

    monkeypatch.undo()
    attrs = build_dataset(entries, out, tile=32, stride=32)
    group, tiles, stored = read_dataset(out)
    assert len(tiles) == attrs["counts"]["tiles"] == group["lr"].shape[0] > 0
    assert _leftovers(out.parent) == []


def test_disk_full_while_ingesting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lr, hr = _pair(tmp_path / "raw")
    out = _out(tmp_path)
    full = _DiskFull(monkeypatch, after=3)
    with pytest.raises(OSError) as err:
        _ingest(tmp_path, lr, hr)()
    full.assert_part_way()
    _assert_disk_full(err, out)
    assert not out.exists() and _leftovers(out.parent) == []
    monkeypatch.undo()
    _ingest(tmp_path, lr, hr)()
    assert read_fov(out)[0].shape == (4, 32, 32)


def test_disk_full_while_writing_qc_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _canonical(tmp_path)
    out, qc = tmp_path / "register" / "fov.zarr", tmp_path / "register" / "fov.qc.tsv"
    register_fov(src, out, qc=qc)
    previous = qc.read_text()
    real_to_csv = pd.DataFrame.to_csv

    def half_then_full(self, path, *args, **kwargs):
        Path(path).write_text(real_to_csv(self, None, *args, **kwargs)[:20])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    with pytest.raises(OSError) as err:
        register_fov(src, out, qc=qc)
    _assert_disk_full(err, qc)
    assert qc.read_text() == previous and _leftovers(qc.parent) == []
    monkeypatch.undo()
    register_fov(src, out, qc=qc)
    assert read_qc(qc).loc[0, "fov"] == "fov"
