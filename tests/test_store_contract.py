"""The store contract (catalogd/store/base.py), checked against every backend.

Add a backend by adding its name to STORE_KINDS and a branch to open_store_kind.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from es_node import shared_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalogd.document import (
    KIND_HDF5,
    KIND_NEXUS,
    KIND_OTHER,
    FileDocument,
    display_path,
    document_id,
)
from catalogd.errors import StoreError, UsageError
from catalogd.store import es_query
from catalogd.store import sqlite as sqlite_module
from catalogd.store.base import SORT_FIELDS, Fingerprint, SearchQuery, SearchResult, Store
from catalogd.store.elasticsearch import ElasticsearchStore
from catalogd.store.memory import MemoryStore
from catalogd.store.query import encode_cursor
from catalogd.store.sqlite import SQLiteStore
from catalogd.violations import Violation, ViolationState

STORE_KINDS = ["memory", "sqlite", "elasticsearch"]
ALL_SORTS = [*SORT_FIELDS, *(f"-{name}" for name in SORT_FIELDS)]
JSONDict = dict[str, Any]


def open_store_kind(kind: str, directory: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(str(directory / "catalog.db"))
    if kind == "elasticsearch":
        node = shared_node()  # started on first use, once per session
        return ElasticsearchStore.from_url(node.store_url(node.unique_prefix()))
    raise AssertionError(f"no such store kind {kind!r}")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_store_kind(request.param, tmp_path)
    try:
        yield opened
    finally:
        opened.close()
        if isinstance(opened, ElasticsearchStore):  # a fresh index per test, then none
            shared_node().drop(opened.prefix)


# -- building documents ---------------------------------------------------------------------
def entry(
    *, title: str | None = None, start: str | None = None, sample: str | None = None
) -> JSONDict:
    data: JSONDict = {"name": "entry", "definition": "NXmx"}
    if title is not None:
        data["title"] = title
    if start is not None:
        data["start_time"] = start
    if sample is not None:
        data["sample"] = {"name": sample}
    return data


def make_doc(
    path: str | bytes,
    *,
    groups: tuple[str, ...] | None = None,
    entries: tuple[JSONDict, ...] = (),
    kind: str = KIND_OTHER,
    size: int = 100,
    mtime: float = 1.5e9,
    indexed_at: float = 1.6e9,
    **changes: Any,
) -> FileDocument:
    """A document for ``path`` (/data/<user-type>/<beamline>/<proposal>/<visit>/<area>/...)."""
    text = os.fsdecode(path)
    parts = text.split("/")[2:] if text.startswith("/data/") else []
    layout = dict(zip(("user_type", "beamline", "proposal", "visit", "area"), parts, strict=False))
    proposal = layout.get("proposal")
    doc = FileDocument(
        id=document_id(text),
        path=text,
        name=os.path.basename(text),
        size=size,
        mtime=mtime,
        ctime=mtime,
        inode=size + 7,
        dev=2049,
        uid=1000,
        gid=2000,
        owner="biomax-service",
        group=f"{proposal}-group" if proposal else None,
        mode=0o100640,
        level="inside",
        access_groups=groups
        if groups is not None
        else ((f"{proposal}-group",) if proposal else ()),
        kind=kind,
        entries=entries,
        metadata={"hdf5": {"datasets": 3}},
        indexed_at=indexed_at,
        **layout,
    )
    return doc.with_changes(**changes) if changes else doc


def put(store: Store, docs: list[FileDocument]) -> None:
    store.put(docs)
    store.flush()


def search(store: Store, **query: Any) -> SearchResult:
    return store.search(SearchQuery(**query))


def paths(result: SearchResult) -> list[str]:
    return [doc.path for doc in result.items]


def found(store: Store, text: str, **query: Any) -> set[str]:
    return {os.path.basename(p) for p in paths(search(store, text=text, size=1000, **query))}


def all_pages(store: Store, cursor: str | None = None, **query: Any) -> list[FileDocument]:
    docs: list[FileDocument] = []
    while True:
        result = search(store, cursor=cursor, **query)
        docs.extend(result.items)
        cursor = result.next_cursor
        if cursor is None:
            return docs


BL = "/data/visitor/biomax"
P1 = f"{BL}/20170251/2017112208"
P2 = f"{BL}/20180042/2018030108"
NON_UTF8 = b"/data/visitor/biomax/20170251/2017112208/raw/caf\xe9_\xff.h5"


@pytest.fixture
def catalogue(store: Store) -> list[FileDocument]:
    docs = [
        make_doc(
            f"{P1}/raw/scan_0001.nxs",
            kind=KIND_NEXUS,
            size=300,
            mtime=1.5e9 + 3,
            entries=(
                entry(title="Lysozyme 100K", start="2017-11-22T08:00:00+01:00", sample="lysozyme"),
            ),
        ),
        make_doc(
            f"{P1}/raw/scan_0002.nxs",
            kind=KIND_NEXUS,
            size=200,
            mtime=1.5e9 + 1,
            entries=(entry(title="Thaumatin", start="2017-11-23T09:30:00+01:00"),),
        ),
        make_doc(f"{P1}/process/autoproc/xds.hkl", size=100, mtime=1.5e9 + 2),
        make_doc(
            f"{P2}/raw/Protein_A_master.h5",
            kind=KIND_HDF5,
            size=400,
            mtime=1.5e9 + 5,
            entries=(entry(title='He said "hi" * NEAR(x) OR y', start="2018-03-01T08:00:00Z"),),
        ),
        make_doc("/data/staff/nanomax/20190001/2019010108/raw/100%_done_a.txt", size=50),
        make_doc(NON_UTF8, size=10, mtime=1.5e9 + 4),
        make_doc(f"{BL}/20170251/2017112208/raw/open.txt", groups=()),
    ]
    put(store, docs)
    return docs


# -- writes ---------------------------------------------------------------------------------
def test_put_get_round_trip_keeps_every_field(store: Store, catalogue: list[FileDocument]) -> None:
    for doc in catalogue:
        assert store.get(doc.id) == doc
    assert store.count() == len(catalogue)


def test_put_is_an_idempotent_upsert(store: Store, catalogue: list[FileDocument]) -> None:
    doc = catalogue[0]
    put(store, [doc, doc])
    assert store.count() == len(catalogue)
    changed = doc.with_changes(
        size=999, entries=(entry(title="Insulin"),), access_groups=("other-group",)
    )
    put(store, [changed])
    assert store.count() == len(catalogue)
    assert store.get(doc.id) == changed
    assert found(store, "insulin") == {doc.name}
    assert doc.name not in found(store, "lysozyme")  # the old text is gone from the index
    assert store.get(doc.id, groups=frozenset({"20170251-group"})) is None
    assert store.get(doc.id, groups=frozenset({"other-group"})) == changed


def test_replacing_the_newest_document_beside_a_new_one(store: Store) -> None:
    old, new = make_doc(f"{P1}/raw/old.h5"), make_doc(f"{P1}/raw/new.h5")
    put(store, [make_doc(f"{P1}/raw/first.h5"), old])
    put(store, [old.with_changes(size=1), new])
    assert store.count() == 3
    assert store.get(old.id) == old.with_changes(size=1)
    assert store.get(new.id) == new


def test_the_last_of_several_writes_of_one_id_wins(store: Store) -> None:
    docs = [make_doc(f"{P1}/raw/a.h5", size=n) for n in range(5)]
    for doc in docs:
        store.put([doc])
    store.flush()
    assert store.get(docs[0].id) == docs[-1]


def test_delete_removes_and_ignores_unknown_ids(
    store: Store, catalogue: list[FileDocument]
) -> None:
    doc = catalogue[0]
    store.delete([doc.id, "no-such-id"])
    store.delete([])
    store.flush()
    assert store.get(doc.id) is None
    assert store.count() == len(catalogue) - 1
    assert doc.name not in found(store, "scan")
    put(store, [doc])  # and it can come back
    assert store.get(doc.id) == doc


def test_put_then_delete_then_put_keeps_their_order(store: Store) -> None:
    doc = make_doc(f"{P1}/raw/a.h5")
    store.put([doc])
    store.delete([doc.id])
    store.flush()
    assert store.get(doc.id) is None
    store.delete([doc.id])
    store.put([doc])
    store.flush()
    assert store.get(doc.id) == doc


def test_many_documents_in_many_batches(store: Store) -> None:
    docs = [make_doc(f"{P1}/raw/f{i:05d}.h5", size=i) for i in range(3000)]
    for start in range(0, len(docs), 500):
        store.put(docs[start : start + 500])
    store.flush()
    assert store.count() == 3000
    assert search(store, text="f0299", size=0).total == 10
    assert [d.path for d in store.iter_documents()] == sorted(d.path for d in docs)


# -- get and access ---------------------------------------------------------------------------
def test_get_with_groups(store: Store, catalogue: list[FileDocument]) -> None:
    doc = catalogue[0]
    assert store.get(doc.id, groups=frozenset({"20170251-group", "x"})) == doc
    assert store.get(doc.id, groups=frozenset({"20180042-group"})) is None
    assert store.get(doc.id, groups=frozenset()) is None
    assert store.get("no-such-id") is None
    unreadable = catalogue[-1]  # no access groups: only the operator's view sees it
    assert store.get(unreadable.id) == unreadable
    assert store.get(unreadable.id, groups=frozenset({"20170251-group"})) is None


def test_access_filter_never_leaks_into_items_total_or_facets(
    store: Store, catalogue: list[FileDocument]
) -> None:
    result = search(store, groups=frozenset({"20180042-group"}), size=10)
    assert paths(result) == [f"{P2}/raw/Protein_A_master.h5"]
    assert result.total == 1
    assert result.facets["proposal"] == {"20180042": 1}
    assert result.facets["kind"] == {KIND_HDF5: 1}
    assert result.facets["user_type"] == {"visitor": 1}
    nobody = search(store, groups=frozenset(), size=10)
    assert (nobody.total, nobody.items, nobody.next_cursor) == (0, [], None)
    assert all(counts == {} for counts in nobody.facets.values())
    assert search(store, text="scan", groups=frozenset({"20180042-group"})).total == 0


def test_many_groups(store: Store, catalogue: list[FileDocument]) -> None:
    groups = frozenset({f"g{i}" for i in range(3000)} | {"20180042-group"})
    assert search(store, groups=groups).total == 1


# -- filters ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("user_type", "staff", 1),
        ("user_type", "visitor", 6),
        ("beamline", "nanomax", 1),
        ("beamline", "biomax", 6),
        ("proposal", "20170251", 5),
        ("visit", "2018030108", 1),
        ("kind", KIND_NEXUS, 2),
        ("kind", KIND_OTHER, 4),
        ("beamline", "BioMAX", 0),  # filters are exact
        ("proposal", "2017025", 0),
    ],
)
def test_each_filter(
    store: Store, catalogue: list[FileDocument], name: str, value: str, expected: int
) -> None:
    result = search(store, size=100, **{name: value})
    assert result.total == expected == len(result.items)
    assert all(getattr(doc, name) == value for doc in result.items)


def test_filters_combine(store: Store, catalogue: list[FileDocument]) -> None:
    result = search(store, proposal="20170251", kind=KIND_NEXUS, text="thaum")
    assert [os.path.basename(p) for p in paths(result)] == ["scan_0002.nxs"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (P1, 5),
        (P1 + "/", 5),
        (P1 + "//", 5),
        (f"{P1}/raw", 4),
        (f"{P1}/ra", 0),  # a partial name is not a directory
        (f"{P1}/raw/scan_0001.nxs", 1),  # a file itself
        (f"{P1}/raw/scan_0001", 0),
        ("/data", 7),
        ("/", 7),
        ("", 7),
        ("/data/visitor/biomax/2017", 0),
        ("/dat", 0),
        ("data", 0),
        ("/data/visitor/biomax/20170251/2017112208/raw/caf\udce9_\udcff.h5", 1),
        ("/data/\ud800", 0),  # not a file system name at all
    ],
)
def test_path_prefix(
    store: Store, catalogue: list[FileDocument], prefix: str, expected: int
) -> None:
    assert search(store, path_prefix=prefix).total == expected
    assert len(list(store.iter_documents(path_prefix=prefix))) == expected


def test_path_prefix_is_not_a_string_prefix(store: Store) -> None:
    names = ["/data/a/x", "/data/ab/y", "/data/a", "/data/a-b/z", "/data/a.b", "/data/a/b/c"]
    put(store, [make_doc(name) for name in names])
    got = [d.path for d in store.iter_documents(path_prefix="/data/a")]
    assert got == ["/data/a", "/data/a/b/c", "/data/a/x"]
    assert {d.path for d in search(store, path_prefix="/data/a/").items} == set(got)


def test_path_prefix_below_a_name_that_is_not_utf8(store: Store) -> None:
    weird = os.fsdecode(b"/data/\xff")
    docs = [make_doc(weird + "/a"), make_doc(weird + "b/c"), make_doc("/data/\\xff/d")]
    put(store, docs)
    assert [d.path for d in search(store, path_prefix=weird).items] == [weird + "/a"]
    assert [d.path for d in search(store, path_prefix="/data/\\xff").items] == ["/data/\\xff/d"]


def test_start_range_is_inclusive_and_skips_files_without_a_start(
    store: Store, catalogue: list[FileDocument]
) -> None:
    def names(**query: Any) -> list[str]:
        return sorted(os.path.basename(p) for p in paths(search(store, **query)))

    assert names(start_from="2017-11-22T08:00:00+01:00") == [
        "Protein_A_master.h5", "scan_0001.nxs", "scan_0002.nxs",
    ]  # fmt: skip
    assert names(start_to="2017-11-22T08:00:00+01:00") == ["scan_0001.nxs"]
    assert names(start_from="2017-11-23", start_to="2018") == ["scan_0002.nxs"]
    assert names(start_from="2019") == []
    assert names(start_from="") == ["Protein_A_master.h5", "scan_0001.nxs", "scan_0002.nxs"]


def test_the_earliest_entry_start_counts(store: Store) -> None:
    doc = make_doc(
        f"{P1}/raw/two.nxs",
        entries=(entry(start="2017-11-22T10:00:00"), entry(start="2017-11-22T09:00:00")),
    )
    put(store, [doc])
    assert search(store, start_to="2017-11-22T09:30:00").total == 1


# -- free text --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("scan", {"scan_0001.nxs", "scan_0002.nxs"}),
        ("can_00", {"scan_0001.nxs", "scan_0002.nxs"}),
        ("SCAN_0001", {"scan_0001.nxs"}),
        ("Lysozyme", {"scan_0001.nxs"}),  # title and sample
        ("LYSO 100k", {"scan_0001.nxs"}),  # several terms: all must occur
        ("lyso thaum", set()),
        ("thaumatin", {"scan_0002.nxs"}),
        ("20180042", {"Protein_A_master.h5"}),  # proposal and path
        ("autoproc/xds", {"xds.hkl"}),
        ("0K", {"scan_0001.nxs"}),
        ("_a", {"Protein_A_master.h5", "100%_done_a.txt"}),
        ("%", {"100%_done_a.txt"}),  # LIKE wildcards are literal
        ("%_", {"100%_done_a.txt"}),
        ("0%", {"100%_done_a.txt"}),
        (
            "_",
            {
                "scan_0001.nxs",
                "scan_0002.nxs",
                "Protein_A_master.h5",
                "100%_done_a.txt",
                "caf\udce9_\udcff.h5",
            },
        ),  # fmt: skip
        ('"hi"', {"Protein_A_master.h5"}),
        ('"', {"Protein_A_master.h5"}),
        ('""', set()),
        ('said "hi', {"Protein_A_master.h5"}),
        ("*", {"Protein_A_master.h5"}),
        ("NEAR(", {"Protein_A_master.h5"}),
        ("near(x)", {"Protein_A_master.h5"}),
        (
            "OR",
            {
                "scan_0001.nxs",
                "scan_0002.nxs",
                "xds.hkl",
                "Protein_A_master.h5",
                "caf\udce9_\udcff.h5",
                "open.txt",
            },
        ),  # "or y", and "visitor"
        ("AND", set()),
        ("NOT", set()),
        ("lyso*", set()),
        ("^scan", set()),
        ("-", set()),
        ("title:hi", set()),
        ("(x)", {"Protein_A_master.h5"}),
        ("\\xe9_\\xff", {"caf\udce9_\udcff.h5"}),  # undecodable bytes, as displayed
        ("zzz", set()),
        ("   ", None),  # blank: no text condition
    ],
)
def test_text_search(
    store: Store, catalogue: list[FileDocument], text: str, expected: set[str] | None
) -> None:
    if expected is None:
        expected = {doc.name for doc in catalogue}
    assert found(store, text) == expected


def test_text_search_is_case_insensitive_beyond_ascii(store: Store) -> None:
    docs = [
        make_doc(f"{P1}/raw/a.h5", entries=(entry(title="Ångström Élan STRASSE ß"),)),
        make_doc(f"{P1}/raw/b.h5", entries=(entry(title="ÅNGSTRÖM é"),)),
        make_doc(f"{P1}/raw/c.h5", entries=(entry(title="İstanbul ǅ \x00nul"),)),
    ]
    put(store, docs)
    assert found(store, "ångström") == {"a.h5", "b.h5"}
    assert found(store, "É") == {"a.h5", "b.h5"}
    assert found(store, "é") == {"a.h5", "b.h5"}
    assert found(store, "ß") == {"a.h5"}
    assert found(store, "strasse") == {"a.h5"}
    assert found(store, "İstan") == {"c.h5"}
    assert found(store, "ǆ") == {"c.h5"}
    assert found(store, "\x00nu") == {"c.h5"}


def test_text_search_finds_substrings_across_punctuation_and_words(store: Store) -> None:
    title = "Lysozyme-P43212, 100K (run #7) co-crystal/ligand.soak"
    docs = [
        make_doc(f"{P1}/raw/a.h5", entries=(entry(title=title, sample="HEWL  in\tNaCl"),)),
        make_doc(f"{P1}/raw/b.h5", entries=(entry(title="lysozyme alone"),)),
    ]
    put(store, docs)
    assert found(store, "zyme-p4") == {"a.h5"}  # across punctuation, inside a word
    assert found(store, "100K (run") == {"a.h5"}  # several terms, each with punctuation
    assert found(store, "#7) co-cry") == {"a.h5"}
    assert found(store, "crystal/ligand.so") == {"a.h5"}
    assert found(store, "LYSOZYME") == {"a.h5", "b.h5"}
    assert found(store, "nacl hewl") == {"a.h5"}  # any order, other fields
    assert found(store, "in") == {"a.h5"}  # "in" and "ligand"; b has none
    assert found(store, "zymea") == set()  # a substring of the text, not across a space
    assert found(store, "alone lig") == set()  # every term must occur
    assert found(store, "raw/a.h5") == {"a.h5"}  # the path is searched as well


def test_text_search_finds_long_terms_exactly(store: Store) -> None:
    """Terms of more bytes than an index keeps per suffix (64 in Elasticsearch's
    search_suffixes), and of more than the 160 it looks up in one piece."""
    word = "".join(f"segment{i:03d}_" for i in range(30))  # one word of 360 characters
    other = word[:150] + "X" + word[151:]
    docs = [
        make_doc(f"{P1}/raw/a.h5", entries=(entry(title=f"pre {word} post"),)),
        make_doc(f"{P1}/raw/b.h5", entries=(entry(title=other),)),
        make_doc(f"{P1}/raw/c.h5", entries=(entry(title="Ünïcödé " * 5 + "Ω" * 70),)),
    ]
    put(store, docs)
    assert found(store, word[5:75]) == {"a.h5", "b.h5"}  # 70 characters, both have it
    assert found(store, word[100:200]) == {"a.h5"}  # 100 with the changed one: only a
    assert found(store, word[:200].upper()) == {"a.h5"}
    assert found(store, word) == {"a.h5"}
    assert found(store, word + "!") == set()
    assert found(store, "Ω" * 40) == {"c.h5"}  # 80 bytes of UTF-8
    assert found(store, "ω" * 70) == {"c.h5"}
    assert found(store, "ω" * 71) == set()
    assert found(store, "ünïcödé") == {"c.h5"}


def test_text_search_in_a_document_with_very_much_text(store: Store) -> None:
    """A document with more words than an index keeps suffixes for (Elasticsearch keeps
    4096 per document) is still found by every part of its text."""
    words = " ".join(f"w{i:05d}x" for i in range(3000))  # 21,000 suffixes
    docs = [
        make_doc(f"{P1}/raw/big.h5", entries=(entry(title=words),)),
        make_doc(f"{P1}/raw/small.h5", entries=(entry(title="w00001x"),)),
    ]
    put(store, docs)
    assert found(store, "02999X") == {"big.h5"}
    assert found(store, "w00001") == {"big.h5", "small.h5"}
    assert found(store, "w00001x w02000") == {"big.h5"}
    assert found(store, "x w0") == {"big.h5", "small.h5"}
    assert found(store, "w03000") == set()


def test_odd_queries_never_fail(store: Store, catalogue: list[FileDocument]) -> None:
    for text in ['"', "'", "\\", "*", "(", ")", "NEAR(a b", "a OR", "AND b", "{x}", ":",
                 "\ud800", "\udcff", "\x00", "a\x00b", "%%", "x" * 2000, '"' * 300]:  # fmt: skip
        assert search(store, text=text).total >= 0
    odd_cursor = encode_cursor("/data/\udcff", "\udcff")
    assert search(store, cursor=odd_cursor).total == len(catalogue)
    assert store.get("\udcff") is None


# -- facets -------------------------------------------------------------------------------
def test_facets_count_every_visible_match(store: Store, catalogue: list[FileDocument]) -> None:
    result = search(store, size=1, facets=("user_type", "beamline", "proposal", "visit", "kind"))
    assert result.total == 7 and len(result.items) == 1
    assert result.facets == {
        "user_type": {"staff": 1, "visitor": 6},
        "beamline": {"biomax": 6, "nanomax": 1},
        "proposal": {"20170251": 5, "20180042": 1, "20190001": 1},
        "visit": {"2017112208": 5, "2018030108": 1, "2019010108": 1},
        "kind": {KIND_HDF5: 1, KIND_NEXUS: 2, KIND_OTHER: 4},
    }
    filtered = search(store, text="scan", facets=("kind", "proposal"))
    assert filtered.facets == {"kind": {KIND_NEXUS: 2}, "proposal": {"20170251": 2}}
    assert search(store, facets=()).facets == {}


def test_facets_are_the_same_for_a_caller_with_few_groups_or_many(
    store: Store, catalogue: list[FileDocument]
) -> None:
    # Elasticsearch counts the facets of a caller with few groups from the matching
    # documents' values and those of one with many through the index's ordinals
    # (es_query.few_documents): the counts are the same.
    facets = ("user_type", "beamline", "proposal", "visit", "kind")
    groups = frozenset(group for doc in catalogue for group in doc.access_groups)
    assert 1 < len(groups) <= es_query.FEW_GROUPS
    many = groups | {f"other{n}-group" for n in range(es_query.FEW_GROUPS)}
    few = search(store, groups=groups, facets=facets)
    assert few.facets["proposal"] and few.facets == search(store, groups=many, facets=facets).facets
    one = search(store, groups=frozenset({"20170251-group"}), facets=facets)
    assert one.facets["proposal"] == {"20170251": few.facets["proposal"]["20170251"]}


def test_facets_leave_out_missing_values(store: Store) -> None:
    put(store, [make_doc("/elsewhere/x.h5"), make_doc(f"{P1}/raw/y.h5")])
    assert search(store).facets["proposal"] == {"20170251": 1}


# -- order and pages ----------------------------------------------------------------------
def _key(doc: FileDocument, field: str) -> tuple[Any, str]:
    special = {"path": display_path(doc.path), "start_time": doc.start_time or ""}
    return (special.get(field, getattr(doc, field, None)), doc.id)


@pytest.mark.parametrize("sort", ALL_SORTS)
def test_sort_orders_and_breaks_ties_by_id(
    store: Store, catalogue: list[FileDocument], sort: str
) -> None:
    extra = [make_doc(f"{P2}/raw/tie_{i}.h5", size=200, mtime=1.5e9 + 1) for i in range(4)]
    put(store, extra)
    field = sort.lstrip("-")
    expected = sorted(catalogue + extra, key=lambda d: _key(d, field), reverse=sort[0] == "-")
    assert [d.id for d in search(store, sort=sort, size=100).items] == [d.id for d in expected]


@pytest.mark.parametrize("sort", ALL_SORTS)
@pytest.mark.parametrize("size", [1, 2, 3, 50])
def test_pages_visit_every_match_once(
    store: Store, catalogue: list[FileDocument], sort: str, size: int
) -> None:
    extra = [make_doc(f"{P2}/raw/tie_{i}.h5", size=200, mtime=1.5e9 + 1) for i in range(5)]
    put(store, extra)
    whole = search(
        store, sort=sort, size=100, groups=frozenset({"20170251-group", "20180042-group"})
    )
    paged = all_pages(
        store, sort=sort, size=size, groups=frozenset({"20170251-group", "20180042-group"})
    )
    assert [d.id for d in paged] == [d.id for d in whole.items]
    assert len(paged) == whole.total == 10


def test_the_last_page_has_no_cursor(store: Store, catalogue: list[FileDocument]) -> None:
    assert search(store, size=7).next_cursor is None
    assert search(store, size=6).next_cursor is not None
    empty = search(store, size=0)
    assert (empty.total, empty.items, empty.next_cursor) == (7, [], None)


def test_a_cursor_continues_after_a_deleted_document(
    store: Store, catalogue: list[FileDocument]
) -> None:
    first = search(store, size=2)
    store.delete([first.items[-1].id])
    store.flush()
    rest = all_pages(store, size=2, cursor=first.next_cursor)
    assert [d.id for d in first.items[:1] + rest] == [d.id for d in search(store, size=100).items]


@pytest.mark.parametrize("cursor", ["garbage!", "e30", "WzFd", encode_cursor("x", "a")[:-3], "🙂"])
def test_invalid_cursor_is_a_usage_error(
    store: Store, catalogue: list[FileDocument], cursor: str
) -> None:
    with pytest.raises(UsageError):
        search(store, cursor=cursor)


def test_a_cursor_made_for_another_sort_is_a_usage_error(
    store: Store, catalogue: list[FileDocument]
) -> None:
    by_path = search(store, size=1)
    assert by_path.next_cursor is not None
    for other in ("size", "-mtime"):
        with pytest.raises(UsageError, match="another sort"):
            search(store, sort=other, cursor=by_path.next_cursor)


# -- odd names ----------------------------------------------------------------------------
def test_names_that_are_not_utf8_round_trip(store: Store, catalogue: list[FileDocument]) -> None:
    doc = next(d for d in catalogue if d.path == os.fsdecode(NON_UTF8))
    assert os.fsencode(store.get(doc.id).path) == NON_UTF8  # type: ignore[union-attr]
    assert [d.path for d in store.iter_documents(path_prefix=doc.path)] == [doc.path]
    assert doc.id in {d.id for d in search(store, text="caf", size=100).items}


def test_iter_documents_in_path_order(store: Store, catalogue: list[FileDocument]) -> None:
    listed = list(store.iter_documents())
    assert [d.id for d in listed] == [
        d.id for d in sorted(catalogue, key=lambda d: _key(d, "path"))
    ]
    assert listed == sorted(catalogue, key=lambda d: _key(d, "path"))


def test_fingerprints(store: Store, catalogue: list[FileDocument]) -> None:
    changed = catalogue[0].with_changes(inode=2**64 - 2, mtime=1.5e9 + 0.123456789)
    put(store, [changed])
    expected = sorted([changed, *catalogue[1:]], key=lambda d: _key(d, "path"))
    assert list(store.fingerprints()) == [Fingerprint.of_document(d) for d in expected]
    under = [d for d in expected if d.path.startswith(P1 + "/raw/")]
    assert list(store.fingerprints(path_prefix=f"{P1}/raw")) == [
        Fingerprint.of_document(d) for d in under
    ]


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    for kind in STORE_KINDS:
        closed = open_store_kind(kind, tmp_path / kind)
        closed.close()
        closed.close()  # idempotent
        if kind == "memory":
            continue  # the memory store has nothing to close
        with pytest.raises(StoreError):
            closed.put([make_doc("/data/x")])
        with pytest.raises(StoreError):
            closed.search(SearchQuery())


# -- violations -----------------------------------------------------------------------------
def violation(path: str, rule: str = "mode", **changes: Any) -> Violation:
    fields: dict[str, Any] = {
        "severity": "error",
        "expected": "2770",
        "actual": "2777",
        "message": f"{path}: mode 2777, expected 2770",
        "user_type": "visitor",
        "beamline": "biomax",
        "proposal": "20170251",
        "visit": "2017112208",
    }
    fields.update(changes)
    return Violation(path=path, rule=rule, **fields)


def test_violation_history(store: Store) -> None:
    v = violation(f"{P1}/raw")
    store.record_audit([v], scope=P1, seen_at=10.0)
    store.flush()
    assert store.violations() == [replace(v, first_seen=10.0, last_seen=10.0)]
    seen_again = violation(f"{P1}/raw", message="changed", severity="critical")
    store.record_audit([seen_again], scope=P1, seen_at=20.0)
    store.flush()
    (record,) = store.violations()
    assert (record.first_seen, record.last_seen, record.resolved_at) == (10.0, 20.0, None)
    assert (record.message, record.severity) == ("changed", "critical")
    store.record_audit([], scope=P1, seen_at=30.0)
    store.flush()
    assert store.violations() == []
    (resolved,) = store.violations(state=ViolationState.RESOLVED)
    assert (resolved.first_seen, resolved.last_seen, resolved.resolved_at) == (10.0, 20.0, 30.0)
    store.record_audit([v], scope=P1, seen_at=40.0)  # it re-appears: a new record
    store.flush()
    (reopened,) = store.violations()
    assert (reopened.first_seen, reopened.last_seen, reopened.resolved_at) == (40.0, 40.0, None)
    history = store.violations(state=ViolationState.ALL)
    assert [(r.first_seen, r.resolved_at) for r in history] == [(10.0, 30.0), (40.0, None)]


def test_violation_scope_recursive_or_not(store: Store) -> None:
    top, below, sibling = P1, f"{P1}/raw", P1 + "0"
    findings = [violation(top), violation(below), violation(below, rule="group"),
                violation(sibling)]  # fmt: skip
    store.record_audit(findings, scope="/data", seen_at=1.0)
    store.record_audit([], scope=P1, seen_at=2.0, recursive=False)
    store.flush()
    assert [(v.path, v.rule) for v in store.violations()] == [
        (below, "group"), (below, "mode"), (sibling, "mode"),
    ]  # fmt: skip
    store.record_audit([violation(below)], scope=P1 + "/", seen_at=3.0)
    store.flush()
    assert [(v.path, v.rule) for v in store.violations()] == [(below, "mode"), (sibling, "mode")]
    assert [v.path for v in store.violations(path_prefix=P1)] == [below]
    assert [v.path for v in store.violations(path_prefix=sibling)] == [sibling]
    assert len(store.violations(state=ViolationState.ALL, path_prefix="/data")) == 4


def test_violations_of_names_that_are_not_utf8(store: Store) -> None:
    path = os.fsdecode(NON_UTF8)
    store.record_audit([violation(path, message="caf\udce9")], scope="/data", seen_at=1.0)
    store.flush()
    (record,) = store.violations(path_prefix=os.path.dirname(path))
    assert (record.path, record.message) == (path, "caf\udce9")
    store.record_audit([], scope=path, seen_at=2.0, recursive=False)
    store.flush()
    assert store.violations() == []


# -- the backends agree on random catalogues and queries ----------------------------------
NAME_CHARS = 'aAbB_-.0%"*é É'
TEXT_CHARS = 'abAB _-0"*()éÉßİ'
segments = st.text(NAME_CHARS, min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))


@st.composite
def random_docs(draw: st.DrawFn) -> list[FileDocument]:
    docs = {}
    for _ in range(draw(st.integers(1, 25))):
        parts = [
            "data",
            draw(st.sampled_from(["visitor", "staff"])),
            draw(st.sampled_from(["biomax", "bio"])),
            draw(st.sampled_from(["p1", "p10", "p2"])),
            "v1",
            draw(st.sampled_from(["raw", "process"])),
        ]
        parts += draw(st.lists(segments, min_size=1, max_size=2))
        raw = ("/" + "/".join(parts)).encode()
        if draw(st.booleans()):
            raw += draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9x"]))
        entries = tuple(
            entry(title=draw(st.text(TEXT_CHARS, max_size=8)),
                  start=draw(st.sampled_from([None, "", "2017", "2017-11-22T08", "2018"])))
            for _ in range(draw(st.integers(0, 2)))
        )  # fmt: skip
        doc = make_doc(
            raw,
            groups=tuple(draw(st.lists(st.sampled_from(["g1", "g2", "g3"]), max_size=2))),
            entries=entries,
            kind=draw(st.sampled_from([KIND_NEXUS, KIND_HDF5, KIND_OTHER])),
            size=draw(st.integers(0, 3)),
            mtime=draw(st.sampled_from([1.5, 2.25, 1e9])),
            indexed_at=draw(st.sampled_from([1.0, 2.0])),
            visit_date=draw(st.sampled_from([None, "2017-11-22", "2019-01-01"])),
        )
        docs[doc.id] = doc
    # Some become masters naming others (and paths no document has).
    every = [doc.path for doc in docs.values()]
    for doc_id in draw(st.lists(st.sampled_from(sorted(docs)), max_size=3, unique=True)):
        named = draw(st.lists(st.sampled_from([*every, "/data/none.h5"]), max_size=4))
        metadata = {"role": "master", "data_files": named, "data_file_count": len(named)}
        docs[doc_id] = docs[doc_id].with_changes(metadata=metadata)
    return list(docs.values())


@st.composite
def random_queries(draw: st.DrawFn, docs: list[FileDocument]) -> SearchQuery:
    some_doc = draw(st.sampled_from(docs))
    text = None
    if draw(st.booleans()):
        haystack = some_doc.search_text()
        terms = []
        for _ in range(draw(st.integers(1, 3))):
            start = draw(st.integers(0, len(haystack)))
            terms.append(haystack[start : start + draw(st.integers(1, 6))])
        terms.append(draw(st.text(TEXT_CHARS, max_size=3)))
        text = " ".join(terms)
    prefix = None
    if draw(st.booleans()):
        cut = draw(st.integers(1, len(some_doc.path)))
        prefix = some_doc.path[:cut] + draw(st.sampled_from(["", "/"]))
    return SearchQuery(
        text=text,
        user_type=draw(st.sampled_from([None, "visitor", "staff"])),
        beamline=draw(st.sampled_from([None, "biomax", "bio"])),
        proposal=draw(st.sampled_from([None, "p1", "p2"])),
        kind=draw(st.sampled_from([None, KIND_NEXUS, KIND_OTHER])),
        path_prefix=prefix,
        start_from=draw(st.sampled_from([None, "", "2017-11", "2018"])),
        start_to=draw(st.sampled_from([None, "2017-11-22T08", "2018"])),
        groups=draw(
            st.sampled_from([None, frozenset(), frozenset({"g1"}), frozenset({"g2", "g3"})])
        ),  # fmt: skip
        sort=draw(st.sampled_from(ALL_SORTS)),
        size=draw(st.integers(1, 4)),
        facets=("user_type", "beamline", "proposal", "visit", "kind"),
        collapse=draw(st.booleans()),
        public_before=draw(st.sampled_from([None, "2018-01-01", "2019-01-01", "2020-01-01"])),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sqlite_agrees_with_memory(data: st.DataObject) -> None:
    docs = data.draw(random_docs())
    queries = [data.draw(random_queries(docs)) for _ in range(15)]
    # both ways of filtering by access (see catalogd.store.sqlite_query.access_clause)
    access_set_max = data.draw(st.sampled_from([0, sqlite_module.ACCESS_SET_MAX_ROWS]))
    memory = MemoryStore()
    with (
        tempfile.TemporaryDirectory() as directory,
        SQLiteStore(f"{directory}/c.db") as sqlite,
        _setting(sqlite_module, "ACCESS_SET_MAX_ROWS", access_set_max),
    ):
        put(memory, docs)
        put(sqlite, docs)
        assert list(sqlite.iter_documents()) == list(memory.iter_documents())
        for query in queries:
            cursor = None
            while True:
                page = SearchQuery(**{**_query_fields(query), "cursor": cursor})
                expected, got = memory.search(page), sqlite.search(page)
                assert got == expected, page
                cursor = expected.next_cursor
                if cursor is None:
                    break


@contextmanager
def _setting(module: Any, name: str, value: object) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _query_fields(query: SearchQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in query.__dataclass_fields__}


# -- datasets: masters and their data files ---------------------------------------------------
RAW1 = f"{P1}/raw"
DAY1 = "2017-11-22"


def master_doc(path: str, named: list[str], **changes: Any) -> FileDocument:
    """A master file's document as the HDF5 indexer gives it."""
    metadata = {"role": "master", "data_files": named, "data_file_count": len(named)}
    return make_doc(path, kind=KIND_HDF5, **{"metadata": metadata, "visit_date": DAY1, **changes})


