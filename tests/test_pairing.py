"""Pairing a session's files into a sample sheet (fastscan.pairing, ``fastscan sheet``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import oiffile
import pytest
import tifffile

from fastscan.cli import main as cli_main
from fastscan.io import InputError, read_header
from fastscan.pairing import Entry, PairingError, pair_entries, propose, propose_splits, review_text, write_sheet
from fastscan.sheets import fov_fraction, load_samples
from fastscan.simulate import write_fov

DATA = Path(__file__).resolve().parent / "data"
OIB = DATA / "mitoegfp_fv1000.oib"
TINY = {"field_of_view_um": 12.8, "lr": {"pixels": 32, "frames": 3}, "hr": {"pixels": 64}}


def olympus_target(folder: Path, *, scale: int = 2, when: str | None = None) -> Path:
    """An OIF of the real OIB's field at ``scale`` x its sampling: the OIB converted to OIF, its
    channel TIFFs upsampled and its settings (image size, pixel size, time) edited to match."""
    oiffile.oib2oif(OIB, location=str(folder), verbose=0)
    main = folder / "Cell 1 mitoEGFP.oif"
    text = main.read_text(encoding="utf-16")
    data = oiffile.imread(OIB)
    for i, f in enumerate(sorted((folder / "Cell 1 mitoEGFP.oif.files").glob("s_C*.tif"))):
        tifffile.imwrite(f, np.kron(data[i], np.ones((scale, scale), data.dtype)))
    n = 256 * scale
    text = re.sub(r"(Image(Width|Height))=256", rf"\1={n}", text)
    text = re.sub(r"((Height|Width)ConvertValue)=0\.177", rf"\1={0.177 / scale}", text)
    text = re.sub(r"((GUI )?MaxSize)=256", rf"\1={n}", text)
    if when is not None:
        text = re.sub(r"ImageCaputreDate='[^']*'", f"ImageCaputreDate='{when}'", text)
    main.write_text(text, encoding="utf-16")
    return main


def ome(path: Path, shape, *, px: float, stage=None, when: str | None = None) -> Path:
    """A small OME-TIFF with pixel size and, optionally, stage position and acquisition date."""
    meta: dict = {"axes": "TYX" if len(shape) == 3 else "YX", "PhysicalSizeX": px, "PhysicalSizeY": px}
    planes = shape[0] if len(shape) == 3 else 1
    if stage is not None:
        meta["Plane"] = {"PositionX": [stage[0]] * planes, "PositionXUnit": ["µm"] * planes, "PositionY": [stage[1]] * planes, "PositionYUnit": ["µm"] * planes}
    if when is not None:
        meta["AcquisitionDate"] = when
    tifffile.imwrite(path, np.zeros(shape, np.uint16), ome=True, metadata=meta)
    return path


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """A session folder: the real OIB with its Olympus HR target, simulated FOVs, FOVs with stage
    positions and times, and distractors (another zoom, an unpaired series, a cut file, text)."""
    root = tmp_path_factory.mktemp("s") / "mito 2012"
    cell = root / "cell1"
    cell.mkdir(parents=True)
    shutil.copy(OIB, cell / "Cell 1 mitoEGFP.oib")
    olympus_target(cell, when="2012-07-26 15:14:20")
    # Zoom 3.5: twice the OIB's pixels at its pixel size, i.e. twice its field.
    tifffile.imwrite(cell / "Cell 1 mitoEGFP zoom3.5.tif", np.zeros((512, 512), np.uint16), resolution=(1e4 / 0.177, 1e4 / 0.177), resolutionunit="CENTIMETER")
    sim = root / "sim"
    for i in (1, 2, 3):
        write_fov(
            lr_path=sim / f"fov0{i}_lr.ome.tif",
            hr_path=sim / f"fov0{i}_hr.ome.tif",
            truth_path=sim / f"fov0{i}_truth.json",
            specimen="mitochondria",
            seed=i,
            params=TINY,
        )
    (sim / "fov04_lr.ome.tif").write_bytes((sim / "fov01_lr.ome.tif").read_bytes()[:300])
    (sim / "notes.txt").write_text("session notes\n")
    stage = root / "stage"
    stage.mkdir()
    # Names say nothing: the stage position and the time pair these.
    for i, (x, y) in enumerate([(100.0, 100.0), (400.0, 100.0), (100.0, 400.0)]):
        ome(stage / f"Image{2 * i + 1:04d}.ome.tif", (4, 16, 16), px=0.5, stage=(x, y), when=f"2024-05-03T10:{10 * i:02d}:00")
        ome(stage / f"Image{2 * i + 2:04d}.ome.tif", (32, 32), px=0.25, stage=(x + 0.3, y), when=f"2024-05-03T10:{10 * i + 1:02d}:00")
    # A series at a fourth position: the nearest target is 300 µm away.
    ome(stage / "Image0007.ome.tif", (4, 16, 16), px=0.5, stage=(400.0, 400.0), when="2024-05-03T10:40:00")
    return root


def test_read_header_of_the_real_oib_reads_no_pixels() -> None:
    h = read_header(OIB)
    assert (h["format"], h["axes"], h["size_yx"], h["channels"], h["frames"]) == ("oib", "CYX", [256, 256], 3, 1)
    assert h["pixel_size_um"] == [0.177, 0.177]
    assert h["zoom"] == 7.0
    assert h["acquired"] == "2012-07-26T15:13:35.976"
    assert h["scan_direction"] == "Oneway"
    assert h["focus_um"] == pytest.approx(3931.82)
    assert h["stage_um"] is None and "stage_um" not in h["sources"]  # FV1000 files do not record it
    assert h["sources"]["zoom"] == "Acquisition Parameters Common/ZoomValue"


def test_read_header_ome_stage_time_and_bad_files(tmp_path: Path) -> None:
    h = read_header(ome(tmp_path / "a.ome.tif", (5, 8, 8), px=0.4, stage=(12.5, -3.0), when="2024-05-03T10:00:00"))
    assert (h["frames"], h["size_yx"], h["pixel_size_um"]) == (5, [8, 8], [0.4, 0.4])
    assert h["stage_um"] == [12.5, -3.0] and h["acquired"] == "2024-05-03T10:00:00"
    cut = tmp_path / "cut.oib"
    cut.write_bytes(OIB.read_bytes()[:20000])
    with pytest.raises(InputError, match="cut.oib.*truncated"):
        read_header(cut)
    text = tmp_path / "b.tif"
    text.write_text("not an image")
    with pytest.raises(InputError, match="b.tif"):
        read_header(text)


def test_session_folder_is_paired_reviewed_and_written(session: Path, tmp_path: Path) -> None:
    proposal = propose([session])
    got = {(p.session, p.fov): (p.lr.path.name, p.hr.path.name) for p in proposal.pairs}
    assert got == {
        ("cell1", "Cell_1_mitoEGFP"): ("Cell 1 mitoEGFP.oib", "Cell 1 mitoEGFP.oif"),
        ("sim", "fov01"): ("fov01_lr.ome.tif", "fov01_hr.ome.tif"),
        ("sim", "fov02"): ("fov02_lr.ome.tif", "fov02_hr.ome.tif"),
        ("sim", "fov03"): ("fov03_lr.ome.tif", "fov03_hr.ome.tif"),
        ("stage", "Image0001"): ("Image0001.ome.tif", "Image0002.ome.tif"),
        ("stage", "Image0003"): ("Image0003.ome.tif", "Image0004.ome.tif"),
        ("stage", "Image0005"): ("Image0005.ome.tif", "Image0006.ome.tif"),
    }
    assert {p.sample for p in proposal.pairs} == {"mito_2012"}
    oib = next(p for p in proposal.pairs if p.session == "cell1")
    assert "zoom 7" in oib.evidence and "Δt 45 s" in oib.evidence and "same name" in oib.evidence
    assert any("stage position" in n for n in oib.notes)  # said, not silently skipped
    left = {u.entry.path.name: u for u in proposal.unpaired}
    assert set(left) == {
        "Cell 1 mitoEGFP zoom3.5.tif",
        "Image0007.ome.tif",
        "fov04_lr.ome.tif",
        "notes.txt",
        "fov01_truth.json",
        "fov02_truth.json",
        "fov03_truth.json",
    }
    assert left["Cell 1 mitoEGFP zoom3.5.tif"].role == "HR target"
    assert "another field: 90.62 µm wide" in left["Cell 1 mitoEGFP zoom3.5.tif"].reason
    assert left["Image0007.ome.tif"].role == "LR series"
    assert "stage position 300 µm away" in left["Image0007.ome.tif"].reason
    assert left["fov04_lr.ome.tif"].status == "unreadable" and "fov04_lr.ome.tif" in left["fov04_lr.ome.tif"].reason
    assert left["notes.txt"].status == "skipped"
    # Seven FOVs of one sample: one test and one val FOV, the lowest hash fractions first.
    order = sorted(proposal.pairs, key=lambda p: fov_fraction(p.sample, p.session, p.fov, seed=0))
    assert [p.split for p in order] == ["test", "val"] + ["train"] * 5
    review = review_text(proposal)
    assert "7 pair(s) (train 5, val 1, test 1); 2 image(s) unpaired, 1 unreadable, 4 other file(s) skipped" in review
    out = tmp_path / "samples.tsv"
    write_sheet(proposal, out, review=tmp_path / "review.tsv")
    sheet = load_samples(out)
    assert len(sheet) == 7 and set(sheet["split"]) == {"train", "val", "test"}
    row = sheet.loc["mito_2012/cell1/Cell_1_mitoEGFP"]
    assert (Path(row["lr"]), Path(row["hr"])) == (oib.lr.path, oib.hr.path)
    assert len((tmp_path / "review.tsv").read_text().splitlines()) == 1 + 7 + 7


def _entry(name: str, size: int, *, px=None, zoom=None, stage=None, when=None, frames=1, folder="/s") -> Entry:
    header = {
        "size_yx": [size, size],
        "pixel_size_um": [px, px] if px else None,
        "zoom": zoom,
        "stage_um": stage,
        "focus_um": None,
        "acquired": when,
        "frames": frames,
        "channels": 1,
    }
    return Entry(Path(folder) / name, Path(folder), header=header)


def test_two_fitting_targets_are_reported_not_guessed() -> None:
    lr = _entry("a.tif", 64, px=0.4, frames=10)
    hrs = [_entry("b.tif", 128, px=0.2), _entry("c.tif", 128, px=0.2)]
    pairs, left = pair_entries([lr, *hrs])
    assert pairs == []
    reason = next(u.reason for u in left if u.entry is lr)
    assert "ambiguous: 2 HR targets fit (b.tif, c.tif)" in reason
    # The same with times: the clearly closest one wins, and the review says how.
    lr.header["acquired"] = "2024-01-01T10:00:00"
    hrs[0].header["acquired"] = "2024-01-01T10:05:00"
    hrs[1].header["acquired"] = "2024-01-01T10:00:40"
    pairs, _ = pair_entries([lr, *hrs])
    assert [p.hr for p in pairs] == [hrs[1]] and "closest in time" in pairs[0].notes[0]


def test_target_fitting_series_at_different_positions_is_reported() -> None:
    hr = _entry("t.tif", 128, px=0.2, stage=[0.0, 0.0])
    a = _entry("a.tif", 64, px=0.4, stage=[2.0, 0.0], frames=5)
    b = _entry("b.tif", 64, px=0.4, stage=[-2.0, 0.0], frames=5)
    pairs, left = pair_entries([a, b, hr])
    assert pairs == []
    assert all("also fits" in u.reason and "different or unrecorded stage positions" in u.reason for u in left if u.entry in (a, b))
    # Two series at the same position share the target, and then share its split.
    b.header["stage_um"] = [2.0, 0.0]
    pairs, _ = pair_entries([a, b, hr])
    assert {p.lr.path.name for p in pairs} == {"a.tif", "b.tif"}
    for i, p in enumerate(pairs):
        p.sample, p.session, p.fov = "s", "x", f"f{i}"
    extra = [_entry(f"e{i}.tif", 64, px=0.4) for i in range(3)]
    more, _ = pair_entries(extra + [_entry(f"e{i}_hr.tif", 128, px=0.2) for i in range(3)])
    for i, p in enumerate(more):
        p.sample, p.session, p.fov = "s", "x", f"g{i}"
    propose_splits(pairs + more)
    assert pairs[0].split == pairs[1].split


def test_zoom_time_and_series_order_decide() -> None:
    lr = _entry("f1_fast.tif", 64, px=0.4, zoom=7.0, frames=20)
    other_zoom = _entry("f1_slow.tif", 128, px=0.2, zoom=14.0)
    pairs, left = pair_entries([lr, other_zoom])
    assert pairs == [] and "zoom 14, the series 7" in next(u.reason for u in left if u.entry is lr)
    later = _entry("f2_slow.tif", 128, px=0.2, when="2024-01-02T10:00:00")
    lr2 = _entry("f2_fast.tif", 64, px=0.4, when="2024-01-01T10:00:00")
    pairs, left = pair_entries([lr2, later])
    assert pairs == [] and "another session" in next(u.reason for u in left if u.entry is lr2)
    # Different folders never pair.
    pairs, _ = pair_entries([_entry("g.tif", 64, px=0.4), _entry("g_hr.tif", 128, px=0.2, folder="/t")])
    assert pairs == []


def test_npy_arrays_of_the_w2s_layout_pair_by_channel(tmp_path: Path, capsys) -> None:
    """One folder per FOV: each channel's widefield series (T, Y, X) beside its 2x SIM target and
    the SIM raw input, which fits nothing. Arrays record no pixel size: --lr-pixel-size gives it."""
    from fastscan.io import ingest_fov

    rng = np.random.default_rng(1)
    root = tmp_path / "w2s"
    for image in range(1, 5):
        folder = root / f"Image{image:03d}"
        folder.mkdir(parents=True)
        for channel in range(2):
            np.save(folder / f"wf_channel{channel}.npy", rng.integers(0, 4095, (3, 16, 16), dtype=np.uint16))
            np.save(folder / f"sim_channel{channel}.npy", rng.random((32, 32), dtype=np.float32))
        np.save(folder / "sim_input_channel0.npy", rng.random((48, 80), dtype=np.float32))
    out = tmp_path / "samples.tsv"
    assert cli_main(["sheet", str(root), "--out", str(out), "--lr-pixel-size", "0.1", "--no-split"]) == 0
    printed = capsys.readouterr().out
    assert "8 pair(s)" in printed and "sim_input_channel0.npy" in printed
    sheet = load_samples(out)
    assert len(sheet) == 8 and set(sheet["session"]) == {f"Image{i:03d}" for i in range(1, 5)}
    # Both channels of an image are one FOV: one split, never one trained on and one held out.
    split = propose([root], lr_pixel_size_um=0.1)
    assert all(len({p.split for p in split.pairs if p.session == s}) == 1 for s in {p.session for p in split.pairs})
    assert {p.split for p in split.pairs} == {"train", "val", "test"}
    for _, row in sheet.iterrows():
        assert Path(row["lr"]).name.replace("wf_", "sim_") == Path(row["hr"]).name
        assert (float(row["lr_pixel_size_um"]), float(row["hr_pixel_size_um"])) == (pytest.approx(0.1), pytest.approx(0.05))
    row = sheet.iloc[0]
    attrs = ingest_fov(
        lr=row["lr"],
        hr=row["hr"],
        out=tmp_path / "fov.zarr",
        sample=row["sample"],
        session=row["session"],
        fov=row["fov"],
        lr_pixel_size_um=float(row["lr_pixel_size_um"]),
        hr_pixel_size_um=float(row["hr_pixel_size_um"]),
    )
    assert attrs["source"]["lr"]["format"] == "npy" and attrs["lr_pixel_size_um"] == pytest.approx([0.1, 0.1])
    with pytest.raises(PairingError, match="LR pixel size must be a positive number"):
        propose([root], lr_pixel_size_um=-1.0)


def _png(path: Path, value: int, size: int = 16) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def test_png_frame_folders_of_the_fmd_layout_are_series(tmp_path: Path, capsys) -> None:
    """FMD: raw/<fov>/*.png noisy frames beside gt/<fov>/avg50.png, all one size (scale 1)."""
    from fastscan.io import ingest_fov

    root = tmp_path / "Confocal_BPAE_B"
    for fov in range(1, 5):
        for frame in range(3):
            _png(root / "raw" / str(fov) / f"HV110_P05005100{frame:02d}.png", 10 * fov + frame)
        _png(root / "gt" / str(fov) / "avg50.png", 10 * fov)
    (root / "raw" / "1" / "notes.txt").write_text("acquired at 0.5 us dwell")
    out = tmp_path / "samples.tsv"
    assert cli_main(["sheet", str(root), "--out", str(out), "--scale", "1", "--lr-pixel-size", "0.2", "--relative-to", str(tmp_path)]) == 0
    review = capsys.readouterr().out
    assert "4 pair(s)" in review and "sample/session/fov" in review  # the sheet's key, as the first column shows it
    sheet = load_samples(out)
    assert list(sheet.index) == [f"Confocal_BPAE_B/Confocal_BPAE_B/{fov}" for fov in range(1, 5)]
    row = sheet.loc["Confocal_BPAE_B/Confocal_BPAE_B/3"]
    assert (row["lr"], row["hr"]) == ("Confocal_BPAE_B/raw/3/HV110_P*.png", "Confocal_BPAE_B/gt/3/avg50.png")
    assert (row["lr_pixel_size_um"], row["hr_pixel_size_um"]) == ("0.2", "0.2")
    assert set(sheet["split"]) == {"train", "val", "test"}
    attrs = ingest_fov(
        lr=tmp_path / row["lr"],
        hr=tmp_path / row["hr"],
        out=tmp_path / "fov.zarr",
        sample="s",
        session="s",
        fov="3",
        lr_pixel_size_um=0.2,
        hr_pixel_size_um=0.2,
        scale=1,
    )
    assert attrs["source"]["lr"]["format"] == "glob" and len(attrs["source"]["lr"]["files"]) == 3
    # At scale 2 the same folders hold no pair, and the review says why.
    proposal = propose([root], scale=2)
    assert proposal.pairs == [] and all("no partner" in u.reason for u in proposal.unpaired if u.status == "unpaired")
    # One unlike frame spoils its folder's series, named, and no other.
    _png(root / "raw" / "2" / "HV110_P0500510099.png", 1, size=8)
    proposal = propose([root], scale=1)
    assert sorted(p.fov for p in proposal.pairs) == ["1", "3", "4"]
    [bad] = [u for u in proposal.unpaired if u.status == "unreadable"]
    assert "3 PNG frames, not all alike" not in bad.reason and "4 PNG frames, not all alike" in bad.reason and "HV110_P0500510099.png 8x8" in bad.reason
    # Its target, left alone, points at it: the file to fix is named beside the target too.
    [target] = [u for u in proposal.unpaired if u.status == "unpaired"]
    assert target.entry.path.name == "avg50.png" and target.entry.path.parent.name == "2"
    assert "Confocal_BPAE_B/raw/2/HV110_P*.png beside it (its folder, or the matching one of another role) could not be read" in target.reason


def test_test_patterns_hold_out_a_datasets_own_test_fovs(tmp_path: Path, capsys) -> None:
    """--test keeps a public dataset's split: FMD's FOV 19 (raw/19, gt/19), W2S's Image081 on
    (every channel of them); the other FOVs are split into train and val only."""
    fmd = tmp_path / "Confocal_BPAE_B"
    for fov in (1, 2, 3, 4, 5, 19):
        for frame in range(2):
            _png(fmd / "raw" / str(fov) / f"HV110_P05005100{frame:02d}.png", fov + frame)
        _png(fmd / "gt" / str(fov) / "avg50.png", fov)
    out = tmp_path / "samples.tsv"
    assert cli_main(["sheet", str(fmd), "--out", str(out), "--scale", "1", "--test", "*/19/*"]) == 0
    assert "matches --test '*/19/*'" in capsys.readouterr().out
    sheet = load_samples(out)
    assert list(sheet.index[sheet["split"] == "test"]) == ["Confocal_BPAE_B/Confocal_BPAE_B/19"]
    assert set(sheet["split"]) == {"train", "val", "test"} and (sheet["split"] == "val").sum() == 1
    # The same FOVs without --test: a random one of them is the test split, not necessarily 19.
    assert {p.split for p in propose([fmd], scale=1).pairs} == {"train", "val", "test"}

    w2s = tmp_path / "w2s"
    rng = np.random.default_rng(2)
    for image in (1, 2, 3, 80, 81, 99, 120):
        folder = w2s / f"Image{image:03d}"
        folder.mkdir(parents=True)
        for channel in range(2):
            np.save(folder / f"wf_channel{channel}.npy", rng.integers(0, 4095, (2, 16, 16), dtype=np.uint16))
            np.save(folder / f"sim_channel{channel}.npy", rng.random((32, 32), dtype=np.float32))
    proposal = propose([w2s], lr_pixel_size_um=0.1, test=["Image08[1-9]/*", "Image09?/*", "Image1??/*"])
    held = {p.session for p in proposal.pairs if p.split == "test"}
    assert held == {"Image081", "Image099", "Image120"}
    assert all(sum(p.session == s for p in proposal.pairs) == 2 for s in held)  # both channels
    assert {p.split for p in proposal.pairs if p.session not in held} == {"train", "val"}

    # A pattern that matches nothing is a typo, not an empty test split; --no-split contradicts it.
    with pytest.raises(PairingError, match=r"--test 'Image81/\*' matched no paired file"):
        propose([w2s], lr_pixel_size_um=0.1, test=["Image81/*"])
    with pytest.raises(PairingError, match="--no-split"):
        propose([w2s], lr_pixel_size_um=0.1, test=["Image1??/*"], split=False)
    assert cli_main(["sheet", str(w2s), "--out", str(tmp_path / "w.tsv"), "--test", "nothing/*"]) == 2
    assert not (tmp_path / "w.tsv").exists()


def test_a_denoising_dataset_without_scale_1_is_told_so(tmp_path: Path, capsys, caplog) -> None:
    """FMD's folders at the default scale 2 pair nothing. The user hears that, and that --scale 1
    is what frames and targets of one size need, not that their --test glob matched nothing."""
    fmd = tmp_path / "Confocal_BPAE_B"
    for fov in (1, 2, 19):
        for frame in range(2):
            _png(fmd / "raw" / str(fov) / f"HV110_P05005100{frame:02d}.png", fov + frame)
        _png(fmd / "gt" / str(fov) / "avg50.png", fov)
    out = tmp_path / "samples.tsv"
    assert cli_main(["sheet", str(fmd), "--out", str(out), "--test", "*/19/*"]) == 2
    review = capsys.readouterr().out
    assert "no partner" in review and "0 pair(s); " in review  # the review was printed, with no split to speak of
    assert "no LR series could be paired" in caplog.text and "Every file is 16x16" in caplog.text and "give --scale 1" in caplog.text
    assert "matched no paired file" not in caplog.text and not out.exists()
    # No such hint where the scale is not the obvious cause: files of several sizes, or series
    # alone (no single image or target-named file that --scale 1 could pair them with).
    _png(fmd / "gt" / "2" / "avg50.png", 2, size=24)
    with pytest.raises(PairingError) as err:
        write_sheet(propose([fmd], scale=2), out)
    assert "--scale 1" not in str(err.value)
    shutil.rmtree(fmd / "gt")
    with pytest.raises(PairingError) as err:
        write_sheet(propose([fmd], scale=2), out)
    assert "no LR series could be paired" in str(err.value) and "--scale 1" not in str(err.value)


def test_single_frame_denoising_pairs_by_name_and_role_at_scale_1(tmp_path: Path) -> None:
    """noisy/<name>.png beside clean/<name>.png, and low/ beside GT/ TIFFs: equal frames, so the
    folder's role word says which is the series; files whose names recur stay single frames."""
    root = tmp_path / "pairs"
    for name in ("cellA", "cellB", "cellC"):
        _png(root / "noisy" / f"{name}.png", 3)
        _png(root / "clean" / f"{name}.png", 9)
    (root / "low").mkdir()
    (root / "GT").mkdir()
    for name in ("n1", "n2"):
        tifffile.imwrite(root / "low" / f"{name}.tif", np.ones((16, 16), np.uint16))
        tifffile.imwrite(root / "GT" / f"{name}.tif", np.ones((16, 16), np.uint16))
    proposal = propose([root], scale=1, split=False)
    got = sorted((p.lr.shown(), p.hr.shown()) for p in proposal.pairs)
    assert got == sorted(
        [(f"pairs/noisy/{n}.png", f"pairs/clean/{n}.png") for n in ("cellA", "cellB", "cellC")]
        + [(f"pairs/low/{n}.tif", f"pairs/GT/{n}.tif") for n in ("n1", "n2")]
    )
    # In one folder: frames beside their average (the glob leaves it out), a noisy frame beside
    # its target, and at scale 2 an LR frame beside its HR target.
    mixed = tmp_path / "mixed"
    for t in range(3):
        _png(mixed / "fov1" / f"frame{t}.png", t)
    _png(mixed / "fov1" / "avg.png", 1)
    _png(mixed / "fov2" / "low.png", 1)
    _png(mixed / "fov2" / "gt.png", 1)
    proposal = propose([mixed], scale=1, split=False)
    assert sorted((p.lr.shown(), p.hr.shown()) for p in proposal.pairs) == [
        ("mixed/fov1/frame*.png", "mixed/fov1/avg.png"),
        ("mixed/fov2/low.png", "mixed/fov2/gt.png"),
    ]
    _png(mixed / "fov3" / "lr.png", 1)
    _png(mixed / "fov3" / "hr.png", 1, size=32)
    proposal = propose([mixed], scale=2, split=False)
    assert [(p.lr.shown(), p.hr.shown()) for p in proposal.pairs] == [("mixed/fov3/lr.png", "mixed/fov3/hr.png")]
    # Two files alike in frames and in role words: nothing says which is the target.
    odd = tmp_path / "odd"
    _png(odd / "a.png", 1)
    tifffile.imwrite(odd / "b.tif", np.ones((16, 16), np.uint16))
    proposal = propose([odd], scale=1)
    assert proposal.pairs == [] and all("named as its target" in u.reason for u in proposal.unpaired)


def test_cli_writes_refuses_and_forces(session: Path, tmp_path: Path, capsys, caplog) -> None:
    out = tmp_path / "samples.tsv"
    args = [str(session / "sim"), "--out", str(out), "--relative-to", str(tmp_path), "--sample", "mito"]
    assert cli_main(["sheet", *args]) == 0
    printed = capsys.readouterr().out
    assert "3 pair(s)" in printed and "fov04_lr.ome.tif" in printed
    sheet = load_samples(out)
    assert list(sheet.index) == ["mito/sim/fov01", "mito/sim/fov02", "mito/sim/fov03"]
    assert not Path(sheet["lr"].iloc[0]).is_absolute()
    assert (tmp_path / sheet["lr"].iloc[0]).resolve() == (session / "sim" / "fov01_lr.ome.tif").resolve()
    before = out.read_text()
    assert cli_main(["sheet", *args, "--no-split"]) == 2
    assert "samples.tsv: exists; pass --force to replace it" in caplog.text
    assert capsys.readouterr().out == ""  # refused before any folder was read
    assert out.read_text() == before
    assert cli_main(["sheet", *args, "--no-split", "--force"]) == 0
    assert set(load_samples(out)["split"]) == {""}


def test_bad_folders_and_options_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(PairingError, match="holds no OIB, OIF, TIFF, NPY or PNG"):
        propose([empty])
    with pytest.raises(PairingError, match="folder not found"):
        propose([tmp_path / "missing"])
    with pytest.raises(PairingError, match="scale must be a positive integer"):
        propose([empty], scale=0)
    with pytest.raises(PairingError, match="split fractions"):
        propose_splits([], val_fraction=0.6, test_fraction=0.5)
    lone = tmp_path / "lone"
    lone.mkdir()
    ome(lone / "a.ome.tif", (2, 16, 16), px=0.5)
    proposal = propose([lone])
    assert "no partner" in proposal.unpaired[0].reason
    with pytest.raises(PairingError, match="no LR series could be paired"):
        write_sheet(proposal, tmp_path / "s.tsv")
    assert not (tmp_path / "s.tsv").exists()


def test_pixel_size_one_file_lacks_is_written_and_the_sheet_passes_the_workflow_schema(tmp_path: Path) -> None:
    from snakemake.utils import validate

    folder = tmp_path / "day1"
    folder.mkdir()
    ome(folder / "cell_fast.ome.tif", (3, 16, 16), px=0.5)
    tifffile.imwrite(folder / "cell_slow.tif", np.zeros((32, 32), np.uint16))  # no resolution tags
    proposal = propose([folder])
    [pair] = proposal.pairs
    assert pair.hr_pixel_size_um == 0.25 and any("HR pixel size not in the file" in n for n in pair.notes)
    assert "not in the files: pixel size" in "; ".join(pair.notes)
    out = write_sheet(proposal, tmp_path / "samples.tsv")
    sheet = load_samples(out)
    assert sheet.loc["day1/day1/cell", "hr_pixel_size_um"] == "0.25"
    validate(sheet, schema=str(Path(__file__).resolve().parents[1] / "workflow/schemas/samples.schema.yaml"))
