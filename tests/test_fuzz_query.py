"""Fuzzing the query side (catalogd/store/query.py and the stores' free text).

- :func:`decode_cursor` takes whatever a client sends as ``cursor``: any text, base64 of
  any bytes or of any JSON. It returns a position or raises UsageError (a 400 for the
  API), never anything else.
- Free text with arbitrary Unicode (every code point, case pairs that change length,
  combining marks, NULs) finds the same documents in the SQLite store as in the memory
  store, which is the reference (catalogd/store/query.py ``matches``).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import Recorder, count_example

from catalogd.document import KIND_NEXUS, FileDocument, document_id
from catalogd.errors import UsageError
from catalogd.store.base import SORT_FIELDS, SearchQuery
from catalogd.store.memory import MemoryStore
from catalogd.store.query import decode_cursor
from catalogd.store.sqlite import SQLiteStore

SHARED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


cursors = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(b64),
    json_values.map(lambda v: b64(json.dumps(v).encode())),
    st.tuples(json_values, json_values).map(lambda v: b64(json.dumps(list(v)).encode())),
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode("ascii")),
)
sorts = st.sampled_from([None, *SORT_FIELDS, *(f"-{name}" for name in SORT_FIELDS)])


@settings(max_examples=500, suppress_health_check=SHARED)
@given(cursor=cursors, sort=sorts)
def test_decode_cursor_raises_nothing_but_usage_error(
    cursor: str, sort: str | None, reliability: Recorder
) -> None:
    count_example(reliability, "cursor decoder (decode_cursor)", "any text, base64, JSON")
    try:
        value, doc_id = decode_cursor(cursor, sort)
    except UsageError as exc:
        assert exc.message.startswith("invalid cursor")
        return
    assert isinstance(doc_id, str)
    assert isinstance(value, str | int | float) and not isinstance(value, bool)


#: Text a title or a query term is made of: every code point, and the troublesome ones
#: often (case pairs of different lengths, dotted/dotless i, combining marks, NUL).
SPECIAL = "İıiIßẞﬁΣσςǅǄ\u0307\u0301e\u00e9\x00%_*\"'()-:^ \t"
unicode_text = st.one_of(
    st.text(max_size=10),
    st.text(st.sampled_from(SPECIAL + "abcAB"), max_size=8),
)


def doc(index: int, title: str, sample: str, name: str) -> FileDocument:
    path = f"/data/visitor/id11/p1/20240101/raw/{index}-{name}"
    raw = os.fsencode(path)  # every name a file can have (no NUL, no slash)
    return FileDocument(
        id=document_id(path),
        path=path,
        name=os.path.basename(path),
        size=index,
        mtime=1.5e9,
        ctime=1.5e9,
        inode=index + 7,
        dev=1,
        uid=0,
        gid=0,
        owner=None,
        group=None,
        mode=0o100640,
        level="inside",
        user_type="visitor",
        beamline="id11",
        proposal="p1",
        visit="20240101",
        area="raw",
        inner_path=os.fsdecode(raw).split("/20240101/", 1)[1],
        access_groups=("p1-group",),
        kind=KIND_NEXUS,
        entries=({"name": "entry", "title": title, "sample": {"name": sample}},),
        indexed_at=1.6e9,
    )


@st.composite
def catalogues(draw: st.DrawFn) -> tuple[list[FileDocument], list[str]]:
    names = st.text(
        st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]), min_size=1, max_size=8
    )
    docs = [
        doc(i, draw(unicode_text), draw(unicode_text), draw(names))
        for i in range(draw(st.integers(1, 8)))
    ]
    queries = []
    for _ in range(draw(st.integers(1, 6))):
        some = draw(st.sampled_from(docs)).search_text()
        start = draw(st.integers(0, len(some)))
        piece = some[start : start + draw(st.integers(1, 5))]
        changes: list[Callable[[str], str]] = [
            str,
            str.upper,
            str.lower,
            str.swapcase,
            str.casefold,
        ]
        change = draw(st.sampled_from(changes))
        queries.append(draw(st.sampled_from([change(piece), draw(unicode_text)])))
    return docs, queries


@settings(max_examples=40, deadline=None, suppress_health_check=SHARED)
@given(catalogue=catalogues())
def test_free_text_with_any_unicode_agrees_between_memory_and_sqlite(
    catalogue: tuple[list[FileDocument], list[str]], reliability: Recorder
) -> None:
    docs, queries = catalogue
    count_example(reliability, "free-text search, SQLite against memory", "Unicode catalogues")
    memory = MemoryStore()
    memory.put(docs)
    with tempfile.TemporaryDirectory() as directory, SQLiteStore(f"{directory}/c.db") as sqlite:
        sqlite.put(docs)
        sqlite.flush()
        for text in queries:
            for groups in (None, frozenset({"p1-group"}), frozenset({"other"})):
                query = SearchQuery(text=text, groups=groups, size=100)
                expected, got = memory.search(query), sqlite.search(query)
                assert _ids(got) == _ids(expected), (text, groups)
                assert got.total == expected.total and got.facets == expected.facets


def _ids(result: Any) -> list[str]:
    return [d.id for d in result.items]