def data_doc(path: str, **changes: Any) -> FileDocument:
    return make_doc(path, kind=KIND_HDF5, **{"visit_date": DAY1, **changes})


def dataset() -> tuple[FileDocument, list[FileDocument], FileDocument]:
    """A master, the three files it names (one not named like a detector file), and a
    plain file beside them."""
    parts = [data_doc(f"{RAW1}/m_data_00000{i}.h5") for i in (1, 2)]
    parts.append(data_doc(f"{RAW1}/lysozyme_frames.h5"))
    master = master_doc(
        f"{RAW1}/m_master.h5", [d.path for d in parts] + ["/elsewhere/outside_the_root.h5"]
    )
    return master, parts, data_doc(f"{RAW1}/plain.h5")


def master_path(store: Store, doc: FileDocument) -> str | None:
    stored = store.get(doc.id)
    assert stored is not None
    if stored.metadata.get("role") == "data":
        assert isinstance(stored.metadata["master"], str)
        return str(stored.metadata["master"])
    assert "master" not in stored.metadata
    return None


@pytest.mark.parametrize("order", ["master first", "data first", "one batch"])
def test_a_master_claims_the_files_it_names_in_any_order(store: Store, order: str) -> None:
    master, parts, plain = dataset()
    if order == "master first":
        put(store, [master])
        put(store, [*parts, plain])
    elif order == "data first":
        put(store, [*parts, plain])
        put(store, [master])
    else:
        put(store, [parts[0], master, *parts[1:], plain])
    assert [master_path(store, d) for d in parts] == [master.path] * 3
    assert master_path(store, plain) is None
    assert store.get(master.id) == master
    assert store.count() == 5
    every = search(store, size=10)
    assert every.total == 5  # the operator's view is per file
    part = store.get(parts[2].id)
    assert part is not None and part in every.items
    assert part == parts[2].with_changes(
        metadata={**parts[2].metadata, "role": "data", "master": master.path}
    )


