"""The embedded catalogue store: one SQLite file, WAL mode, one writer thread.

Writes are queued for the writer thread (:mod:`catalogd.store.sqlite_writer`); readers use
their own read-only connection, one per thread, so reads never wait for the writer.
Every filter, the access filter included, is evaluated inside SQL
(:mod:`catalogd.store.sqlite_query`); free text goes through a trigram FTS5 index. No
``sqlite3`` exception leaves these modules (:data:`~catalogd.store.sqlite_schema.ERROR_MAP`).
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

from catalogd.document import FileDocument, display_path
from catalogd.errors import StoreError, StoreUnavailable, UsageError, describe_os_error
from catalogd.store import sqlite_query as sql
from catalogd.store.base import Fingerprint, SearchQuery, SearchResult, Store, iso_date
from catalogd.store.query import decode_cursor, encode_cursor, sort_value
from catalogd.store.sqlite_schema import (
    DOC_SELECT,
    SQLITE_ERRORS,
    VIOLATION_SELECT,
    DocRow,
    PlainRows,
    ViolationRow,
    bulk_pending,
    dec_u64,
    doc_row,
    enc_text,
    end_bulk,
    migrate,
    row_doc,
    row_violation,
    translated,
    violation_row,
)
from catalogd.store.sqlite_writer import (
    MAX_BATCH_DOCS,
    WRITER_POLL_S,
    Audit,
    Bulk,
    Delete,
    Flush,
    Op,
    Put,
    Stage,
    Stop,
    Writer,
)
from catalogd.violations import Violation, ViolationState

log = logging.getLogger(__name__)

WRITE_BUSY_TIMEOUT_S = 30.0
READ_BUSY_TIMEOUT_S = 10.0
WRITE_CACHE_KIB = 65536
#: Pages of a new database file: measured 10-20% faster bulk inserts than 4096.
PAGE_SIZE_B = 8192
#: Checkpoint the write-ahead log when it holds this many pages (80 MB): fewer, larger
#: checkpoints (each one syncs) than SQLite's default of 1000 pages during a bulk scan.
WAL_CHECKPOINT_PAGES = 10000
#: Up to this many documents visible to a caller, search first builds their set (see
#: sqlite_query.access_clause); beyond it, each candidate is checked.
ACCESS_SET_MAX_ROWS = 20_000
#: Documents read per statement by iter_documents.
ITER_CHUNK = 1000


class FindingStage:
    """Stages encoded findings (:meth:`SQLiteStore.staging`): each as its path and the
    number of its tail (the other values, shared by the copies of a directory's
    findings), and notes whether their keys (path and rule) are unique: if not,
    write_audit's rules decide which wins."""

    def __init__(self, enqueue: Callable[[Op], None]) -> None:
        self._enqueue = enqueue
        self._keys: set[tuple[object, object]] = set()
        self._tails: dict[tuple[object, ...], int] = {}
        self.unique = True

    def __call__(self, rows: list[ViolationRow]) -> None:
        keys, tails = self._keys, self._tails
        before = len(keys)
        keys.update([(row[0], row[1]) for row in rows])
        self.unique = self.unique and len(keys) == before + len(rows)
        staged: list[tuple[object, int]] = []
        new: list[tuple[object, ...]] = []
        for row in rows:
            tail = row[1:]
            number = tails.get(tail)
            if number is None:
                number = tails[tail] = len(tails)
                new.append((number, *tail))
            staged.append((row[0], number))
        self._enqueue(Stage(staged, new))


