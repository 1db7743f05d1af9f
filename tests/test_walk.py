from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from catalogd.walk import walk


def make_tree(root: Path, dirs: int = 6, files: int = 30) -> set[str]:
    expected = {str(root)}
    for d in range(dirs):
        sub = root / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        expected |= {str(sub.parent), str(sub)}
        for f in range(files):
            path = sub / f"f{f}.txt"
            path.write_bytes(b"x")
            expected.add(str(path))
    return expected


@pytest.mark.parametrize("workers", [1, 4])
def test_walk_yields_every_entry_once(tmp_path: Path, workers: int) -> None:
    expected = make_tree(tmp_path)
    paths = [e.path for e in walk(str(tmp_path), workers=workers)]
    assert sorted(paths) == sorted(expected)
    assert len(paths) == len(set(paths))


def test_symlinks_are_yielded_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    entries = {e.path: e for e in walk(str(tmp_path))}
    assert str(tmp_path / "link" / "f") not in entries
    assert not entries[str(tmp_path / "link")].is_dir
    assert str(tmp_path / "loop") in entries


def test_vanished_entries_are_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=1, files=3)
    gone = str(tmp_path / "d0" / "inner" / "f1.txt")

    def lstat(path: str) -> os.stat_result:
        if path == gone:
            raise FileNotFoundError(errno.ENOENT, "gone", path)
        return os.lstat(path)

    paths = {e.path for e in walk(str(tmp_path), lstat=lstat)}
    assert gone not in paths
    assert str(tmp_path / "d0" / "inner" / "f2.txt") in paths


def test_unlistable_directory_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=2, files=2)
    locked = str(tmp_path / "d0")

    def scandir(path: str) -> Any:
        if path == locked:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return os.scandir(path)

    entries = list(walk(str(tmp_path), scandir=scandir))
    errors = [e for e in entries if e.error is not None]
    assert [(e.path, e.is_dir, e.error.errno) for e in errors if e.error] == [
        (locked, True, errno.EACCES)
    ]
    assert str(tmp_path / "d1" / "inner" / "f1.txt") in {e.path for e in entries}


def test_other_filesystems_are_not_entered_unless_asked(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=2, files=1)
    mount = str(tmp_path / "d1")
    real_dev = os.lstat(tmp_path).st_dev

    def lstat(path: str) -> os.stat_result:
        st = os.lstat(path)
        if path == mount or path.startswith(mount + "/"):
            values = list(st)
            values[2] = real_dev + 1  # st_dev
            return os.stat_result(values)
        return st

    paths = {e.path for e in walk(str(tmp_path), lstat=lstat)}
    assert mount in paths
    assert str(tmp_path / "d1" / "inner") not in paths
    crossing = {e.path for e in walk(str(tmp_path), lstat=lstat, cross_mounts=True)}
    assert str(tmp_path / "d1" / "inner") in crossing


def test_stopping_early_leaves_no_thread_behind(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=20, files=100)
    before = set(threading.enumerate())
    iterator = walk(str(tmp_path), workers=4)
    for _ in range(10):
        next(iterator)
    iterator.close()  # type: ignore[attr-defined]
    assert set(threading.enumerate()) <= before


def test_a_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(walk(str(tmp_path / "missing")))


def test_a_file_root_yields_itself(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    assert [e.path for e in walk(str(f))] == [str(f)]
