"""Writes kept on local disk while the catalogue cannot be reached, replayed in order.

:class:`Spool` is a durable, ordered queue of store writes in one SQLite file (WAL,
``synchronous=FULL``: each batch is one transaction, on disk when ``append`` returns):
``put`` of documents, ``delete`` of ids, and the ``audit`` results of
:meth:`~catalogd.store.base.Store.record_audit`, each with an autoincrement sequence
number. One process uses a spool file at a time (an exclusive ``flock`` on
``FILE.lock``); a second one gets :class:`SpoolError`, as does a spool that is corrupt,
unwritable, or holds writes for another catalogue. Nothing is dropped silently.

:class:`SpoolingStore` wraps a store that may go away (Elasticsearch):

* **Writes.** While the spool is empty and the store answers, writes go straight to
  it. A write that fails with StoreUnavailable (no connection, timeouts, 429/5xx after
  the store's own retries) goes to the spool, and from then on every write goes behind
  it, so the order of writes is kept. Ids are stable and writes idempotent, so a batch
  replayed twice (after a crash between applying and removing it) is harmless.
* **Replay.** A background thread reconnects with exponential backoff (REPLAY_BACKOFF_S
  up to REPLAY_BACKOFF_MAX_S), then applies the spool oldest first, REPLAY_BATCH writes
  at a time (consecutive puts as one bulk put, consecutive deletes as one delete), and
  removes each batch only after it was applied. A write the store refuses for good (not
  an outage) is moved to the spool's ``rejected`` table, logged with its reason and
  counted in :meth:`SpoolingStore.health`. A new process finds the spool and replays it.
* **flush()** makes every earlier write *durable* (in the store or the fsynced spool).
  It also makes them *visible* when the store answers: it waits for the replay to empty
  the spool, then flushes the store. While the store is down it returns without waiting
  and without raising; :meth:`SpoolingStore.health` says which case holds.
* **Reads** go to the store. While it is known to be down they fail at once with
  StoreUnavailable (the API answers 503) instead of waiting for a timeout each. With
  ``local_reads`` (the daemon, whose reads are its own bookkeeping), ``get`` without
  groups answers from the spool's latest write of the id, and while the store is down
  ``get`` answers None (the file is read again: an idempotent re-index) and
  ``violations`` answers an empty list (a daemon started during an outage learns open
  violations again from its checks). ``fingerprints`` and ``search`` always need the
  store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from catalogd.document import FileDocument
from catalogd.errors import EX_CONFIG, EX_TEMPFAIL, StoreError, StoreUnavailable
from catalogd.store.base import Fingerprint, SearchQuery, SearchResult, Store
from catalogd.violations import Violation, ViolationState

log = logging.getLogger(__name__)

#: Writes applied per replay round.
REPLAY_BATCH = 1000
REPLAY_BACKOFF_S = 0.5
REPLAY_BACKOFF_MAX_S = 30.0
#: The longest flush() waits for the replay while the store answers.
FLUSH_WAIT_S = 600.0
#: The longest close() waits for the replay; the rest is replayed at the next start.
CLOSE_WAIT_S = 10.0
SPOOL_FORMAT = 1

T = TypeVar("T")


class SpoolError(StoreError):
    """The spool cannot be opened or written; restarting will not mend it (exit 78)."""

    exit_code = EX_CONFIG


class SpoolUnwritable(SpoolError):
    """The spool's directory or file cannot be created (so it holds nothing yet)."""


class SpoolFull(SpoolError):
    """The spool's file system is full. Nothing already spooled is lost (the failed
    transaction is rolled back); the daemon stops with EX_TEMPFAIL (75), which systemd
    restarts (``Restart=on-failure``), so it comes back by itself when space returns."""

    exit_code = EX_TEMPFAIL


class SpoolInUse(SpoolError):
    """Another process has the spool (its writes are its own to replay)."""