def test_collapse_leaves_out_the_parts_from_items_total_and_facets(store: Store) -> None:
    master, parts, plain = dataset()
    put(store, [master, *parts, plain])
    result = search(store, collapse=True, size=10, facets=("proposal", "kind"))
    assert paths(result) == [master.path, plain.path]
    assert result.total == 2
    assert result.facets == {"proposal": {"20170251": 2}, "kind": {KIND_HDF5: 2}}
    shown = result.items[0]
    assert shown.metadata["data_file_count"] == 3 + 1
    assert len(shown.metadata["data_files"]) == 4
    group = frozenset({"20170251-group"})
    assert search(store, collapse=True, groups=group).total == 2
    assert search(store, collapse=True, text="lysozyme").total == 0  # a part: left out
    assert search(store, text="lysozyme").total == 1
    pages = all_pages(store, collapse=True, size=1, sort="-path")
    assert [d.path for d in pages] == [plain.path, master.path]


def test_a_part_keeps_its_master_when_written_again_alone(store: Store) -> None:
    master, parts, _ = dataset()
    put(store, [master, *parts])
    again = parts[0].with_changes(size=5, metadata={"structure": {"datasets": 1}})
    put(store, [again])
    assert master_path(store, again) == master.path
    assert search(store, collapse=True).total == 1


