"""Masters and their data files as one dataset, with real HDF5 files: ``catalogd scan``,
the Scanner on the SQLite and Elasticsearch stores, and the daemon.

The store contract (tests/test_store_contract.py) checks the rules on documents; these
tests check that real masters name their data files as the catalogue stores them
(whatever the names, through external links and virtual datasets, through a data root
that is a symbolic link), and that the order of indexing does not matter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
from es_node import shared_node
from nexus_shapes import write_nxmx
from test_cli import run
from test_daemon_watch import make_source, settings_for, wait_for

from catalogd.daemon import Daemon
from catalogd.document import FileDocument, document_id
from catalogd.layout import LayoutConfig
from catalogd.scan import Scanner
from catalogd.store import open_store
from catalogd.store.base import SearchQuery, Store
from catalogd.store.elasticsearch import ElasticsearchStore
from indexers import IndexerSettings, Registry

VISIT = ("visitor", "biomax", "20170251", "2017112208")


def write_data(path: Path, frames: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_group("entry").create_dataset("data", data=[[frames] * 4] * frames)


def write_master(path: Path, targets: list[str], *, virtual: bool = False) -> None:
    """A master linking to ``targets`` (file names as the link stores them: relative to
    the master's directory, or absolute)."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "insulin dataset"
        data = entry.create_group("data")
        if virtual:
            layout = h5py.VirtualLayout(shape=(len(targets), 2, 4), dtype="int64")
            for n, target in enumerate(targets):
                layout[n] = h5py.VirtualSource(target, "/entry/data", shape=(2, 4))
            data.create_virtual_dataset("frames", layout, fillvalue=0)
        else:
            for n, target in enumerate(targets):
                data[f"part_{n}"] = h5py.ExternalLink(target, "/entry/data")


@pytest.fixture(params=["sqlite", "elasticsearch"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = open_store(f"sqlite:///{tmp_path}/catalog.db")
    else:
        node = shared_node()
        opened = ElasticsearchStore.from_url(node.store_url(node.unique_prefix()))
    try:
        yield opened
    finally:
        opened.close()
        if isinstance(opened, ElasticsearchStore):
            shared_node().drop(opened.prefix)


@pytest.fixture
def registry() -> Iterator[Registry]:
    with Registry.from_entry_points(settings=IndexerSettings(isolation="inline")) as opened:
        yield opened


def scan(store: Store, registry: Registry, root: Path) -> None:
    Scanner(store, LayoutConfig(root=str(root)), registry=registry).scan(str(root))


def master_of(store: Store, path: Path | str) -> str | None:
    doc = store.get(document_id(str(path)))
    assert doc is not None, path
    value = doc.metadata.get("master")
    assert (value is not None) == (doc.metadata.get("role") == "data")
    return None if value is None else str(value)


def collapsed(store: Store) -> list[str]:
    result = store.search(SearchQuery(collapse=True, size=100))
    assert result.total == len(result.items)
    return [os.path.basename(d.path) for d in result.items]


def visit_dir(root: Path) -> Path:
    """The visit directory under ``root``, with its raw directory made."""
    visit = root.joinpath(*VISIT)
    (visit / "raw").mkdir(parents=True, exist_ok=True)
    return visit


def test_a_master_claims_its_data_files_whatever_their_names(
    store: Store, registry: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    raw, process = visit_dir(root) / "raw", visit_dir(root) / "process"
    parts = [raw / "frames_a.h5", raw / "deep" / "b.hdf", process / "c.nxs"]
    for part in parts:
        write_data(part)
    outside = tmp_path / "elsewhere" / "outside.h5"
    write_data(outside)
    master = raw / "measurement.nxs"
    write_master(
        master,
        ["frames_a.h5", "deep/./b.hdf", "../process/c.nxs", "missing.h5", str(outside)],
    )
    write_data(raw / "unrelated.h5")
    scan(store, registry, root)
    assert [master_of(store, p) for p in parts] == [str(master)] * 3
    assert master_of(store, raw / "unrelated.h5") is None
    stored = store.get(document_id(str(master)))
    assert stored is not None and stored.metadata["role"] == "master"
    assert stored.metadata["data_files"] == sorted(
        [*(str(p) for p in parts), str(raw / "missing.h5"), str(outside)]
    )
    assert stored.metadata["data_file_count"] == 4  # the missing one is not counted
    # The link out of the tree is recorded, but nothing there is catalogued.
    assert stored.metadata["links"]["missing"] == 1
    assert store.get(document_id(str(outside))) is None
    assert sorted(collapsed(store)) == ["measurement.nxs", "unrelated.h5"]
    assert store.search(SearchQuery(size=0)).total == 5


def test_a_virtual_dataset_master(store: Store, registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "data"
    raw = visit_dir(root) / "raw"
    written = write_nxmx(raw, "thaumatin", files=3, virtual=True)
    scan(store, registry, root)
    assert [master_of(store, p) for p in written["data_files"]] == [written["master"]] * 3
    assert collapsed(store) == ["thaumatin_master.h5"]


def test_data_files_indexed_before_their_master(
    store: Store, registry: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    raw = visit_dir(root) / "raw"
    parts = [raw / f"run_{n}.h5" for n in range(3)]
    for part in parts:
        write_data(part)
    scan(store, registry, root)
    assert [master_of(store, p) for p in parts] == [None] * 3
    write_master(raw / "run.nxs", [p.name for p in parts])
    scan(store, registry, root)
    assert [master_of(store, p) for p in parts] == [str(raw / "run.nxs")] * 3
    assert collapsed(store) == ["run.nxs"]


def test_re_extracting_a_data_file_keeps_its_master_and_deleting_the_master_releases_it(
    store: Store, registry: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    raw = visit_dir(root) / "raw"
    written = write_nxmx(raw, "lysozyme", files=2)
    master, parts = Path(written["master"]), [Path(p) for p in written["data_files"]]
    scan(store, registry, root)
    before = store.get(document_id(str(parts[0])))
    write_data(parts[0], frames=7)  # new content: read again, alone
    scan(store, registry, root)
    after = store.get(document_id(str(parts[0])))
    assert before is not None and after is not None and after.size != before.size
    assert master_of(store, parts[0]) == str(master)
    # The master stops linking to the second file: it is released.
    write_master(master, [parts[0].name])
    scan(store, registry, root)
    assert [master_of(store, p) for p in parts] == [str(master), None]
    master.unlink()
    scan(store, registry, root)
    assert [master_of(store, p) for p in parts] == [None, None]
    assert sorted(collapsed(store)) == [p.name for p in parts]


def test_a_data_root_below_a_symbolic_link(
    store: Store, registry: Registry, tmp_path: Path
) -> None:
    real = tmp_path / "gpfs" / "data"
    raw = visit_dir(real) / "raw"
    write_data(raw / "frames.h5")
    (tmp_path / "site").symlink_to(tmp_path / "gpfs")
    root = tmp_path / "site" / "data"  # the configured root: /site is a link to /gpfs
    # The writer named the data file by its real path; the catalogue by the link's.
    write_master(raw / "m.nxs", [str(raw / "frames.h5")])
    scan(store, registry, root)
    shown = root.joinpath(*VISIT, "raw")
    assert master_of(store, shown / "frames.h5") == str(shown / "m.nxs")
    assert collapsed(store) == ["m.nxs"]


def test_catalogd_scan_and_search(tmp_path: Path) -> None:
    root = tmp_path / "data"
    raw = visit_dir(root) / "raw"
    written = write_nxmx(raw, "insulin_1", files=3)
    write_data(raw / "other.h5")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    scanned = run("scan", str(root), "--store", url)
    assert scanned.returncode == 0, scanned.stderr
    every = [
        json.loads(line) for line in run("search", "--store", url, "--json").stdout.splitlines()
    ]
    assert len(every) == 5  # the operator's view stays per file
    masters = {d["path"]: d["metadata"].get("master") for d in every}
    assert [masters[p] for p in written["data_files"]] == [written["master"]] * 3
    searched = run("search", "--store", url, "--json", "--collapse")
    assert searched.returncode == 0, searched.stderr
    lines = [json.loads(line) for line in searched.stdout.splitlines()]
    assert [d["name"] for d in lines] == ["insulin_1_master.h5", "other.h5"]
    assert lines[0]["metadata"]["data_file_count"] == 3


def test_the_daemon_links_in_any_order(tmp_path: Path) -> None:
    root = tmp_path / "data"
    raw = visit_dir(root) / "raw"
    store = open_store(f"sqlite:///{tmp_path}/catalog.db")
    settings = settings_for(root, tmp_path / "state")
    daemon = Daemon(settings, store, source_factory=make_source("inotify"))
    daemon.start()

    def indexed(path: Path) -> FileDocument | None:
        return store.get(document_id(str(path)))

    try:
        wait_for(lambda: daemon.stats.reconciled_at_start, "the reconcile at start")
        parts = [raw / "early.h5", raw / "late.h5"]
        write_data(parts[0])  # before its master
        wait_for(lambda: indexed(parts[0]) is not None, "the first data file")
        master = raw / "scan.nxs"
        write_master(master, [p.name for p in parts])
        wait_for(lambda: indexed(master) is not None, "the master")
        write_data(parts[1])  # after it
        wait_for(lambda: indexed(parts[1]) is not None, "the second data file")
        assert [master_of(store, p) for p in parts] == [str(master)] * 2
        assert collapsed(store) == ["scan.nxs"]
        first = indexed(parts[0])
        assert first is not None
        time.sleep(0.05)
        write_data(parts[0], frames=9)  # re-extracted alone
        wait_for(lambda: (d := indexed(parts[0])) is not None and d.size != first.size, "re-read")
        assert master_of(store, parts[0]) == str(master)
        master.unlink()
        wait_for(lambda: indexed(master) is None, "the master's delete")
        assert [master_of(store, p) for p in parts] == [None, None]
        assert sorted(collapsed(store)) == ["early.h5", "late.h5"]
    finally:
        daemon.stop()
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def test_an_index_of_the_previous_mapping_takes_the_new_fields_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elasticsearch import Elasticsearch

    from catalogd.store import es_schema

    # Version 2 added the dataset fields in place; version 3 (free-text suffixes) needs a
    # reindex (tests/test_es_reindex.py), so the in-place step is tested as version 2.
    monkeypatch.setattr(es_schema, "SCHEMA_VERSION", 2)
    node = shared_node()
    prefix = node.unique_prefix()
    alias = es_schema.files_alias(prefix)
    index = es_schema.versioned(alias, 1)
    previous = dict(es_schema.FILES_MAPPING)
    previous["properties"] = {
        name: value
        for name, value in es_schema.FILES_MAPPING["properties"].items()
        if name not in es_schema.ADDED_FIELDS[2]
    }
    previous["_meta"] = {"schema_version": 1}
    with Elasticsearch(node.url) as client:
        client.indices.create(index=index, mappings=previous, aliases={alias: {}})
        try:
            with ElasticsearchStore.from_url(node.store_url(prefix)) as store:
                found = client.indices.get_mapping(index=index)[index]["mappings"]
                assert found["_meta"] == {"schema_version": es_schema.SCHEMA_VERSION}
                assert set(es_schema.ADDED_FIELDS[2]) <= set(found["properties"])
                templates = client.indices.get_index_template(name=alias)["index_templates"]
                mapping = templates[0]["index_template"]["template"]["mappings"]
                assert set(es_schema.ADDED_FIELDS[2]) <= set(mapping["properties"])
                root = tmp_path / "data"
                raw = visit_dir(root) / "raw"
                written = write_nxmx(raw, "upgraded", files=2)
                with Registry.from_entry_points(
                    settings=IndexerSettings(isolation="inline")
                ) as registry:
                    scan(store, registry, root)
                assert collapsed(store) == ["upgraded_master.h5"]
                assert master_of(store, written["data_files"][1]) == written["master"]
        finally:
            node.drop(prefix)
