"""The SQLite store's writer: one thread owns the write connection.

``put``, ``delete`` and ``record_audit`` queue work items; the writer takes the first,
drains whatever else is queued (up to MAX_BATCH_DOCS documents) and applies it all in
one transaction. A failed batch is retried item by item, so one bad item loses only
itself; the failure is logged and re-raised by the next ``flush``.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from catalogd.errors import StoreError
from catalogd.store.sqlite_schema import (
    BULK_PENDING,
    DOC_COLUMNS,
    SQLITE_ERRORS,
    VIOLATION_FIELDS,
    VIOLATION_SELECT,
    DocRow,
    ViolationRow,
    begin_bulk,
    bulk_pending,
    end_bulk,
    translate_error,
)

log = logging.getLogger(__name__)

#: The most documents the writer puts into one transaction (measured: 10,000 inserts
#: 15-20% faster than 5,000; one such transaction takes about half a second).
MAX_BATCH_DOCS = 10_000
#: Queued write items (each up to MAX_BATCH_DOCS documents) before put() blocks.
QUEUE_ITEMS = 32
#: How often blocked waits check that the writer is still alive.
WRITER_POLL_S = 0.5


@dataclass(slots=True)
class Put:
    rows: list[DocRow]


@dataclass(slots=True)
class Delete:
    ids: list[str]


@dataclass(slots=True)
class Audit:
    rows: list[ViolationRow]
    scope_clause: tuple[str, list[object]]
    seen_at: float
    #: The findings staged (Stage) come before ``rows``; ``unique`` when no two of
    #: them have the same path and rule.
    staged: bool = False
    unique: bool = False


@dataclass(slots=True)
class Stage:
    """Findings of a pass under way, kept for its Audit (None: drop what is kept):
    ``rows`` are (path, tail number), ``tails`` the new (number, *tail), a finding's
    tail being its encoded values but the path (the copies of a directory's findings
    share theirs)."""

    rows: list[tuple[object, int]] | None
    tails: list[tuple[object, ...]] = field(default_factory=list)


@dataclass(slots=True)
class Bulk:
    """Begin (``start``) or end a bulk load (see sqlite_schema.begin_bulk)."""

    start: bool


@dataclass(slots=True, eq=False)
class Flush:
    done: threading.Event = field(default_factory=threading.Event)
    error: StoreError | None = None


class Stop:
    pass


Op = Put | Delete | Audit | Stage | Bulk | Flush | Stop
Work = Put | Delete | Audit | Stage | Bulk


class Writer(threading.Thread):
    """Owns the write connection; applies queued work in batches, one transaction each."""

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        super().__init__(name=f"catalogd-sqlite-writer {where}")
        self.conn = conn
        self.where = where
        self.queue: queue.Queue[Op] = queue.Queue(maxsize=QUEUE_ITEMS)
        #: The first failure since the last flush, reported to the next flush.
        self.failure: StoreError | None = None

    def run(self) -> None:
        try:
            stop = False
            while not stop:
                try:
                    first = self.queue.get(timeout=WRITER_POLL_S)
                except queue.Empty:
                    if self._orphaned():
                        break
                    continue
                stop = self._process(self._drain(first))
        finally:
            self.conn.close()

    def _orphaned(self) -> bool:
        """True at interpreter exit when no one is left to write or close the store.

        The writer is not a daemon thread (a daemon would lose queued writes at exit),
        so it must stop by itself when the program ended without closing the store.
        """
        if threading.main_thread().is_alive():
            return False
        return not any(
            t.is_alive() and not t.daemon and not isinstance(t, Writer)
            for t in threading.enumerate()
            if t is not threading.main_thread()
        )

    def _drain(self, first: Op) -> list[Op]:
        batch = [first]
        docs = len(first.rows) if isinstance(first, Put) else 0
        while docs < MAX_BATCH_DOCS and not isinstance(batch[-1], Stop):
            try:
                op = self.queue.get_nowait()
            except queue.Empty:
                break
            batch.append(op)
            docs += len(op.rows) if isinstance(op, Put) else 0
        return batch

    def _process(self, batch: list[Op]) -> bool:
        work = [op for op in batch if isinstance(op, Put | Delete | Audit | Stage | Bulk)]
        if work:
            try:
                self._transaction(work)
            except Exception as exc:
                if len(work) == 1:
                    self._fail(exc)
                else:  # retry one by one, so one bad item does not lose the others
                    for item in work:
                        try:
                            self._transaction([item])
                        except Exception as exc_one:
                            self._fail(exc_one)
        for op in batch:
            if isinstance(op, Flush):
                op.error, self.failure = self.failure, None
                op.done.set()
        return any(isinstance(op, Stop) for op in batch)

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, SQLITE_ERRORS):
            error = translate_error(exc, self.where)
        else:
            error = StoreError(f"SQLite store {self.where}: writing failed: {exc!r}")
        log.error("%s", error)
        if self.failure is None:
            self.failure = error

    def _transaction(self, ops: list[Work]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            pending: dict[str, DocRow] = {}
            bulk = bulk_pending(conn)
            for op in ops:
                if isinstance(op, Put):
                    pending.update((row[0], row) for row in op.rows)
                    continue
                if pending:
                    write_docs(conn, pending.values(), bulk=bulk)
                    pending = {}
                if isinstance(op, Delete):
                    delete_docs(conn, op.ids, bulk=bulk)
                elif isinstance(op, Bulk):
                    bulk = self._bulk(op.start)
                elif isinstance(op, Stage):
                    stage_findings(conn, op.rows, op.tails)
                elif op.staged:
                    write_staged_audit(conn, op.scope_clause, op.seen_at, op.unique)
                else:
                    write_audit(conn, op.rows, scope_clause=op.scope_clause, seen_at=op.seen_at)
            if pending:
                write_docs(conn, pending.values(), bulk=bulk)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _bulk(self, start: bool) -> bool:
        """Begin or end a bulk load; returns whether one is under way after it."""
        if start:
            begun = begin_bulk(self.conn)
            log.debug("SQLite store %s: bulk load %s", self.where, "on" if begun else "not begun")
            return begun
        indexed = end_bulk(self.conn)
        log.debug("SQLite store %s: bulk load ended, %d documents indexed", self.where, indexed)
        return False


# -- the statements, inside the writer's transaction ----------------------------------
_INSERT_DOC = (
    f"INSERT INTO docs (file_id, {', '.join(DOC_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(DOC_COLUMNS) + 1))})"
)
_JSON = json.JSONEncoder(separators=(",", ":"))
_IDS_IN = "IN (SELECT value FROM json_each(?))"
#: Where a document has rows, by file_id.
_DOC_TABLES = (
    ("docs_fts", "rowid"),
    ("doc_groups", "file_id"),
    ("doc_links", "master_id"),
    ("docs", "file_id"),
)
#: The same during a bulk load, whose full text waits in BULK_PENDING.
_BULK_DOC_TABLES = ((BULK_PENDING, "file_id"), *_DOC_TABLES)
_FTS_FROM_JSON = "(rowid, text) SELECT value ->> 0, value ->> 1 FROM json_each(?)"


def write_docs(conn: sqlite3.Connection, rows: Collection[DocRow], *, bulk: bool = False) -> None:
    """Upsert documents: an existing id keeps its file_id, a new one takes the next.
    With ``bulk`` (a bulk load is under way), the full text goes to BULK_PENDING."""
    ids = json.dumps([row[0] for row in rows])
    existing: dict[str, int] = dict(
        conn.execute(f"SELECT id, file_id FROM docs WHERE id {_IDS_IN}", (ids,)).fetchall()
    )
    last_id = int(conn.execute("SELECT ifnull(max(file_id), 0) FROM docs").fetchone()[0])
    if existing:  # replaced: they keep their file_id, and lose their old index entries
        old = [(file_id,) for file_id in existing.values()]
        for table, column in _BULK_DOC_TABLES if bulk else _DOC_TABLES:
            conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", old)
    numbered: list[tuple[int, DocRow]] = []
    for row in rows:
        file_id = existing.get(row[0])
        if file_id is None:
            last_id += 1
            file_id = last_id
        numbered.append((file_id, row))
    conn.executemany(_INSERT_DOC, [(file_id, *row[1]) for file_id, row in numbered])
    # The full-text and group rows in one statement each, from one JSON parameter: the
    # GIL is released for the whole batch, not taken back between rows.
    conn.execute(
        f"INSERT INTO {BULK_PENDING if bulk else 'docs_fts'} {_FTS_FROM_JSON}",
        (_JSON.encode([(file_id, row[2]) for file_id, row in numbered]),),
    )
    grouped = [(file_id, grp) for file_id, row in numbered for grp in row[3]]
    if all(type(grp) is str for _, grp in grouped):
        conn.execute(
            "INSERT OR IGNORE INTO doc_groups (file_id, grp) "
            "SELECT value ->> 0, value ->> 1 FROM json_each(?)",
            (_JSON.encode(grouped),),
        )
    else:  # a group name that is not valid UTF-8 (a BLOB)
        conn.executemany("INSERT OR IGNORE INTO doc_groups (file_id, grp) VALUES (?, ?)", grouped)
    named = [(file_id, path) for file_id, row in numbered for path in row[4]]
    if named:  # masters are few: most batches have none
        conn.executemany(
            "INSERT OR IGNORE INTO doc_links (master_id, data_path) VALUES (?, ?)", named
        )


def delete_docs(conn: sqlite3.Connection, ids: Sequence[str], *, bulk: bool = False) -> None:
    found = conn.execute(f"SELECT file_id FROM docs WHERE id {_IDS_IN}", (json.dumps(ids),))
    file_ids = found.fetchall()
    for table, column in _BULK_DOC_TABLES if bulk else _DOC_TABLES:
        conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", file_ids)


def write_audit(
    conn: sqlite3.Connection,
    rows: Sequence[ViolationRow],
    *,
    scope_clause: tuple[str, list[object]],
    seen_at: float,
) -> None:
    """Apply an audit's findings (encoded: :func:`violation_row`); ``scope_clause``
    selects the records it covered. The same rules, in the same order, as
    :meth:`catalogd.store.memory.MemoryStore.record_audit`: the records are matched on
    their encoded path and rule, which are equal exactly when the findings' are."""
    found = {(row[0], row[1]): row for row in rows}
    where, params = scope_clause
    open_in_scope = conn.execute(
        f"SELECT violation_id, path, rule FROM violations "
        f"WHERE resolved_at IS NULL AND ({where}) ORDER BY violation_id",
        params,
    ).fetchall()
    updates: list[tuple[object, ...]] = []
    resolved: list[tuple[float, int]] = []
    for violation_id, path, rule in open_in_scope:
        fresh = found.pop((path, rule), None)
        if fresh is None:
            resolved.append((seen_at, violation_id))
        else:
            updates.append((*fresh[2:-1], seen_at, fresh[-1], violation_id))
    assignments = ", ".join(f"{name} = ?" for name in VIOLATION_FIELDS)
    conn.executemany(
        f"UPDATE violations SET {assignments}, last_seen = ?, resolved_at = ? "
        "WHERE violation_id = ?",
        updates,
    )
    conn.executemany("UPDATE violations SET resolved_at = ? WHERE violation_id = ?", resolved)
    conn.executemany(
        f"INSERT INTO violations ({VIOLATION_SELECT}) "
        f"VALUES ({', '.join('?' * (len(VIOLATION_FIELDS) + 5))})",
        [(*row[:-1], seen_at, seen_at, None) for row in found.values()],
    )