@dataclass(frozen=True, slots=True)
class SpoolOp:
    """One spooled write: ``put`` (body: a document), ``delete`` (doc_id) or ``audit``
    (body: findings, scope, seen_at, recursive)."""

    seq: int
    kind: str
    doc_id: str | None
    body: str | None
    at: float


_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def encode_doc(doc: FileDocument) -> str:
    return _JSON.encode({f.name: getattr(doc, f.name) for f in fields(doc)})


def decode_doc(body: str) -> FileDocument:
    data = json.loads(body)
    data["access_groups"] = tuple(data["access_groups"])
    data["entries"] = tuple(data["entries"])
    return FileDocument(**data)


def _encode_violation(v: Violation) -> dict[str, Any]:
    return {f.name: getattr(v, f.name) for f in fields(v)}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('put', 'delete', 'audit')),
    doc_id TEXT,
    body TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ops_doc ON ops (doc_id, seq);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    doc_id TEXT,
    body TEXT,
    at REAL NOT NULL,
    error TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""


class Spool:
    """The durable queue in ``path`` for the catalogue named ``target``."""

    def __init__(self, path: str, *, target: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._lock_file: int | None = None
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            self._lock_file = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolUnwritable(f"cannot create the write spool {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_file)
            raise SpoolInUse(
                f"the write spool {path} is in use by another catalogd process; "
                "give this one another [store] spool_dir"
            ) from exc
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._open(target)
        except sqlite3.Error as exc:
            self._release()
            raise SpoolError(
                f"the write spool {path} cannot be used ({exc}); it may hold writes not yet "
                "in the catalogue: move it aside, and rescan after repairing the catalogue"
            ) from exc
        except SpoolError:
            self._release()
            raise

    def _open(self, target: str) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format", str(SPOOL_FORMAT)) != str(SPOOL_FORMAT):
            raise SpoolError(f"the write spool {self.path} has format {meta['format']}")
        self._count = int(db.execute("SELECT count(*) FROM ops").fetchone()[0])
        old = meta.get("target")
        if old is not None and old != target and self._count:
            raise SpoolError(
                f"the write spool {self.path} holds {self._count} writes for {old}, not "
                f"{target}: point [store] url back at it until they are replayed, or move "
                "the spool aside"
            )
        with self._transaction():
            db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(SPOOL_FORMAT),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('target', ?)", (target,))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _release(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def __len__(self) -> int:
        return self._count

    def _append(self, rows: Sequence[tuple[str, str | None, str | None]]) -> None:
        now = time.time()
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT INTO ops (kind, doc_id, body, at) VALUES (?, ?, ?, ?)",
                        [(kind, doc_id, body, now) for kind, doc_id, body in rows],
                    )
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise SpoolFull(
                        f"the disk of the write spool {self.path} is full: {len(rows)} "
                        "writes could not be spooled (nothing spooled before is lost; "
                        "free space and catalogd catches up)"
                    ) from exc
                raise SpoolError(
                    f"cannot write {len(rows)} writes to the spool {self.path}: {exc}"
                ) from exc
            self._count += len(rows)

    def append_puts(self, docs: Sequence[FileDocument]) -> None:
        self._append([("put", doc.id, encode_doc(doc)) for doc in docs])

    def append_deletes(self, ids: Sequence[str]) -> None:
        self._append([("delete", doc_id, None) for doc_id in ids])

    def append_audit(
        self, findings: Sequence[Violation], *, scope: str, seen_at: float, recursive: bool
    ) -> None:
        body = {
            "findings": [_encode_violation(v) for v in findings],
            "scope": scope,
            "seen_at": seen_at,
            "recursive": recursive,
        }
        self._append([("audit", None, _JSON.encode(body))])

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[SpoolOp]:
        with self._lock:
            try:
                rows = self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return [SpoolOp(*row) for row in rows]

    def head(self, limit: int) -> list[SpoolOp]:
        """The oldest ``limit`` writes, oldest first."""
        return self._read(
            "SELECT seq, kind, doc_id, body, at FROM ops ORDER BY seq LIMIT ?", (limit,)
        )

    def latest(self, doc_id: str) -> SpoolOp | None:
        """The newest spooled put or delete of ``doc_id``."""
        if not self._count:
            return None
        found = self._read(
            "SELECT seq, kind, doc_id, body, at FROM ops WHERE doc_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            (doc_id,),
        )
        return found[0] if found else None

    def oldest_at(self) -> float | None:
        found = self.head(1)
        return found[0].at if found else None

    def remove_through(self, seq: int) -> None:
        """Forget every write up to ``seq`` (they were applied)."""
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute("DELETE FROM ops WHERE seq <= ?", (seq,))
                self._count = int(self._db.execute("SELECT count(*) FROM ops").fetchone()[0])
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc

    def reject(self, op: SpoolOp, error: str) -> None:
        """Move ``op`` to the ``rejected`` table (the store refused it for good)."""
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute(
                        "INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (op.seq, op.kind, op.doc_id, op.body, op.at, error, time.time()),
                    )
                    self._db.execute("DELETE FROM ops WHERE seq = ?", (op.seq,))
                self._count = int(self._db.execute("SELECT count(*) FROM ops").fetchone()[0])
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc

    def rejected(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM rejected").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._release()


def spool_path(directory: str, name: str) -> str:
    """The spool file of command ``name`` (``run``, ``scan``) in ``directory``."""
    return os.path.join(directory, f"{name}.spool.sqlite")


class SpoolingStore(Store):
    """``opener()``'s store, with its writes spooled while it cannot be reached."""

    def __init__(
        self,
        opener: Callable[[], Store],
        spool: Spool,
        *,
        url: str,
        local_reads: bool = False,
        backoff_s: float = REPLAY_BACKOFF_S,
        backoff_max_s: float = REPLAY_BACKOFF_MAX_S,
    ) -> None:
        self.url = url
        self.spool = spool
        self._opener = opener
        self._local_reads = local_reads
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._inner: Store | None = None
        self._error: str | None = None
        self._down_since: float | None = None
        self._order = threading.Lock()  # direct writes and spool appends, one at a time
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._closed = False
        self._rejected = spool.rejected()
        self._told_no_violations = False  # warned once per outage
        self._connect()
        if len(spool):
            log.warning(
                "%d writes were left in the spool %s: replaying them into %s",
                len(spool),
                spool.path,
                url,
            )
        self._thread = threading.Thread(target=self._replay_loop, name="catalogd-spool")
        self._thread.daemon = True
        self._thread.start()

    # -- state -------------------------------------------------------------------------
    def _connect(self) -> Store | None:
        if self._inner is not None:
            return self._inner
        try:
            self._inner = self._opener()
        except StoreUnavailable as exc:
            self._went_down(exc)
            return None
        return self._inner

    def _went_down(self, exc: StoreError) -> None:
        with self._changed:
            if self._error is None:
                log.warning(
                    "the catalogue is unreachable (%s): writes are kept in %s until it "
                    "answers again",
                    exc.message,
                    self.spool.path,
                )
                self._down_since = time.monotonic()
            self._error = exc.message
            self._changed.notify_all()
        self._wake.set()

    def _came_back(self) -> None:
        with self._changed:
            if self._error is not None:
                down = time.monotonic() - (self._down_since or time.monotonic())
                log.warning("the catalogue at %s answers again (down %.1f s)", self.url, down)
            self._error = None
            self._down_since = None
            self._told_no_violations = False
            self._changed.notify_all()

    def health(self) -> dict[str, Any]:
        """``{"state": "ok"}``; or, while the store is down or the spool is being
        replayed, ``{"state": "degraded", "spooled": N, "oldest_age_s": S, "error": E}``
        (``rejected``: writes the store refused for good, when there are any)."""
        spooled = len(self.spool)
        error = self._error
        result: dict[str, Any] = {"state": "ok"}
        if spooled or error is not None:
            oldest = self.spool.oldest_at() if spooled else None
            result = {
                "state": "degraded",
                "spooled": spooled,
                "oldest_age_s": round(max(0.0, time.time() - oldest), 3) if oldest else 0.0,
                "error": error or f"replaying {spooled} spooled writes",
            }
        if self._rejected:
            result["rejected"] = self._rejected
        return result

    # -- writes ------------------------------------------------------------------------
    def _write(self, direct: Callable[[Store], None], spool: Callable[[], None]) -> None:
        if self._closed:
            raise StoreError(f"the store {self.url} is closed")
        with self._order:
            inner = self._inner
            if not len(self.spool) and self._error is None and inner is not None:
                try:
                    direct(inner)
                    return
                except StoreUnavailable as exc:
                    self._went_down(exc)
            spool()
        self._wake.set()

    def put(self, docs: Iterable[FileDocument]) -> None:
        batch = list(docs)
        if batch:
            self._write(lambda s: s.put(batch), lambda: self.spool.append_puts(batch))

    def delete(self, ids: Iterable[str]) -> None:
        batch = list(ids)
        if batch:
            self._write(lambda s: s.delete(batch), lambda: self.spool.append_deletes(batch))

    def record_audit(
        self,
        findings: Iterable[Violation],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
    ) -> None:
        found = list(findings)
        self._write(
            lambda s: s.record_audit(found, scope=scope, seen_at=seen_at, recursive=recursive),
            lambda: self.spool.append_audit(
                found, scope=scope, seen_at=seen_at, recursive=recursive
            ),
        )

    def flush(self) -> None:
        """Durable always; visible too when the store answers (see the module doc)."""
        self._flush(FLUSH_WAIT_S)

    def _flush(self, wait_s: float) -> None:
        self._wake.set()
        deadline = time.monotonic() + wait_s
        with self._changed:
            while len(self.spool) and self._error is None and time.monotonic() < deadline:
                self._changed.wait(0.5)
        inner = self._inner
        if inner is None or len(self.spool) or self._error is not None:
            return
        try:
            inner.flush()
        except StoreUnavailable as exc:
            self._went_down(exc)

    # -- replay ------------------------------------------------------------------------
    def _replay_loop(self) -> None:
        delay = self._backoff_s
        while not self._closed:
            work = len(self.spool) or self._error is not None or self._inner is None
            if not work:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                done = self._replay_round()
            except StoreError as exc:  # a broken spool, or a catalogue we may not use
                log.error("cannot replay the spool: %s", exc.message)
                with self._changed:
                    self._error = exc.message
                done = False
            except Exception:  # pragma: no cover - a bug; keep the thread alive
                log.exception("replaying the spool failed")
                done = False
            if done:
                delay = self._backoff_s
                continue
            self._wake.wait(delay)
            self._wake.clear()
            delay = min(delay * 2, self._backoff_max_s)

    def _replay_round(self) -> bool:
        """One step: connect, probe, or apply one batch. False: wait and try again."""
        inner = self._connect()
        if inner is None:
            return False
        batch = self.spool.head(REPLAY_BATCH)
        try:
            if not batch:
                inner.count()  # a probe: does it answer again?
                self._came_back()
                return True
            self._apply(inner, batch)
        except StoreUnavailable as exc:
            self._went_down(exc)
            return False
        except StoreError as exc:
            if self._closed:
                return False
            log.warning("the catalogue refused a spooled batch (%s): replaying one by one", exc)
            for op in batch:
                try:
                    self._apply(inner, [op])
                except StoreUnavailable as down:
                    self._went_down(down)
                    return False
                except StoreError as refused:
                    self._reject(op, refused.message)
                    continue
                self.spool.remove_through(op.seq)
            self._progress()
            return True
        self.spool.remove_through(batch[-1].seq)
        self._progress()
        return True

    def _progress(self) -> None:
        if not len(self.spool):
            log.warning("the spool %s is replayed: the catalogue is up to date", self.spool.path)
            self._came_back()
        with self._changed:
            self._changed.notify_all()

    def _reject(self, op: SpoolOp, error: str) -> None:
        what = op.doc_id or op.kind
        log.error("the catalogue refused a spooled %s of %s for good: %s", op.kind, what, error)
        self.spool.reject(op, error)
        self._rejected += 1

    @staticmethod
    def _apply(inner: Store, ops: Sequence[SpoolOp]) -> None:
        """Apply ``ops`` in order: runs of puts and runs of deletes as one call each."""
        run: list[SpoolOp] = []

        def send() -> None:
            if not run:
                return
            if run[0].kind == "put":
                inner.put([decode_doc(op.body or "") for op in run])
            else:
                inner.delete([op.doc_id or "" for op in run])
            run.clear()

        for op in ops:
            if op.kind == "audit":
                send()
                body = json.loads(op.body or "{}")
                inner.record_audit(
                    [Violation(**v) for v in body["findings"]],
                    scope=body["scope"],
                    seen_at=body["seen_at"],
                    recursive=body["recursive"],
                )
                continue
            if run and run[0].kind != op.kind:
                send()
            run.append(op)
        send()

    # -- reads -------------------------------------------------------------------------
    def _read(self, read: Callable[[Store], T]) -> T:
        inner = self._inner
        if self._closed:
            raise StoreError(f"the store {self.url} is closed")
        if inner is None or self._error is not None:
            kept = len(self.spool)
            raise StoreUnavailable(
                f"the catalogue at {self.url} is unreachable: {self._error or 'not connected'}"
                + (
                    f"; {kept} writes are kept in {self.spool.path} until it answers"
                    if kept
                    else ""
                )
            )
        try:
            return read(inner)
        except StoreUnavailable as exc:
            self._went_down(exc)
            raise

    def get(
        self,
        doc_id: str,
        *,
        groups: frozenset[str] | None = None,
        public_before: str | None = None,
    ) -> FileDocument | None:
        if groups is None and self._local_reads:
            op = self.spool.latest(doc_id)
            if op is not None:
                return decode_doc(op.body) if op.kind == "put" and op.body else None
            try:
                return self._read(lambda s: s.get(doc_id))
            except StoreUnavailable:
                return None
        return self._read(lambda s: s.get(doc_id, groups=groups, public_before=public_before))

    def search(self, query: SearchQuery) -> SearchResult:
        return self._read(lambda s: s.search(query))

    def _iterate(self, items: Iterator[T]) -> Iterator[T]:
        try:
            yield from items
        except StoreUnavailable as exc:
            self._went_down(exc)
            raise

    def iter_documents(self, *, path_prefix: str | None = None) -> Iterator[FileDocument]:
        return self._iterate(self._read(lambda s: s.iter_documents(path_prefix=path_prefix)))

    def fingerprints(self, *, path_prefix: str | None = None) -> Iterator[Fingerprint]:
        return self._iterate(self._read(lambda s: s.fingerprints(path_prefix=path_prefix)))

    def count(self) -> int:
        return self._read(lambda s: s.count())

    def violations(
        self,
        *,
        state: ViolationState = ViolationState.OPEN,
        path_prefix: str | None = None,
    ) -> list[Violation]:
        try:
            return self._read(lambda s: s.violations(state=state, path_prefix=path_prefix))
        except StoreUnavailable:
            if not self._local_reads:
                raise
            if not self._told_no_violations:
                self._told_no_violations = True
                log.warning("the catalogue is unreachable: no open violations known for now")
            return []

    # -- life --------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._flush(CLOSE_WAIT_S)
        self._closed = True
        self._wake.set()
        self._thread.join(REPLAY_BACKOFF_MAX_S)
        left = len(self.spool)
        if left:
            log.warning(
                "%d writes stay in the spool %s: they are replayed at the next start",
                left,
                self.spool.path,
            )
        try:
            if self._inner is not None:
                self._inner.close()
        except StoreError as exc:
            log.warning("closing the catalogue: %s", exc.message)
        finally:
            self.spool.close()