def test_deleting_the_master_releases_its_parts(store: Store) -> None:
    master, parts, plain = dataset()
    put(store, [master, *parts, plain])
    store.delete([master.id])
    store.flush()
    assert [master_path(store, d) for d in parts] == [None] * 3
    assert store.get(parts[0].id) == parts[0]
    assert search(store, collapse=True).total == 4
    put(store, [master])  # and it can come back
    assert [master_path(store, d) for d in parts] == [master.path] * 3


def test_a_master_that_stops_naming_a_file_releases_it(store: Store) -> None:
    master, parts, _ = dataset()
    put(store, [master, *parts])
    fewer = master_doc(master.path, [parts[0].path])
    put(store, [fewer])
    assert [master_path(store, d) for d in parts] == [master.path, None, None]
    assert paths(search(store, collapse=True)) == sorted(
        [master.path, *(d.path for d in parts[1:])]
    )
    no_longer = make_doc(master.path, kind=KIND_HDF5, visit_date=DAY1)  # no links at all now
    put(store, [no_longer])
    assert [master_path(store, d) for d in parts] == [None] * 3
    assert search(store, collapse=True).total == 4


def test_the_first_of_two_masters_by_path_wins(store: Store) -> None:
    master, parts, _ = dataset()
    second = master_doc(f"{RAW1}/a_master.h5", [parts[0].path])
    put(store, [master, *parts])
    put(store, [second])
    assert master_path(store, parts[0]) == second.path
    assert master_path(store, parts[1]) == master.path
    store.delete([second.id])
    store.flush()
    assert master_path(store, parts[0]) == master.path


