import pandas as pd
import pytest

from fastscan.sheets import SheetError, assign_splits, load_samples, load_slides

HEADER = "sample\tsession\tfov\tlr\thr\n"


def write(tmp_path, text, name="samples.tsv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_samples_fills_optional_columns(tmp_path):
    df = load_samples(write(tmp_path, HEADER + "mito\ts1\tf1\ta.tif\tb.tif\n"))
    assert list(df.index) == ["mito/s1/f1"]
    assert df.loc["mito/s1/f1", "channel"] == 0
    assert df.loc["mito/s1/f1", "split"] == ""


def test_duplicate_fov_is_refused(tmp_path):
    p = write(tmp_path, HEADER + "mito\ts1\tf1\ta.tif\tb.tif\nmito\ts1\tf1\tc.tif\td.tif\n")
    with pytest.raises(SheetError, match=r"duplicate.*mito/s1/f1"):
        load_samples(p)


def test_missing_and_unknown_columns_are_named(tmp_path):
    with pytest.raises(SheetError, match=r"lacks the column.*'hr'"):
        load_samples(write(tmp_path, "sample\tsession\tfov\tlr\nmito\ts1\tf1\ta.tif\n"))
    with pytest.raises(SheetError, match=r"unknown column.*'colour'"):
        load_samples(write(tmp_path, "sample\tsession\tfov\tlr\thr\tcolour\nm\ts\tf\ta\tb\tred\n"))


def test_wrong_type_names_row_and_column(tmp_path):
    p = write(tmp_path, "sample\tsession\tfov\tlr\thr\tchannel\nm\ts\tf\ta\tb\tgreen\n")
    with pytest.raises(SheetError, match=r"row 2: column 'channel' must be int, got 'green'"):
        load_samples(p)


def test_bad_split_value(tmp_path):
    p = write(tmp_path, "sample\tsession\tfov\tlr\thr\tsplit\nm\ts\tf\ta\tb\ttraining\n")
    with pytest.raises(SheetError, match="split must be one of"):
        load_samples(p)


def test_missing_sheet(tmp_path):
    with pytest.raises(SheetError, match="does not exist"):
        load_samples(tmp_path / "nope.tsv")


def test_slides_sheet(tmp_path):
    df = load_slides(write(tmp_path, "slide\tpath\nwhole\tx.svs\n", "slides.tsv"))
    assert df.loc["whole", "channel"] == 0 and df.loc["whole", "model"] == ""
    with pytest.raises(SheetError, match="duplicate slide"):
        load_slides(write(tmp_path, "slide\tpath\nw\tx.svs\nw\ty.svs\n", "slides.tsv"))


def test_splits_are_by_fov_stable_and_explicit_wins():
    rows = [("m", "s1", f"f{i:03d}", "") for i in range(300)] + [("m", "s1", "fixed", "test")]
    df = pd.DataFrame(rows, columns=["sample", "session", "fov", "split"])
    df.index = df["sample"] + "/" + df["session"] + "/" + df["fov"]
    s1 = assign_splits(df, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert s1["m/s1/fixed"] == "test"
    counts = s1.value_counts()
    assert 0.1 < counts["val"] / len(df) < 0.3 and 0.1 < counts["test"] / len(df) < 0.3
    # Adding a FOV never moves another FOV to a different split.
    more = pd.concat([df, pd.DataFrame([("m", "s2", "new", "")], columns=df.columns, index=["m/s2/new"])])
    s2 = assign_splits(more, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert (s2[s1.index] == s1).all()
    # Another seed gives another split.
    assert (assign_splits(df, seed=4, val_fraction=0.2, test_fraction=0.2) != s1).any()


def test_workflow_parse_time_imports_stay_light():
    """common.smk imports fastscan.sheets while Snakemake parses: it must not pull in torch."""
    import subprocess
    import sys

    code = "import sys, fastscan.sheets; sys.exit('torch' in sys.modules or 'fastai' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_latin1_samples_sheet_names_line_byte_and_remedy(tmp_path):
    p = tmp_path / "samples.tsv"
    p.write_bytes((HEADER + "# comment\nmito\ts1\tf1\tcafé.tif\tb.tif\n").encode("latin-1"))
    with pytest.raises(SheetError) as err:
        load_samples(p)
    message = str(err.value)
    assert message.startswith(f"sheet {p} is not UTF-8 text: line 3, byte 15 of the line is 0xe9 ('é' in Latin-1/Windows-1252")
    assert "save it as UTF-8" in message and "'Unicode (UTF-8)'" in message and "'Text (Tab delimited)'" in message


def test_windows_1252_slides_sheet_is_refused_the_same_way(tmp_path):
    p = tmp_path / "slides.tsv"
    p.write_bytes("slide\tpath\nwhole\t/data/€uro.svs\n".encode("cp1252"))
    with pytest.raises(SheetError, match=r"line 2, byte 13 of the line is 0x80 \('€' in Latin-1/Windows-1252") as err:
        load_slides(p)
    assert str(err.value).startswith(f"sheet {p} is not UTF-8 text")


def test_utf16_sheet_is_named_as_such(tmp_path):
    p = tmp_path / "samples.tsv"
    p.write_bytes((HEADER + "m\ts\tf\ta\tb\n").encode("utf-16"))
    with pytest.raises(SheetError, match=r"is UTF-16 text \(Excel's 'Unicode Text'\), not UTF-8; save it as UTF-8"):
        load_samples(p)


def test_utf8_sheet_with_accents_is_read(tmp_path):
    p = tmp_path / "samples.tsv"
    p.write_bytes((HEADER + "mito\ts1\tf1\tcafé.tif\tb.tif\n").encode("utf-8"))
    assert load_samples(p).loc["mito/s1/f1", "lr"] == "café.tif"
