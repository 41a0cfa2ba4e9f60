"""Output files appear whole or not at all, with the mode a plain open() would give."""
import os

import pytest

from deepcomp.errors import DeepcompError
from deepcomp.fileio import atomic_write


def test_writes_and_gives_the_usual_mode(tmp_path):
    p = tmp_path / "out.bin"
    old = os.umask(0o022)
    try:
        atomic_write(p, lambda f: f.write(b"abc"))
    finally:
        os.umask(old)
    assert p.read_bytes() == b"abc"
    assert (p.stat().st_mode & 0o777) == 0o644


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(p, half_then_fail)
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_bad_destinations_are_user_errors(tmp_path):
    with pytest.raises(DeepcompError, match="does not exist"):
        atomic_write(tmp_path / "no" / "such" / "dir.bin", lambda f: f.write(b"x"))
    with pytest.raises(DeepcompError, match="is a directory"):
        atomic_write(tmp_path, lambda f: f.write(b"x"))