class SQLiteStore(Store):
    """The catalogue in one SQLite file at ``path`` (created, with its directory, if missing)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._where = display_path(self.path)
        self.url = "sqlite://" + self._where
        self._closed = False
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._local = threading.local()
        self._stage: FindingStage | None = None
        self._writer = Writer(self._open_writer(), self._where)
        self._writer.start()

    def __enter__(self) -> SQLiteStore:
        return self

    def _open_writer(self) -> sqlite3.Connection:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory of the SQLite store {self._where}: "
                f"{describe_os_error(exc)}"
            ) from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                os.fsencode(self.path),
                timeout=WRITE_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,  # opened here, then used by the writer thread only
            )
            conn.execute(f"PRAGMA page_size={PAGE_SIZE_B:d}")  # only a new file takes it
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(
                    f"the SQLite store {self._where} cannot use write-ahead logging "
                    f"(journal mode {mode!r}); put it on a local file system"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size=-{WRITE_CACHE_KIB:d}")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES:d}")
            migrate(conn, self._where)
            if bulk_pending(conn):
                self._finish_bulk(conn)
        except SQLITE_ERRORS as exc:
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"cannot open the SQLite store {self._where}: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _finish_bulk(self, conn: sqlite3.Connection) -> None:
        """Finish a bulk load that was cut short (or is still going on in another
        process, whose writer then goes on without one: the same rows, only slower)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            indexed = end_bulk(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.warning(
            "SQLite store %s: finished a bulk load that was cut short (%d documents "
            "made searchable by their text, indexes built)",
            self._where,
            indexed,
        )

    # -- connections and the queue ----------------------------------------------------------
    def _closed_error(self) -> StoreError:
        return StoreError(f"the SQLite store {self._where} is closed")

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if self._closed:
            raise self._closed_error()
        if conn is not None:
            return conn
        uri = "file:" + quote(os.fsencode(self.path)) + "?mode=ro"
        with self._readers_lock:
            if self._closed:
                raise self._closed_error()
            alive = []
            for thread, old in self._readers:  # threads that ended leave their connection
                if thread.is_alive():
                    alive.append((thread, old))
                else:
                    old.close()
            try:
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=READ_BUSY_TIMEOUT_S,
                    isolation_level=None,
                    check_same_thread=False,  # so that close() can close it
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"cannot open the SQLite store {self._where} for reading: {exc}"
                ) from exc
            alive.append((threading.current_thread(), conn))
            self._readers = alive
        self._local.conn = conn
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """This thread's reader inside one read transaction (one snapshot)."""
        conn = self._reader()
        with translated(self._where):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def _enqueue(self, op: Op) -> None:
        with self._write_lock:
            if self._closed:
                raise self._closed_error()
            self._put_op(op)

    def _put_op(self, op: Op) -> None:
        while True:
            try:
                self._writer.queue.put(op, timeout=WRITER_POLL_S)
                return
            except queue.Full:
                if not self._writer.is_alive():
                    raise StoreError(f"the SQLite store {self._where} stopped writing") from None

    def _wait(self, marker: Flush) -> None:
        while not marker.done.wait(WRITER_POLL_S):
            if not self._writer.is_alive() and not marker.done.is_set():
                raise StoreError(f"the SQLite store {self._where} stopped writing")
        if marker.error is not None:
            raise marker.error

    # -- writes -----------------------------------------------------------------------------
    def put(self, docs: Iterable[FileDocument]) -> None:
        self.put_rows([doc_row(doc) for doc in docs])

    #: What :meth:`put_rows` takes for a document (the scan encodes in its walking
    #: children, see catalogd.pipeline.RowMaker).
    encode = staticmethod(doc_row)
    #: The same for the documents without metadata of one directory's files (the scan).
    plain_rows = PlainRows

    def put_rows(self, rows: list[DocRow]) -> None:
        """``put`` of documents already encoded with :attr:`encode`."""
        for start in range(0, len(rows), MAX_BATCH_DOCS):
            self._enqueue(Put(rows[start : start + MAX_BATCH_DOCS]))

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Write a first load into an empty catalogue faster: while it lasts, the
        secondary indexes are dropped and the full text of new documents waits in a
        table of its own; at the end (queued after the writes made inside) the text
        goes into the trigram index in one statement and the indexes are built, as
        they were (measured: 100,000 documents written in about half the time).

        A catalogue that holds documents already is written as usual. Meanwhile, a
        search sees the documents written so far, but free text finds none of them
        until the load ends. A load cut short (a crash) is finished when the store is
        next opened; every writer of the file, in any process, keeps its rows right.
        """
        self._enqueue(Bulk(start=True))
        try:
            yield
        except BaseException:
            with suppress(StoreError):
                self._enqueue(Bulk(start=False))
            raise
        self._enqueue(Bulk(start=False))

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._enqueue(Delete(ids))

    def record_audit(
        self,
        findings: Iterable[Violation],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
    ) -> None:
        # Encoded here, so what cannot be stored is refused now, not in the writer.
        rows = [violation_row(v) for v in findings]
        self.record_audit_rows(rows, scope=scope, seen_at=seen_at, recursive=recursive)

    #: What :meth:`record_audit_rows` takes for a finding (the scan encodes in its
    #: walking children, see catalogd.pipeline.RowMaker).
    encode_finding = staticmethod(violation_row)

    def record_audit_rows(
        self,
        rows: list[ViolationRow],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
        staged: bool = False,
    ) -> None:
        """``record_audit`` of findings already encoded with :attr:`encode_finding`;
        with ``staged``, those staged (inside :meth:`staging`) come before ``rows``."""
        clause = sql.scope_clause(scope, recursive)
        stage = self._stage
        if not staged:
            self._enqueue(Audit(rows, clause, seen_at))
        elif stage is None:
            raise StoreError("staged findings are recorded inside staging()")
        else:
            stage(rows)
            self._enqueue(Audit([], clause, seen_at, staged=True, unique=stage.unique))

    @contextmanager
    def staging(self) -> Iterator[FindingStage]:
        """A pass's findings handed to the writer as the pass goes, for its
        ``record_audit_rows(..., staged=True)``: the writer keeps them as they come,
        overlapping the walk, and a first pass's findings then go into violations in
        one statement (the dirty tree's 204,867: ...). Yields the FindingStage that
        takes rows; what is not recorded when the block ends is dropped."""
        self._enqueue(Stage(None))
        self._stage = FindingStage(self._enqueue)
        try:
            yield self._stage
        finally:
            self._stage = None
            with suppress(StoreError):
                self._enqueue(Stage(None))

    def flush(self) -> None:
        marker = Flush()
        self._enqueue(marker)
        self._wait(marker)

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            marker = Flush()
            try:
                self._put_op(marker)
                self._put_op(Stop())
                self._wait(marker)
            finally:
                self._writer.join()
                with self._readers_lock:
                    readers, self._readers = self._readers, []
                for _, conn in readers:
                    conn.close()

    # -- reads ------------------------------------------------------------------------------
    def get(
        self,
        doc_id: str,
        *,
        groups: frozenset[str] | None = None,
        public_before: str | None = None,
    ) -> FileDocument | None:
        if not isinstance(enc_text(doc_id), str):
            return None  # ids are text; this one cannot be stored, so it is not there
        where, params = sql.access_clause(groups, public_before=iso_date(public_before))
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {DOC_SELECT} FROM docs d WHERE d.id = ? AND {where}", [doc_id, *params]
            ).fetchone()
        return None if row is None else row_doc(row)

    def search(self, query: SearchQuery) -> SearchResult:
        field_name = query.sort.lstrip("-")
        after = None if query.cursor is None else decode_cursor(query.cursor, query.sort)
        if after is not None and isinstance(after[0], str) != (field_name in sql.TEXT_SORTS):
            raise UsageError("invalid cursor: it belongs to another sort order")
        rows: list[tuple[object, ...]] = []
        with self._read() as conn:
            per_document = sql.prefer_per_document(conn, query, ACCESS_SET_MAX_ROWS)
            where, params = sql.where_clause(query, per_document=per_document)
            total, facets = sql.counts(conn, where, params, query.facets)
            if query.size > 0:
                text, page_params = sql.page_query(query, where, params, after)
                rows = conn.execute(text, page_params).fetchall()
        items = [row_doc(row) for row in rows[: query.size]]
        next_cursor = None
        if len(rows) > query.size and items:
            last = items[-1]
            next_cursor = encode_cursor(sort_value(last, field_name), last.id)
        return SearchResult(total=total, items=items, next_cursor=next_cursor, facets=facets)

    def iter_documents(self, *, path_prefix: str | None = None) -> Iterator[FileDocument]:
        for row in self._iter_rows(DOC_SELECT, path_prefix):
            yield row_doc(row)

    def fingerprints(self, *, path_prefix: str | None = None) -> Iterator[Fingerprint]:
        for doc_id, path, size, mtime, ctime, inode, *_ in self._iter_rows(
            "d.id, d.path, d.size, d.mtime, d.ctime, d.inode", path_prefix
        ):
            yield Fingerprint(doc_id, os.fsdecode(path), size, mtime, ctime, dec_u64(inode))

    def _iter_rows(self, select: str, path_prefix: str | None) -> Iterator[tuple[Any, ...]]:
        """``select`` of every document in path order, ITER_CHUNK rows per statement.

        Short statements, continued by keyset: no read snapshot is held while the
        caller consumes the rows, so a slow consumer does not hold up checkpoints.
        """
        where, params = ("1", []) if path_prefix is None else sql.prefix_clause(path_prefix)
        last: list[object] = []
        while True:
            keyset = " AND (d.path_text, d.id) > (?, ?)" if last else ""
            with self._read() as conn:
                cursor = conn.execute(
                    f"SELECT {select}, d.path_text, d.id FROM docs d WHERE {where}{keyset} "
                    "ORDER BY d.path_text, d.id LIMIT ?",
                    [*params, *last, ITER_CHUNK],
                )
                rows = cursor.fetchmany(ITER_CHUNK)
            yield from rows
            if len(rows) < ITER_CHUNK:
                return
            last = list(rows[-1][-2:])

    def count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM docs").fetchone()[0])

    def violations(
        self,
        *,
        state: ViolationState = ViolationState.OPEN,
        path_prefix: str | None = None,
    ) -> list[Violation]:
        clauses: list[str] = ["1"]
        params: list[object] = []
        if state is ViolationState.OPEN:
            clauses.append("resolved_at IS NULL")
        elif state is ViolationState.RESOLVED:
            clauses.append("resolved_at IS NOT NULL")
        if path_prefix is not None:
            prefix_sql, params = sql.prefix_clause(path_prefix, blob="path", text=None)
            clauses.append(prefix_sql)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {VIOLATION_SELECT} FROM violations WHERE {' AND '.join(clauses)} "
                "ORDER BY violation_id",
                params,
            ).fetchall()
        records = [row_violation(row) for row in rows]
        # Python's order of str (surrogate escapes included), as the memory store sorts.
        return sorted(records, key=lambda v: (v.path, v.rule, v.first_seen or 0.0))