def test_a_master_claims_only_files_with_its_access_and_visit_date(store: Store) -> None:
    other_proposal = data_doc(f"{P2}/raw/d.h5")
    other_day = data_doc(f"{RAW1}/other_day.h5", visit_date="2017-11-23")
    other_master = master_doc(f"{RAW1}/inner_master.h5", [f"{RAW1}/x.h5"])
    master = master_doc(
        f"{RAW1}/m_master.h5", [other_proposal.path, other_day.path, other_master.path]
    )
    put(store, [master, other_proposal, other_day, other_master])
    assert [master_path(store, d) for d in (other_proposal, other_day, other_master)] == [None] * 3
    assert search(store, collapse=True).total == 4


def test_what_an_extraction_said_about_a_master_is_not_taken_on_trust(store: Store) -> None:
    claimed = {"role": "data", "master": f"{RAW1}/not_stored_master.h5"}
    orphan = data_doc(f"{RAW1}/x_data_000001.h5", metadata=claimed)
    put(store, [orphan])
    assert master_path(store, orphan) is None
    assert paths(search(store, collapse=True)) == [orphan.path]


# -- embargo ----------------------------------------------------------------------------------
def embargo_catalogue(store: Store) -> dict[str, FileDocument]:
    docs = {
        "old": make_doc(f"{P1}/raw/old.h5", visit_date="2017-11-22"),
        "day": make_doc(f"{P1}/raw/day.h5", visit_date="2019-01-01"),
        "new": make_doc(f"{P2}/raw/new.h5", visit_date="2021-05-05"),
        "undated": make_doc(f"{P1}/raw/undated.h5"),
        "old2": make_doc(f"{P2}/raw/old2.h5", visit_date="2018-03-01"),
    }
    put(store, list(docs.values()))
    return docs


