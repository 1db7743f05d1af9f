from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from catalogd.document import document_id
from catalogd.errors import UsageError
from catalogd.layout import LayoutConfig
from catalogd.policy.walker import open_dir
from catalogd.scan import Scanner
from catalogd.store.base import SearchQuery
from catalogd.store.memory import MemoryStore

VISIT = "visitor/biomax/20170251/2017112208"


def tree(root: Path) -> None:
    raw = root / VISIT / "raw"
    raw.mkdir(parents=True)
    (root / VISIT / "process").mkdir()
    for i in range(3):
        (raw / f"scan_{i:04d}.nxs").write_bytes(b"x" * i)
    (root / VISIT / "process" / "notes.txt").write_text("notes", encoding="utf-8")


def scanner(root: Path, store: MemoryStore) -> Scanner:
    return Scanner(store, LayoutConfig(root=str(root)), batch_size=2, clock=lambda: 1_700_000_000.0)


def test_scan_stores_every_file_with_its_facts(tmp_path: Path) -> None:
    tree(tmp_path)
    os.chmod(tmp_path / VISIT / "raw" / "scan_0001.nxs", 0o2640)
    store = MemoryStore()
    stats = scanner(tmp_path, store).scan(str(tmp_path))
    assert (stats.files, stats.deleted, stats.errors) == (4, 0, [])
    assert stats.directories == 7
    docs = {Path(d.path).name: d for d in store.iter_documents()}
    assert set(docs) == {"scan_0000.nxs", "scan_0001.nxs", "scan_0002.nxs", "notes.txt"}
    doc = docs["scan_0001.nxs"]
    st = os.lstat(doc.path)
    assert (doc.size, doc.mtime, doc.inode, doc.uid, doc.gid) == (
        1,
        st.st_mtime,
        st.st_ino,
        st.st_uid,
        st.st_gid,
    )
    assert doc.mode == st.st_mode and stat.S_IMODE(doc.mode) == 0o2640  # setgid kept
    assert (doc.user_type, doc.beamline, doc.proposal, doc.visit) == (
        "visitor",
        "biomax",
        "20170251",
        "2017112208",
    )
    assert (doc.visit_date, doc.area, doc.inner_path) == ("2017-11-22", "raw", "raw/scan_0001.nxs")
    assert doc.access_groups == ("20170251-group",)
    assert doc.indexed_at == 1_700_000_000.0
    assert docs["notes.txt"].area == "process"


def test_rescan_removes_files_that_are_gone_and_is_idempotent(tmp_path: Path) -> None:
    tree(tmp_path)
    store = MemoryStore()
    scan = scanner(tmp_path, store)
    scan.scan(str(tmp_path))
    first = {d.id for d in store.iter_documents()}
    gone = tmp_path / VISIT / "raw" / "scan_0002.nxs"
    gone.unlink()
    stats = scan.scan(str(tmp_path))
    assert stats.deleted == 1
    assert {d.id for d in store.iter_documents()} == first - {document_id(str(gone))}
    again = scan.scan(str(tmp_path))
    assert (again.deleted, store.count()) == (0, 3)


def test_files_below_an_unlistable_directory_are_not_deleted(tmp_path: Path) -> None:
    tree(tmp_path)
    store = MemoryStore()
    scanner(tmp_path, store).scan(str(tmp_path))
    locked = str(tmp_path / VISIT / "raw")

    def failing_open(path: str) -> int:
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return open_dir(path)

    layout = LayoutConfig(root=str(tmp_path))
    stats = Scanner(store, layout, opener=failing_open).scan(str(tmp_path))
    assert stats.deleted == 0
    assert store.count() == 4
    assert any("Permission denied" in e for e in stats.errors)


def test_links_and_special_files_are_not_catalogued(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / VISIT / "raw" / "latest").symlink_to("scan_0000.nxs")
    os.mkfifo(tmp_path / VISIT / "raw" / "pipe")
    store = MemoryStore()
    stats = scanner(tmp_path, store).scan(str(tmp_path))
    assert stats.skipped == 2
    assert store.count() == 4


def test_undecodable_names_round_trip(tmp_path: Path) -> None:
    tree(tmp_path)
    raw_dir = os.fsencode(tmp_path / VISIT / "raw")
    name = raw_dir + b"/scan_\xff\xfe.nxs"
    with open(name, "wb") as f:
        f.write(b"data")
    store = MemoryStore()
    scanner(tmp_path, store).scan(str(tmp_path))
    result = store.search(SearchQuery(text="scan_"))
    assert os.fsencode(os.fsdecode(name)) in {os.fsencode(d.path) for d in result.items}


