import pytest

from fastscan.atomic import atomic_path, clear_stale, write_text


def test_success_replaces_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "a.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.zarr"]


def test_failure_keeps_previous_output(tmp_path):
    out = write_text(tmp_path / "t.tsv", "complete\n")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert out.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]


def test_stale_temporaries_of_dead_writers_are_cleared(tmp_path):
    out = tmp_path / "s.zarr"
    stale = tmp_path / "s.zarr.tmp-999999999-abcd1234"
    stale.mkdir()
    clear_stale(out)
    assert not stale.exists()
