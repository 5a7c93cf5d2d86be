"""Atomic writes: the target is the old file or the new one, and no temp file is left behind."""
import pytest

from pgpong.files import atomic_path, write_atomic


def test_write_atomic_replaces_the_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_atomic(target, "old\n")
    write_atomic(target, b"new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_temp_name_keeps_a_suffix_for_writers_that_choose_a_format_by_it(tmp_path):
    with atomic_path(tmp_path / "game.mp4", suffix=".mp4") as tmp:
        assert tmp.name.endswith(".mp4") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "game.mp4").read_bytes() == b"x"