def test_embargo_makes_old_visits_public(store: Store) -> None:
    docs = embargo_catalogue(store)
    stranger = frozenset({"someone-else"})
    result = search(store, groups=stranger, public_before="2019-01-01", size=10)
    assert sorted(paths(result)) == sorted([docs["old"].path, docs["old2"].path])
    assert result.total == 2
    assert result.facets["proposal"] == {"20170251": 1, "20180042": 1}
    pages = all_pages(store, groups=stranger, public_before="2019-01-01", size=1)
    assert sorted(d.path for d in pages) == sorted(paths(result))
    assert search(store, groups=stranger).total == 0  # no embargo: nothing
    assert search(store, groups=frozenset(), public_before="2019-01-01").total == 2
    # what the groups see anyway stays visible; undated documents only through the groups
    own = search(store, groups=frozenset({"20180042-group"}), public_before="2019-01-01")
    assert sorted(paths(own)) == sorted([docs["old"].path, docs["old2"].path, docs["new"].path])
    later = search(store, groups=stranger, public_before="2100-01-01", size=10)
    assert docs["undated"].path not in paths(later)
    assert later.total == 4
    assert search(store, public_before="2000-01-01").total == 5  # the operator's view


def test_embargo_on_get(store: Store) -> None:
    docs = embargo_catalogue(store)
    stranger = frozenset({"someone-else"})
    assert store.get(docs["old"].id, groups=stranger) is None
    assert store.get(docs["old"].id, groups=stranger, public_before="2019-01-01") == docs["old"]
    assert store.get(docs["day"].id, groups=stranger, public_before="2019-01-01") is None
    assert store.get(docs["day"].id, groups=stranger, public_before="2019-01-02") == docs["day"]
    assert store.get(docs["undated"].id, groups=stranger, public_before="2100-01-01") is None
    assert store.get(docs["new"].id, public_before="2000-01-01") == docs["new"]


