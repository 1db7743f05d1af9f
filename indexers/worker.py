"""Per-file bounds that are real: extraction in a worker process that can be killed.

The worker is a fresh interpreter (``python -m indexers.worker``: never a fork of a
threaded daemon, and no re-import of the caller's main module) holding the indexers; it
reads one file at a time under an address-space limit (``RLIMIT_AS = max_memory_mb``)
and a cooperative deadline (``timeout_s``). The parent waits ``timeout_s`` plus a grace
period for each answer; a worker that overruns (stuck in the HDF5 library, say) is
killed and replaced, and one that dies (a crash on a corrupt file) is replaced, the file
getting ``ok: false`` with the reason either way.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from indexers.base import ExtractResult, Indexer
from indexers.settings import IndexerSettings

log = logging.getLogger(__name__)

#: Extra time the parent waits past the worker's own deadline before killing it.
GRACE_S = 2.0
#: Time a new worker has to import its indexers and say it is ready.
STARTUP_TIMEOUT_S = 60.0
_READY = "ready"
_CHILD = "import sys; from indexers.worker import main; main(sys.argv[1:])"


def _serve(conn: _Duplex) -> None:
    """The worker's main loop: setup, then a path in, an ExtractResult out, until None."""
    for entry in conn.recv():  # the parent's import path first: indexers may live there
        if entry not in sys.path:
            sys.path.append(entry)
    indexers, settings = conn.recv()
    from indexers.registry import extract_inline

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if settings.max_memory_mb:
        import resource

        limit = settings.max_memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    conn.send(_READY)
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        conn.send(extract_inline(indexers, path, settings))


def main(argv: Sequence[str]) -> None:
    """The worker process's entry point, given its two pipe descriptors."""
    read_fd, write_fd = int(argv[0]), int(argv[1])
    # Keep standard output free: anything a library prints goes to standard error.
    os.dup2(2, 1)
    conn_in = Connection(read_fd, writable=False)
    conn_out = Connection(write_fd, readable=False)
    _serve(_Duplex(conn_in, conn_out))


class _Duplex:
    """Two one-way connections (two pipes) as one."""

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self.reader, self.writer = reader, writer

    def send(self, obj: Any) -> None:
        self.writer.send(obj)

    def recv(self) -> Any:
        return self.reader.recv()

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class ProcessExtractor:
    """Runs extraction in one worker process at a time; thread-safe, restartable."""

    def __init__(self, indexers: Sequence[Indexer], settings: IndexerSettings) -> None:
        self._indexers = tuple(indexers)
        self._settings = settings
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: _Duplex | None = None
        #: How many workers were started (1 + restarts), for tests and metrics.
        self.started = 0

    def extract(self, path: str) -> ExtractResult:
        with self._lock:
            conn = self._ensure_worker()
            if conn is None:
                return ExtractResult.failure(path, "the reader process could not be started")
            wait_s = self._settings.timeout_s + GRACE_S
            try:
                conn.send(path)
                if conn.poll(wait_s):
                    result: Any = conn.recv()
                    if isinstance(result, ExtractResult):
                        return result
                    self._stop(kill=True)
                    return ExtractResult.failure(path, "the reader process answered nonsense")
            except (EOFError, OSError, BrokenPipeError):
                return ExtractResult.failure(path, self._death_reason())
            self._stop(kill=True)
            return ExtractResult.failure(
                path,
                f"timed out: no result within the time bound of {self._settings.timeout_s:g} s; "
                "the reader was stopped",
                elapsed_s=wait_s,
            )

    def _ensure_worker(self) -> _Duplex | None:
        if self._process is not None and self._process.poll() is None and self._conn is not None:
            return self._conn
        self._stop(kill=True)
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            log.error("the indexer worker could not be started: %s", exc)
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            return None
        os.close(to_child_r)
        os.close(from_child_w)
        conn = _Duplex(
            Connection(from_child_r, writable=False), Connection(to_child_w, readable=False)
        )
        self.started += 1
        self._process, self._conn = process, conn
        try:
            conn.send(list(sys.path))
            conn.send((self._indexers, self._settings))
            if conn.poll(STARTUP_TIMEOUT_S) and conn.recv() == _READY:
                return conn
        except (EOFError, OSError):
            pass
        log.error("the indexer worker did not start (exit status %s)", process.poll())
        self._stop(kill=True)
        return None

    def _death_reason(self) -> str:
        process = self._process
        code = None
        if process is not None:
            try:
                code = process.wait(5)
            except subprocess.TimeoutExpired:
                code = None
        self._stop(kill=True)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the reader process died ({name}) while reading this file"
        return f"the reader process exited (status {code}) while reading this file"

    def _stop(self, *, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            if not kill:
                try:
                    conn.send(None)
                except (OSError, BrokenPipeError):
                    pass
            conn.close()
        if process is not None:
            if kill and process.poll() is None:
                process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        with self._lock:
            self._stop(kill=False)