#: The findings of a pass under way (Stage), in temporary tables of the writer's
#: connection: gone with it, so a pass cut short (a crash) leaves nothing behind.
STAGED, STAGED_TAILS = "staged_findings", "staged_tails"
_TAIL_COLUMNS = ("rule", *VIOLATION_FIELDS, "resolved_at")
#: The staged findings, in their order.
_STAGED_FROM = (
    f"FROM temp.{STAGED} f JOIN temp.{STAGED_TAILS} t ON t.tail = f.tail ORDER BY f.rowid"
)
#: The columns of a staged finding as violations takes them, then as write_audit does.
_STAGED_VALUES = ", ".join(("f.path", *(f"t.{name}" for name in _TAIL_COLUMNS[:-1])))
_STAGED_SELECT = f"{_STAGED_VALUES}, t.{_TAIL_COLUMNS[-1]}"


def stage_findings(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[object, int]] | None,
    tails: Sequence[tuple[object, ...]] = (),
) -> None:
    """Keep ``rows`` and ``tails`` (see Stage) for write_staged_audit; None drops those
    kept. Two values a row instead of eleven: binding them is most of the cost."""
    if rows is None:
        conn.execute(f"DROP TABLE IF EXISTS temp.{STAGED}")
        conn.execute(f"DROP TABLE IF EXISTS temp.{STAGED_TAILS}")
        return
    # No types: the values are kept as they are given.
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGED_TAILS} "
        f"(tail INTEGER PRIMARY KEY, {', '.join(_TAIL_COLUMNS)})"
    )
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGED} (path, tail)")
    conn.executemany(
        f"INSERT INTO temp.{STAGED_TAILS} VALUES ({', '.join('?' * (len(_TAIL_COLUMNS) + 1))})",
        tails,
    )
    conn.executemany(f"INSERT INTO temp.{STAGED} VALUES (?, ?)", rows)


def write_staged_audit(
    conn: sqlite3.Connection, scope_clause: tuple[str, list[object]], seen_at: float, unique: bool
) -> None:
    """:func:`write_audit` of the staged findings, which are then dropped. When their
    keys are ``unique`` and no record in scope is open (a first pass), write_audit
    would insert them all in their order: they go from the staged tables into
    violations in one statement, with no Python call per row."""
    stage_findings(conn, ())
    where, params = scope_clause
    open_one = conn.execute(
        f"SELECT 1 FROM violations WHERE resolved_at IS NULL AND ({where}) LIMIT 1", params
    ).fetchone()
    if unique and open_one is None:
        conn.execute(
            f"INSERT INTO violations ({VIOLATION_SELECT}) "
            f"SELECT {_STAGED_VALUES}, ?, ?, NULL {_STAGED_FROM}",
            (seen_at, seen_at),
        )
    else:
        staged = conn.execute(f"SELECT {_STAGED_SELECT} {_STAGED_FROM}").fetchall()
        write_audit(conn, staged, scope_clause=scope_clause, seen_at=seen_at)
    stage_findings(conn, None)
