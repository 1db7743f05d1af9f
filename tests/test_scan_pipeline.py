"""The stat stage the scan, the audit and the daemon's reconcile share
(:func:`catalogd.pipeline.tree_pass`), on real trees: what it yields, how it copes with
links, unlistable and vanishing directories, an early stop, and that the per-directory
memo of the policy check finds exactly what the full check of every entry finds."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from catalogd.errors import UsageError
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.pipeline import Documents, RowMaker, TreePass, tree_pass
from catalogd.policy import make_policy
from catalogd.policy.walker import file_stat, open_dir, policy_findings
from catalogd.store.sqlite_schema import PlainRows, doc_row

VISIT = "visitor/biomax/20170251/2017112208"


def make_tree(root: Path, dirs: int = 6, files: int = 30) -> tuple[set[str], set[str]]:
    """``dirs`` directories (each with an inner one) of ``files`` files, inside a visit;
    returns the directories (the root included) and the files."""
    base = root / VISIT / "raw"
    directories = {str(root)}
    above = root
    for part in Path(VISIT, "raw").parts:
        above = above / part
        directories.add(str(above))
    files_made: set[str] = set()
    for d in range(dirs):
        sub = base / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        directories |= {str(sub.parent), str(sub)}
        for f in range(files):
            path = sub / f"f{f}.cbf"
            path.write_bytes(b"x" * f)
            files_made.add(str(path))
    return directories, files_made


def run(root: Path, **kwargs: object) -> tuple[TreePass, list[str], list[str]]:
    policy = make_policy(None, LayoutConfig(root=str(root)), NameCache())
    tree = TreePass(str(root))
    dirs: list[str] = []
    files: list[str] = []
    for part in tree_pass(str(root), policy, result=tree, **kwargs):  # type: ignore[arg-type]
        dirs.extend(part.dirs)
        files.extend(fs[0] for fs in part.files)
    return tree, dirs, files


def refusing(directory: str, error: OSError) -> Callable[[str], int]:
    """An opener that raises ``error`` for ``directory``."""

    def opener(path: str) -> int:
        if path == directory:
            raise error
        return open_dir(path)

    return opener


@pytest.mark.parametrize("processes", [1, 2])
def test_every_file_and_directory_once_with_its_stat(tmp_path: Path, processes: int) -> None:
    want_dirs, want_files = make_tree(tmp_path)
    policy = make_policy(None, LayoutConfig(root=str(tmp_path)), NameCache())
    tree = TreePass(str(tmp_path))
    parts = list(tree_pass(str(tmp_path), policy, result=tree, processes=processes))
    assert parts[0].dirs[0] == str(tmp_path)  # the root comes first
    files = [fs for part in parts for fs in part.files]
    dirs = [d for part in parts for d in part.dirs]
    assert sorted(dirs) == sorted(want_dirs) and len(dirs) == len(set(dirs))
    assert sorted(fs[0] for fs in files) == sorted(want_files)
    assert (tree.files, tree.directories, tree.complete) == (len(want_files), len(dirs), True)
    assert all(fs == file_stat(fs[0], os.lstat(fs[0])) for fs in files)


def test_links_are_counted_not_followed(tmp_path: Path) -> None:
    _, want_files = make_tree(tmp_path, dirs=1, files=2)
    real = tmp_path / VISIT / "raw" / "d0"
    (tmp_path / VISIT / "raw" / "link").symlink_to(real)
    (tmp_path / VISIT / "raw" / "loop").symlink_to(tmp_path / VISIT / "raw" / "loop")
    tree, dirs, files = run(tmp_path, processes=1)
    assert set(files) == want_files
    assert str(tmp_path / VISIT / "raw" / "link") not in dirs
    assert tree.others == 2


def test_an_unlistable_directory_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=2, files=2)
    locked = str(tmp_path / VISIT / "raw" / "d0" / "inner")

    opener = refusing(locked, PermissionError(errno.EACCES, "Permission denied", locked))
    tree, _, files = run(tmp_path, processes=2, opener=opener)
    assert tree.unlisted == [locked] and tree.complete
    assert len(tree.errors) == 1 and "Permission denied" in tree.errors[0]
    assert "DP011" in [v.rule for v in tree.findings if v.path == locked]
    assert str(tmp_path / VISIT / "raw" / "d1" / "inner" / "f1.cbf") in files
    assert not [f for f in files if f.startswith(locked + "/")]


def test_a_vanished_directory_is_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=2, files=2)
    gone = str(tmp_path / VISIT / "raw" / "d1" / "inner")

    opener = refusing(gone, FileNotFoundError(errno.ENOENT, "No such file or directory", gone))
    tree, _, files = run(tmp_path, processes=1, opener=opener)
    assert (tree.unlisted, tree.errors, tree.complete) == ([], [], True)
    assert not [f for f in files if f.startswith(gone + "/")] and len(files) == 2


def test_leaving_the_walk_early_stops_the_children(tmp_path: Path) -> None:
    make_tree(tmp_path, dirs=40, files=50)
    policy = make_policy(None, LayoutConfig(root=str(tmp_path)), NameCache())
    parts = tree_pass(str(tmp_path), policy, processes=2, check=False)
    for _ in range(3):  # the root, the top walked here, then the first child's part
        next(parts)
    assert multiprocessing.active_children()
    parts.close()
    assert multiprocessing.active_children() == []


def test_a_missing_root_is_a_usage_error_and_a_file_root_is_itself(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing"):
        run(tmp_path / "missing")
    f = tmp_path / "f"
    f.write_bytes(b"")
    tree, dirs, files = run(f)
    assert (dirs, files, tree.files) == ([], [str(f)], 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give entries other owners")
@pytest.mark.parametrize("processes", [1, 2])
def test_the_walk_finds_exactly_what_the_full_check_of_every_entry_finds(
    tmp_path: Path, processes: int
) -> None:
    """The walk checks the first entry of each (mode, uid, gid) of a directory in full
    and copies its findings for the others; here every entry is checked in full too."""
    make_tree(tmp_path, dirs=3, files=12)
    raw = tmp_path / VISIT / "raw"
    variants = [(0o640, 0, 0), (0o644, 0, 0), (0o666, 65534, 0), (0o600, 0, 65534)]
    for i, path in enumerate(sorted(raw.rglob("*.cbf"))):
        mode, uid, gid = variants[i % len(variants)]
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    for i, path in enumerate(sorted(p for p in raw.rglob("*") if p.is_dir())):
        os.chmod(path, (0o2770, 0o755, 0o777)[i % 3])
    (raw / "d0" / "escape").symlink_to("/etc")
    layout = LayoutConfig(root=str(tmp_path))
    policy = make_policy(None, layout, NameCache())
    tree = TreePass(str(tmp_path))
    for _ in tree_pass(str(tmp_path), policy, result=tree, processes=processes):
        pass
    expected = []
    for top, dirnames, filenames in os.walk(str(tmp_path)):
        for name in [*dirnames, *filenames]:
            entry = os.path.join(top, name)
            expected.extend(policy_findings(policy, entry, os.lstat(entry)))
    expected.extend(policy_findings(policy, str(tmp_path), os.lstat(tmp_path)))

    def key(v: object) -> str:
        return repr(v)

    assert len(tree.findings) > 36  # every file has findings here (no such groups)
    assert sorted(tree.findings, key=key) == sorted(expected, key=key)
    assert any(stat.S_ISLNK(os.lstat(v.path).st_mode) for v in tree.findings)


def test_the_plain_rows_of_the_children_are_the_rows_of_the_documents(tmp_path: Path) -> None:
    """The SQLite store's PlainRows (what the scan's walking children encode for files
    the indexers do not read) against doc_row of the document Documents builds, for
    names of every kind, in and above a visit, with a proposal and without one."""
    root = tmp_path / "data"
    make_tree(root, dirs=2, files=3)
    names = ["UPPER Case.cbf", "caf\xe9.h5", "tab\tand\nline", "dots..", ".hidden", "x" * 200]
    places = [root / VISIT / "raw", root / VISIT, root / "visitor" / "biomax", root / VISIT / "p"]
    for place in places:
        place.mkdir(exist_ok=True)
        for name in names:
            (place / name).write_bytes(b"y")
    os.mkdir(root / VISIT / "raw" / b"\xff\xfe".decode("utf-8", "surrogateescape"))
    (root / VISIT / "raw" / os.fsdecode(b"\xff\xfe") / "frame.cbf").write_bytes(b"")
    (root / VISIT / "raw" / os.fsdecode(b"bad\xe9.cbf")).write_bytes(b"")
    layout = LayoutConfig(root=str(root))
    names_cache = NameCache()
    policy = make_policy(None, layout, names_cache)

    def rows(plain: bool) -> dict[str, object]:
        documents = Documents(layout, names_cache, clock=lambda: 1.7e9)
        maker = RowMaker(
            documents,
            doc_row,
            {},
            refresh=False,
            extract_suffixes=None,
            plain=PlainRows if plain else None,
        )
        made: dict[str, object] = {}
        for part in tree_pass(str(root), policy, processes=1, on_part=maker):
            assert not part.files  # every file was encoded
            made.update(part.rows)
        return made

    plain, documents = rows(True), rows(False)
    assert len(documents) == 6 + 4 * len(names) + 2
    assert plain == documents
    assert doc_row(Documents(layout, names_cache, clock=lambda: 1.7e9).build(
        str(root / VISIT / "raw" / "dots.."), os.lstat(root / VISIT / "raw" / "dots..")
    )) == plain[str(root / VISIT / "raw" / "dots..")]  # fmt: skip