def test_embargo_and_collapse_together(store: Store) -> None:
    master, parts, plain = dataset()
    put(store, [master, *parts, plain])
    stranger = frozenset({"someone-else"})
    result = search(store, groups=stranger, public_before="2018-01-01", collapse=True)
    assert paths(result) == [master.path, plain.path]
    assert search(store, groups=stranger, public_before=DAY1, collapse=True).total == 0


@pytest.mark.parametrize("value", ["yesterday", "2019-13-01", "2019-01-01T00:00:00", ""])
def test_an_embargo_date_must_be_an_iso_date(value: str) -> None:
    with pytest.raises(ValueError, match="ISO date"):
        SearchQuery(public_before=value)


def test_an_embargo_date_is_normalised() -> None:
    assert SearchQuery(public_before="20190101").public_before == "2019-01-01"


def contract_tests(suffix: str) -> dict[str, Any]:
    """This suite's tests of a ``store``, renamed ``<name>_<suffix>``, with the
    ``catalogue`` fixture: a module that defines its own ``store`` fixture adds them to
    its globals to run the whole contract on another store (a cluster, another version)."""
    tests: dict[str, Any] = {
        f"{name}_{suffix}": test
        for name, test in list(globals().items())
        if name.startswith("test_") and "store" in inspect.signature(test).parameters
    }
    return {"catalogue": catalogue, **tests}
