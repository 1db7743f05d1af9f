"""What is particular to the SQLite store: schema, migrations, errors, threads, durability.

Its behaviour as a store is checked by tests/test_store_contract.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import NON_UTF8, P1, entry, make_doc

from catalogd.document import FileDocument
from catalogd.errors import StoreError, StoreUnavailable
from catalogd.store import open_store, sqlite_schema
from catalogd.store import sqlite as sqlite_store
from catalogd.store.base import SearchQuery
from catalogd.store.sqlite import SQLiteStore
from catalogd.store.sqlite_schema import (
    ERROR_MAP,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    doc_row,
    migrate,
    translate_error,
)
from catalogd.store.sqlite_writer import write_docs


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "catalog.db")


@pytest.fixture
def store(db: str) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db)
    try:
        yield opened
    finally:
        opened.close()


def raw(db: str) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def user_version(db: str) -> int:
    conn = raw(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


# -- opening ---------------------------------------------------------------------------------
def test_opens_in_wal_mode_and_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "catalog.db"
    with SQLiteStore(str(path)) as store:
        assert store.url == f"sqlite://{path}"
        store.flush()  # the writer is idle now, so its connection can be asked
        writer = store._writer.conn
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert user_version(str(path)) == SCHEMA_VERSION


def test_open_store_url(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/x/catalog.db")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == f"{tmp_path}/x/catalog.db"
    finally:
        store.close()


def test_a_path_with_uri_characters(tmp_path: Path) -> None:
    path = tmp_path / "a?b#c%20d&mode=rw" / "catalog.db"  # readers open it by URI
    with SQLiteStore(str(path)) as store:
        store.put([make_doc(f"{P1}/raw/a.h5")])
        store.flush()
        assert store.count() == 1
    assert path.exists()


def test_a_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "catalog.db"
    with pytest.raises(StoreUnavailable, match=str(path)):
        SQLiteStore(str(path))


def test_a_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=str(tmp_path)):
        SQLiteStore(str(tmp_path))


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StoreUnavailable, match=str(path)):
        SQLiteStore(str(path))


# -- schema and migrations -----------------------------------------------------------------
def test_an_old_database_is_migrated(db: str) -> None:
    doc = make_doc(f"{P1}/raw/old.h5")
    conn = raw(db)
    try:
        assert migrate(conn, db, MIGRATIONS[:1]) == 1  # as version 1 left it
        conn.execute("BEGIN")
        write_docs(conn, [doc_row(doc)])
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert user_version(db) == 1
    with SQLiteStore(db) as store:
        assert user_version(db) == SCHEMA_VERSION == 3
        assert store.get(doc.id) == doc
        assert store.search(SearchQuery(text="old.h5")).total == 1
        assert store.violations() == []  # version 2's table is there
        # version 3's: masters name their data files, and the old document is one
        master = make_doc(f"{P1}/raw/m.h5", metadata={"role": "master", "data_files": [doc.path]})
        store.put([master])
        store.flush()
        part = store.get(doc.id)
        assert part is not None and part.metadata["master"] == master.path
        assert store.search(SearchQuery(collapse=True)).total == 1


def test_a_new_step_is_applied_once(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = make_doc(f"{P1}/raw/kept.h5")
    with SQLiteStore(db) as store:
        store.put([doc])
    step = Migration("a note per document", ("ALTER TABLE docs ADD COLUMN note TEXT",))
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", (*MIGRATIONS, step))
    for _ in range(2):  # the second open must not apply it again (ALTER would fail)
        with SQLiteStore(db) as store:
            assert store.get(doc.id) == doc
        assert user_version(db) == SCHEMA_VERSION + 1
    conn = raw(db)
    try:
        assert "note" in [row[1] for row in conn.execute("PRAGMA table_info(docs)")]
    finally:
        conn.close()


def test_a_failed_step_changes_nothing(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    SQLiteStore(db).close()
    step = Migration("broken", ("CREATE TABLE extra (x)", "THIS IS NOT SQL"))
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", (*MIGRATIONS, step))
    with pytest.raises(StoreError, match="syntax error"):
        SQLiteStore(db)
    assert user_version(db) == SCHEMA_VERSION
    conn = raw(db)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
    finally:
        conn.close()
    assert "extra" not in tables


def test_a_newer_database_is_refused(db: str) -> None:
    SQLiteStore(db).close()
    conn = raw(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this catalogd knows"):
        SQLiteStore(db)


def test_paths_are_stored_as_their_exact_bytes(store: SQLiteStore, db: str) -> None:
    store.put([make_doc(NON_UTF8)])
    store.flush()
    conn = raw(db)
    try:
        assert conn.execute("SELECT path FROM docs").fetchall() == [(NON_UTF8,)]
    finally:
        conn.close()


def test_unsigned_64_bit_numbers_round_trip(store: SQLiteStore) -> None:
    doc = make_doc(f"{P1}/raw/a.h5").with_changes(inode=2**64 - 1, dev=2**63)
    store.put([doc])
    store.flush()
    assert store.get(doc.id) == doc


# -- errors ----------------------------------------------------------------------------------
def _subclasses(cls: type[Exception]) -> set[type[Exception]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


def test_every_sqlite3_exception_is_mapped() -> None:
    classes = _subclasses(sqlite3.Error) | {sqlite3.Warning}
    assert len(classes) >= 9
    for cls in classes:
        assert cls in ERROR_MAP, f"sqlite3.{cls.__name__} has no StoreError to become"
        error = translate_error(cls("it broke"), "/var/lib/catalogd/catalog.db")
        assert isinstance(error, ERROR_MAP[cls])
        assert "/var/lib/catalogd/catalog.db" in str(error) and "it broke" in str(error)
    assert isinstance(translate_error(sqlite3.OperationalError("locked"), "x"), StoreUnavailable)


def test_no_sqlite3_exception_escapes(store: SQLiteStore, db: str) -> None:
    store.put([make_doc(f"{P1}/raw/a.h5")])
    store.flush()
    conn = raw(db)
    conn.execute("DROP TABLE doc_groups")
    conn.close()
    with pytest.raises(StoreError, match="no such table"):
        store.search(SearchQuery(groups=frozenset({"x"})))
    with pytest.raises(StoreError, match="no such table"):
        store.put([make_doc(f"{P1}/raw/b.h5")])
        store.flush()


def test_user_text_is_never_sql(store: SQLiteStore) -> None:
    store.put([make_doc(f"{P1}/raw/a.h5")])
    store.flush()
    for text in ["'; DROP TABLE docs; --", '") OR 1=1 --', "x' OR '1'='1"]:
        query = SearchQuery(text=text, proposal=text, path_prefix=text, groups=frozenset({text}))
        assert store.search(query).total == 0
    assert store.count() == 1


@pytest.mark.parametrize("access_set_max", [0, 1, 10_000])
def test_both_ways_of_filtering_by_access_agree(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, access_set_max: int
) -> None:
    monkeypatch.setattr(sqlite_store, "ACCESS_SET_MAX_ROWS", access_set_max)
    store.put([make_doc(f"/data/v/b/p{i % 3}/v/raw/f{i}.h5") for i in range(12)])
    store.flush()
    cases = [({"p0-group"}, 4, 0), ({"p1-group"}, 4, 2), ({"p1-group", "p2-group"}, 8, 3),
             (set(), 0, 0)]  # fmt: skip
    for groups, visible, named in cases:  # "raw/f1": f1 (p1), f10 (p1), f11 (p2)
        result = store.search(SearchQuery(groups=frozenset(groups), text="raw/f1", size=100))
        assert result.total == len(result.items) == named
        assert store.search(SearchQuery(groups=frozenset(groups))).total == visible


def test_a_failed_write_is_raised_by_flush_and_loses_only_itself(
    store: SQLiteStore, db: str
) -> None:
    conn = raw(db)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON docs WHEN NEW.path_text LIKE '%boom%' "
        "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
    )
    conn.close()
    good = [make_doc(f"{P1}/raw/good{i}.h5") for i in range(2)]
    store.put([good[0]])
    store.put([make_doc(f"{P1}/raw/boom.h5")])
    store.put([good[1]])
    with pytest.raises(StoreError, match="boom refused"):
        store.flush()
    assert [store.get(doc.id) for doc in good] == good
    assert store.count() == 2
    store.flush()  # reported once


def test_a_document_that_cannot_be_stored_is_refused_at_once(store: SQLiteStore) -> None:
    doc = make_doc(f"{P1}/raw/a.h5").with_changes(metadata={"bad": {1, 2}})
    with pytest.raises(StoreError, match="a.h5"):
        store.put([doc])


# -- threads and connections ----------------------------------------------------------------
def test_reads_do_not_wait_for_a_writer(store: SQLiteStore, db: str) -> None:
    doc = make_doc(f"{P1}/raw/a.h5")
    store.put([doc])
    store.flush()
    other = raw(db)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    other.execute("DELETE FROM docs")
    try:
        assert store.get(doc.id) == doc
        assert store.search(SearchQuery()).total == 1
        assert store.count() == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put([make_doc(f"{P1}/raw/b.h5")])
    store.flush()
    assert store.count() == 2


def test_concurrent_readers_while_writing(store: SQLiteStore) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                result = store.search(SearchQuery(text="scan", size=5))
                assert result.total >= 0
                list(store.iter_documents(path_prefix=P1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for batch in range(20):
            store.put([make_doc(f"{P1}/raw/scan_{batch}_{i}.h5") for i in range(50)])
        store.flush()
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert errors == []
    assert store.count() == 1000
    assert len(store._readers) <= 4


def test_connections_of_ended_threads_are_closed(store: SQLiteStore) -> None:
    for _ in range(5):
        thread = threading.Thread(target=store.count)
        thread.start()
        thread.join()
    store.count()
    assert len(store._readers) <= 2


def test_close_stops_the_writer_and_closes_every_connection(db: str) -> None:
    store = SQLiteStore(db)
    store.put([make_doc(f"{P1}/raw/a.h5")])
    store.count()
    thread = threading.Thread(target=store.count)
    thread.start()
    thread.join()
    store.close()
    store.close()
    assert not store._writer.is_alive()
    assert store._readers == []
    with pytest.raises(StoreError, match="closed"):
        store.count()
    with SQLiteStore(db) as again:
        assert again.count() == 1  # close flushed


def test_iter_documents_reads_in_chunks(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "ITER_CHUNK", 3)
    docs = [make_doc(f"{P1}/raw/f{i:02d}.h5") for i in range(10)]
    store.put(docs)
    store.flush()
    seen = []
    for doc in store.iter_documents(path_prefix=P1):
        seen.append(doc.path)
        assert store.search(SearchQuery(size=1)).total == 10  # other reads in between
    assert seen == [doc.path for doc in docs]


def test_queued_writes_survive_an_exit_without_close(db: str) -> None:
    program = (
        "import sys\n"
        "from catalogd.store.sqlite import SQLiteStore\n"
        "from test_store_contract import make_doc\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "for batch in range(20):\n"
        "    store.put([make_doc(f'/data/v/b/p/v/raw/{batch}_{i}.h5') for i in range(500)])\n"
    )
    assert _run_program(program, db) == 0
    with SQLiteStore(db) as store:
        assert store.count() == 10_000


def _run_program(program: str, db: str) -> int:
    """Run ``program`` on ``db`` in a Python of its own (these tests on its path)."""
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": here}
    return subprocess.run([sys.executable, "-c", program, db], timeout=120, env=env).returncode


# -- the first load into an empty catalogue ---------------------------------------------------
def _load_docs() -> list[FileDocument]:
    docs = [
        make_doc(f"{P1}/raw/scan_{i:04d}.nxs", entries=(entry(title=f"Lysozyme {i}K"),))
        for i in range(300)
    ]
    docs.append(make_doc(NON_UTF8))
    return docs


def _schema(db: str) -> list[tuple[str, str, str | None]]:
    conn = raw(db)
    try:
        found = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        return [tuple(row) for row in found.fetchall()]
    finally:
        conn.close()


def _fts(db: str) -> list[tuple[int, str]]:
    conn = raw(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT rowid, text FROM docs_fts ORDER BY rowid")]
    finally:
        conn.close()


def test_a_bulk_load_ends_with_the_catalogue_and_schema_of_plain_writes(tmp_path: Path) -> None:
    plain_db, bulk_db = str(tmp_path / "plain.db"), str(tmp_path / "bulk.db")
    docs = _load_docs()
    with SQLiteStore(plain_db) as plain:
        plain.put(docs[:150])
        plain.put(docs[150:])
        plain.delete([docs[7].id])
        plain.put([docs[3].with_changes(entries=(entry(title="Thaumatin"),))])
        plain.flush()
    with SQLiteStore(bulk_db) as bulk:
        with bulk.bulk_load():
            bulk.put(docs[:150])
            bulk.put(docs[150:])
            bulk.delete([docs[7].id])
            bulk.put([docs[3].with_changes(entries=(entry(title="Thaumatin"),))])
            bulk.flush()
            # During the load: the documents are there, but not yet found by free text.
            assert bulk.count() == len(docs) - 1
            assert bulk.search(SearchQuery(proposal="20170251", size=0)).total == len(docs) - 1
            assert bulk.search(SearchQuery(text="lysozyme", size=0)).total == 0
            assert "docs_path_text" not in {name for _, name, _ in _schema(bulk_db)}
        bulk.flush()
        assert bulk.search(SearchQuery(text="lysozyme", size=0)).total == len(docs) - 3
        assert [d.id for d in bulk.search(SearchQuery(text="thaumatin")).items] == [docs[3].id]
    assert _schema(bulk_db) == _schema(plain_db)
    assert _fts(bulk_db) == _fts(plain_db)
    with SQLiteStore(plain_db) as plain, SQLiteStore(bulk_db) as bulk:
        for query in (SearchQuery(size=1000), SearchQuery(text="scan_00", size=1000)):
            assert bulk.search(query) == plain.search(query)


def test_a_bulk_load_into_a_catalogue_with_documents_is_a_plain_write(store: SQLiteStore) -> None:
    docs = _load_docs()
    store.put(docs[:1])
    with store.bulk_load():
        store.put(docs[1:])
        store.flush()
        assert store.search(SearchQuery(text="lysozyme", size=0)).total == len(docs) - 1


def test_a_bulk_load_cut_short_is_finished_when_the_store_is_next_opened(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    program = (
        "import os, sys\n"
        "from catalogd.store.sqlite import SQLiteStore\n"
        "from test_sqlite_store import _load_docs\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "loading = store.bulk_load()\n"
        "loading.__enter__()\n"
        "store.put(_load_docs())\n"
        "store.flush()\n"
        "os._exit(9)  # a crash: the load never ends\n"
    )
    assert _run_program(program, db) == 9
    assert sqlite_schema.BULK_PENDING in {name for _, name, _ in _schema(db)}
    with SQLiteStore(db) as store:
        assert store.search(SearchQuery(text="lysozyme", size=0)).total == 300
    assert "finished a bulk load that was cut short" in caplog.text
    names = {name for _, name, _ in _schema(db)}
    assert sqlite_schema.BULK_PENDING not in names
    assert {name for name, _, _ in sqlite_schema.BULK_INDEXES} <= names


@pytest.mark.parametrize("repeated", [False, True], ids=["unique keys", "a key twice"])
def test_staged_findings_are_recorded_as_the_memory_store_records_them(
    db: str, repeated: bool
) -> None:
    """The scan hands its findings to the writer as the walk goes (staging) and records
    them after it: a first pass (one INSERT from the staged table when the keys are
    unique), then a second pass over open records, give the records that record_audit
    of the same findings gives on the memory store, times and order of ties included."""
    from test_store_contract import violation

    from catalogd.store.memory import MemoryStore
    from catalogd.violations import ViolationState

    odd = os.fsdecode(NON_UTF8)
    first = [violation(f"{P1}/raw/f{i}.h5") for i in range(5)]
    first += [violation(odd, rule="owner", message="caf\udce9"), violation(f"{P1}/raw/f0.h5", "x")]
    if repeated:  # the same key again, other values: the last one's values win
        first.append(violation(f"{P1}/raw/f1.h5", message="again", severity="critical"))
    second = [violation(f"{P1}/raw/f{i}.h5", message="second") for i in (1, 3)]
    second.append(violation(f"{P1}/raw/new.h5"))
    memory = MemoryStore()
    with SQLiteStore(db) as store:
        for seen_at, findings in ((10.0, first), (20.0, second)):
            memory.record_audit(findings, scope=P1, seen_at=seen_at)
            rows = [store.encode_finding(v) for v in findings]
            with store.staging() as stage:
                stage(rows[:3])
                stage(rows[3:-1])
                store.record_audit_rows(rows[-1:], scope=P1, seen_at=seen_at, staged=True)
            store.flush()
            for state in ViolationState:
                assert store.violations(state=state) == memory.violations(state=state)
        assert len(store.violations(state=ViolationState.RESOLVED)) == 5
        with store.staging() as stage:  # a pass that is not recorded leaves nothing
            stage([store.encode_finding(violation(f"{P1}/raw/late.h5"))])
        store.record_audit_rows([], scope=f"{P1}/raw/late.h5", seen_at=30.0)
        store.flush()
        assert [v.path for v in store.violations(path_prefix=f"{P1}/raw/late.h5")] == []
