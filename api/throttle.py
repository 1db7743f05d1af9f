"""Failed logins slow a source down: after N failures within a window, 429.

A source (the client's address) that failed to authenticate ``max_failures`` times in
the last ``window_s`` seconds is refused *before* its credentials are looked at, until
its oldest failure in the window has aged out; the answer carries ``Retry-After``. The
limit counts failures only: a source that logs in correctly is never slowed down, and a
success does not wipe its failures (else a guesser could interleave its own valid
login). The clock is injected, so tests move time instead of sleeping.

Memory is bounded: at most ``max_sources`` sources are tracked, the least recently
failing ones forgotten first.

Several API workers (``[api] workers`` > 1, :mod:`api.server`) share one record:
:class:`SharedLoginThrottle` keeps the failures in a small SQLite file that the
supervising process creates in a private directory and every worker opens, so
``login_max_failures`` is the limit per source for the whole server, whichever worker
each attempt reaches (the kernel hands connections to the workers in no fixed order).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalogd.errors import CatalogdError, StoreError

#: Sources tracked at most (an address costs a deque of at most max_failures floats).
MAX_SOURCES = 100_000


class Throttled(CatalogdError):
    """Too many failed logins from this source recently: answered 429."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins from this address; try again in {retry_after} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Per-source record of recent authentication failures."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float],
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, source: str) -> None:
        """Raise :class:`Throttled` when ``source`` may not try to log in now."""
        with self._lock:
            now = self.clock()
            recent = self._recent(source, now)
            if recent is not None and len(recent) >= self.max_failures:
                wait = recent[0] + self.window_s - now
                raise Throttled(max(1, math.ceil(wait)))

    def failed(self, source: str) -> None:
        """Record one failed login from ``source``."""
        with self._lock:
            now = self.clock()
            recent = self._recent(source, now)
            if recent is None:
                recent = self._failures[source] = deque(maxlen=self.max_failures)
                while len(self._failures) > self.max_sources:
                    self._failures.popitem(last=False)
            recent.append(now)
            self._failures.move_to_end(source)

    def _recent(self, source: str, now: float) -> deque[float] | None:
        recent = self._failures.get(source)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if not recent:
            del self._failures[source]
            return None
        return recent


#: Seconds an attempt waits for another worker's write to the shared record.
SHARED_BUSY_TIMEOUT_S = 5.0
#: Failures recorded between two sweeps of the expired ones.
SWEEP_EVERY = 1000
_CONNECT: dict[str, Any] = {
    "timeout": SHARED_BUSY_TIMEOUT_S,
    "isolation_level": None,  # autocommit: each failure is one short write
    "check_same_thread": False,  # FastAPI's thread pool; the lock serialises use
}


class SharedLoginThrottle(LoginThrottle):
    """:class:`LoginThrottle` whose record is a SQLite file shared by processes.

    One row per failure (source, time); a check counts the source's rows in the window.
    Expired rows are swept every :data:`SWEEP_EVERY` failures, and beyond ``max_sources``
    times ``max_failures`` rows the oldest go first, so the file stays small. A record
    that cannot be read or written is a :class:`~catalogd.errors.StoreError` (the API
    answers 503): an attempt is never let through unchecked.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float],
        max_sources: int = MAX_SOURCES,
    ) -> None:
        super().__init__(
            max_failures=max_failures, window_s=window_s, clock=clock, max_sources=max_sources
        )
        self.path = path
        self._since_sweep = 0
        try:
            self._db = self._schema(sqlite3.connect(path, **_CONNECT))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the shared login record {path}: {exc}") from None

    @staticmethod
    def _schema(db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # a failure lost in a crash costs nothing
        db.execute("CREATE TABLE IF NOT EXISTS failures (source TEXT NOT NULL, at REAL NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS failures_by_source ON failures(source, at)")
        return db

    @classmethod
    def create(cls, path: Path) -> None:
        """Create the record (the supervisor does, before any worker opens it)."""
        try:
            cls._schema(sqlite3.connect(path, **_CONNECT)).close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the shared login record {path}: {exc}") from None

    def check(self, source: str) -> None:
        now = self.clock()
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT at FROM failures WHERE source = ? AND at > ? ORDER BY at LIMIT ?",
                    (source, now - self.window_s, self.max_failures),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"the shared login record {self.path}: {exc}") from None
        if len(rows) >= self.max_failures:
            wait = rows[0][0] + self.window_s - now
            raise Throttled(max(1, math.ceil(wait)))

    def failed(self, source: str) -> None:
        now = self.clock()
        with self._lock:
            try:
                self._db.execute("INSERT INTO failures VALUES (?, ?)", (source, now))
                self._since_sweep += 1
                if self._since_sweep >= SWEEP_EVERY:
                    self._since_sweep = 0
                    self._sweep(now)
            except sqlite3.Error as exc:
                raise StoreError(f"the shared login record {self.path}: {exc}") from None

    def _sweep(self, now: float) -> None:
        self._db.execute("DELETE FROM failures WHERE at <= ?", (now - self.window_s,))
        self._db.execute(
            "DELETE FROM failures WHERE rowid IN "
            "(SELECT rowid FROM failures ORDER BY at DESC LIMIT -1 OFFSET ?)",
            (self.max_sources * self.max_failures,),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
