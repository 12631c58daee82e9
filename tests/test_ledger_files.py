"""One atomic write (batch/files.py): a reader sees the old file or the new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.errors import BatchError
from batch.files import atomic_path, write_atomic


def test_atomic_path_replaces_the_file_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible before the rename
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_write_atomic_names_the_file_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(BatchError, match="cannot write"):
        write_atomic(blocker / "below" / "x", b"data")  # a file where a folder must be
    write_atomic(tmp_path / "a" / "b.txt", b"data")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"data"