def test_scan_errors_are_usage_errors(tmp_path: Path) -> None:
    store = MemoryStore()
    with pytest.raises(UsageError, match="No such file"):
        scanner(tmp_path, store).scan(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="absolute"):
        scanner(tmp_path, store).scan("relative/dir")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_scan_stores_metadata_and_records_unreadable_hdf5(tmp_path: Path, kind: str) -> None:
    """Also into SQLite, where the walking children build the other files' rows: the
    HDF5 files (by suffix or signature) still go to the indexers."""
    import h5py

    from catalogd.store.sqlite import SQLiteStore
    from indexers import IndexerSettings, Registry

    tree(tmp_path)
    raw = tmp_path / VISIT / "raw"
    with h5py.File(raw / "good.h5", "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "gold foil"
    (raw / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    (raw / "noext").write_bytes((raw / "good.h5").read_bytes())
    db = tmp_path.parent / f"{tmp_path.name}-store" / "c.db"  # outside the scanned tree
    store = MemoryStore() if kind == "memory" else SQLiteStore(str(db))
    settings = IndexerSettings(isolation="inline")
    with Registry.from_entry_points(settings=settings) as registry:
        layout = LayoutConfig(root=str(tmp_path))
        stats = Scanner(store, layout, registry=registry, workers=2).scan(str(tmp_path))
    # good.h5, noext, broken.h5 and the three scan_*.nxs that only claim HDF5 by name
    assert (stats.files, stats.extracted, stats.extraction_failures) == (7, 6, 4)
    docs = {Path(d.path).name: d for d in store.iter_documents()}
    assert docs["good.h5"].kind == "nexus" and docs["good.h5"].title == "gold foil"
    assert docs["noext"].kind == "nexus"  # found by its signature, not its name
    assert docs["broken.h5"].error and docs["broken.h5"].kind != "nexus"
    assert docs["scan_0001.nxs"].error  # claims HDF5 by its suffix but is not
    assert docs["notes.txt"].kind == "other" and docs["notes.txt"].error is None
    assert store.search(SearchQuery(text="gold")).total == 2
    store.close()


def test_scan_walks_in_child_processes_beside_the_store_threads(tmp_path: Path) -> None:
    """The SQLite store's writer is a thread: the walk's children must start anyway."""
    from catalogd.store.sqlite import SQLiteStore

    root = tmp_path / "data"
    expected = set()
    for v in range(20):  # enough subtrees to hand to the children
        raw = root / f"visitor/bl{v % 3}/2017{v:04d}/2017112208/raw"
        raw.mkdir(parents=True)
        for i in range(40):
            (raw / f"f{i}.cbf").write_bytes(b"x")
            expected.add(str(raw / f"f{i}.cbf"))
    with SQLiteStore(str(tmp_path / "c.db")) as store:
        stats = Scanner(store, LayoutConfig(root=str(root)), workers=2).scan(str(root))
        assert stats.files == len(expected) and stats.errors == []
        assert {d.path for d in store.iter_documents()} == expected
        again = Scanner(store, LayoutConfig(root=str(root)), workers=2).scan(str(root))
        assert (again.unchanged, again.stored) == (len(expected), 0)


def test_a_scan_stores_exactly_the_documents_of_the_one_file_builder(tmp_path: Path) -> None:
    """What ``catalogd scan`` stores (walked in children, built per directory, written in
    batches into a real SQLite store) is, for every file, exactly the document
    :class:`catalogd.document.DocumentBuilder` makes from the file's ``lstat`` alone (the
    plain path that classifies each file on its own); and ``refresh`` writes them again
    unchanged."""
    from catalogd.document import DocumentBuilder
    from catalogd.identity import NameCache
    from catalogd.store.sqlite import SQLiteStore

    root = tmp_path / "data"
    for v in range(12):
        raw = root / f"{('visitor', 'staff', 'proprietary')[v % 3]}/bl{v % 2}/2017{v:04d}"
        raw = raw / ("2017112208", "nodate", "20171301x")[v % 3] / "raw"
        (raw / "deep" / "er").mkdir(parents=True)
        for i in range(30):
            (raw / f"f{i}.cbf").write_bytes(b"x" * i)
        (raw / "deep" / "er" / "g.txt").write_text("g", encoding="utf-8")
        (raw.parent / "stray.log").write_bytes(b"")  # an area that is not one
        (raw.parent.parent / "at-the-proposal.txt").write_bytes(b"p")
    os.chmod(root / "visitor/bl0/20170000/2017112208/raw/f3.cbf", 0o4755)
    os.chown(root / "staff/bl1/20170001/nodate/raw/f4.cbf", 65534, 65534)
    (root / "visitor" / "bl0" / "beamline-level.txt").write_bytes(b"b")
    (root / "unknown-type").mkdir()
    (root / "unknown-type" / "x.dat").write_bytes(b"u")
    (root / "top.txt").write_bytes(b"t")
    with open(os.fsencode(root / "visitor/bl0/20170000/2017112208/raw") + b"/\xff.cbf", "wb"):
        pass
    layout = LayoutConfig(root=str(root))
    clock = lambda: 1_700_000_000.5  # noqa: E731
    reference = DocumentBuilder(layout, NameCache(), clock)
    expected = {}
    for top, _, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            expected[path] = reference.build(path, os.lstat(path))
    with SQLiteStore(str(tmp_path / "c.db")) as store:
        scan = Scanner(store, layout, workers=2, batch_size=7, clock=clock)
        stats = scan.scan(str(root))
        assert stats.files == len(expected) == 12 * 33 + 4
        assert {d.path: d for d in store.iter_documents()} == expected
        scan.refresh = True
        assert scan.scan(str(root)).stored == len(expected)
        assert {d.path: d for d in store.iter_documents()} == expected
