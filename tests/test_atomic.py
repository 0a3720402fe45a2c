import json

import pytest

from fastscan.atomic import OutputError, atomic_path, check_replaceable, clear_stale, write_text


def _fastscan_store(path, **attrs):
    """A minimal store as fastscan writes them: a Zarr v3 group with a ``fastscan`` attribute."""
    path.mkdir()
    node = {"zarr_format": 3, "node_type": "group", "attributes": {"fastscan": {"kind": "fov", **attrs}}}
    (path / "zarr.json").write_text(json.dumps(node))
    return path


def test_success_replaces_and_leaves_no_temporaries(tmp_path):
    out = _fastscan_store(tmp_path / "a.zarr")
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


def test_a_folder_fastscan_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "thesis.docx").write_text("four years")
    with pytest.raises(OutputError, match=r"d: refusing to replace it: it is a folder that fastscan did not write \(it holds thesis.docx\)"):
        with atomic_path(out) as tmp:
            tmp.mkdir()
    assert (out / "thesis.docx").read_text() == "four years"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_fastscan_store_holding_foreign_files_is_not_replaced(tmp_path):
    out = _fastscan_store(tmp_path / "s.zarr")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"a fastscan store that also holds other files \(notes.txt\)"):
        check_replaceable(out)
    (out / "notes.txt").unlink()
    (out / ".DS_Store").write_text("")  # a file browser's litter is not the user's data
    check_replaceable(out)


def test_a_store_never_replaces_a_file_and_a_file_never_a_store(tmp_path):
    file = write_text(tmp_path / "out.ome.zarr", "a user's file")
    with pytest.raises(OutputError, match="it is a file, and a store"):
        with atomic_path(file) as tmp:
            tmp.mkdir()
    assert file.read_text() == "a user's file"
    store = _fastscan_store(tmp_path / "s.zarr")
    with pytest.raises(OutputError, match="it is a folder, and a file would replace it"):
        with atomic_path(store) as tmp:
            tmp.write_text("x")
    assert (store / "zarr.json").is_file()


def test_something_appearing_while_writing_is_not_replaced(tmp_path):
    out = tmp_path / "late.zarr"
    with pytest.raises(OutputError, match="fastscan did not write"):
        with atomic_path(out) as tmp:
            tmp.mkdir()
            out.mkdir()
            (out / "data.csv").write_text("1,2")
    assert (out / "data.csv").read_text() == "1,2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.zarr"]


def test_an_empty_folder_may_be_replaced(tmp_path):
    out = tmp_path / "empty.zarr"
    out.mkdir()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert (out / "zarr.json").is_file()


def test_free_space_is_measured_where_the_output_will_be_written(tmp_path):
    from fastscan.atomic import free_space

    # The writer creates missing folders, so the space that counts is the nearest existing one's.
    where, free = free_space(tmp_path / "results" / "register" / "s" / "f1.zarr")
    assert where == tmp_path.absolute() and free > 0
    assert free_space(tmp_path / "f1.zarr")[0] == tmp_path.absolute()
