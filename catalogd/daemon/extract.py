"""Extraction workers: threads, each driving its own indexer process.

h5py serialises threads behind one lock, so the reading happens in worker processes:
each :class:`ExtractWorker` thread owns one :class:`~indexers.registry.Registry` (whose
worker process does the reading) and takes batches from a bounded queue, so the
number of files read at once is ``extract_workers`` and the backlog is bounded.

After reading, the file is stat'ed again: if it changed meanwhile (a writer came back)
the document is not stored and the path is handed back for another look; if it is
gone, nothing is stored (its delete event does the rest).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from catalogd.daemon.coalesce import Work
from catalogd.daemon.pipeline import merge_result
from catalogd.document import FileDocument
from catalogd.errors import CatalogdError
from catalogd.store.base import Fingerprint, Store
from indexers.registry import Registry

log = logging.getLogger(__name__)

#: How often a worker waiting for a batch checks whether to stop.
GET_SLICE_S = 0.2
#: Read at start, so the indexer process (and h5py) is loaded before the first file
#: arrives: the first file's latency is then no worse than the others'.
WARMUP_PATH = "/nonexistent/catalogd-warm-up"


@dataclass(frozen=True, slots=True)
class Batch:
    items: tuple[tuple[Work, FileDocument], ...]


@dataclass(frozen=True, slots=True)
class Done:
    """What a worker did with one batch (sent back to the daemon's loop)."""

    stored: tuple[FileDocument, ...]
    #: Work to look at again: the file changed while it was read.
    again: tuple[Work, ...]
    #: Every path of the batch (no longer being read).
    paths: tuple[str, ...]
    failures: int = 0


@dataclass
class ExtractCounters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    extracted: int = 0
    failures: int = 0
    changed_while_read: int = 0

    def add(self, extracted: int, failures: int, changed: int) -> None:
        with self.lock:
            self.extracted += extracted
            self.failures += failures
            self.changed_while_read += changed


class ExtractWorker(threading.Thread):
    """Takes :class:`Batch` es from ``inbox`` until it gets None or is aborted."""

    def __init__(
        self,
        index: int,
        inbox: queue.Queue[Batch | None],
        outbox: Callable[[Done], None],
        store: Store,
        registry_factory: Callable[[], Registry],
        counters: ExtractCounters,
        *,
        clock: Callable[[], float] = time.time,
        lstat: Callable[[str], os.stat_result] = os.lstat,
    ) -> None:
        super().__init__(name=f"catalogd-extract-{index}", daemon=True)
        self.inbox = inbox
        self.outbox = outbox
        self.store = store
        self.registry_factory = registry_factory
        self.counters = counters
        self.clock = clock
        self._lstat = lstat
        #: Set when stopping past the bound: results read from now on are dropped.
        self.aborted = threading.Event()
        self._registry: Registry | None = None
        self._registry_lock = threading.Lock()

    def run(self) -> None:
        # Ctrl-C reaches the whole foreground process group: the indexer processes this
        # thread starts inherit the blocked SIGINT, so only the daemon decides to stop.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            try:
                self._get_registry().extract(WARMUP_PATH)
            except (CatalogdError, OSError) as exc:
                log.warning("the indexers could not be started: %s", exc)
            while not self.aborted.is_set():
                try:
                    batch = self.inbox.get(timeout=GET_SLICE_S)
                except queue.Empty:
                    continue
                if batch is None:
                    return
                self.outbox(self._process(batch))
        finally:
            self._close_registry()

    def abort(self) -> None:
        """Stop now: drop what is being read and kill the indexer process."""
        self.aborted.set()
        self._close_registry()

    def _close_registry(self) -> None:
        with self._registry_lock:
            registry, self._registry = self._registry, None
        if registry is not None:
            try:
                registry.close()
            except Exception:  # closing must not hide why we stop
                log.exception("closing the indexers of %s failed", self.name)

    def _get_registry(self) -> Registry:
        with self._registry_lock:
            if self._registry is None:
                self._registry = self.registry_factory()
            return self._registry

    def _process(self, batch: Batch) -> Done:
        paths = tuple(work.path for work, _ in batch.items)
        try:
            registry = self._get_registry()
            results = {r.path: r for r in registry.extract_many(list(paths))}
        except (CatalogdError, OSError) as exc:
            log.error("extraction failed for a batch of %d files: %s", len(paths), exc)
            return Done((), tuple(w for w, _ in batch.items), paths, failures=len(paths))
        if self.aborted.is_set():
            return Done((), (), paths)
        stored: list[FileDocument] = []
        again: list[Work] = []
        failures = 0
        for work, doc in batch.items:
            result = results.get(doc.path)
            try:
                st = self._lstat(doc.path)
            except OSError:
                continue  # gone: its delete is (or was) handled by the daemon
            if not Fingerprint.of_stat(doc.id, doc.path, st).same_content(
                Fingerprint.of_document(doc)
            ):
                again.append(work)
                continue
            if result is None:  # pragma: no cover - the registry answers every path
                continue
            failures += not result.ok
            stored.append(merge_result(doc, result, self.clock()))
        if stored and self.aborted.is_set():
            return Done((), (), paths)
        if stored:
            try:
                self.store.put(stored)
            except CatalogdError as exc:
                if self.aborted.is_set():
                    # Stopping past the bound (the store may be closed by now): the daemon
                    # already said these files are read at the next start, and its last
                    # line must stay the reason it stopped.
                    log.debug("dropped %d documents while stopping: %s", len(stored), exc.message)
                    return Done((), (), paths)
                # Not stored (the store, or its spool's disk, failed): the files are read
                # again after a quiet period, and this thread keeps working.
                log.error("cannot store %d documents: %s", len(stored), exc.message)
                retry = tuple(w for w, _ in batch.items)
                return Done((), retry, paths, failures=len(stored))
        self.counters.add(len(stored), failures, len(again))
        return Done(tuple(stored), tuple(again), paths, failures)
