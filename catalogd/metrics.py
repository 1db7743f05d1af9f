"""The daemon's Prometheus metrics, on its own registry.

:class:`DaemonMetrics` holds every metric ``catalogd run`` exports on its listener's
``/metrics`` (:mod:`catalogd.daemon.http`); it has its own
:class:`~prometheus_client.CollectorRegistry`, so several daemons in one process (the
tests) and the API's metrics never mix. Names carry the ``catalogd_`` prefix and their
unit; counters end in ``_total``.

Labels are bounded, and never carry a path or a message: an extraction failure is
counted by its *reason* (:func:`failure_reason`, a handful of classes), a violation by
its rule id, an event by the source that saw it.

:class:`MeteredStore` wraps the daemon's store and times its writes (the
``catalogd_store_write_duration_seconds`` histogram). For the embedded SQLite store a
``put`` hands the batch to the writer thread, so its time is the wait to hand it over
(back-pressure included); ``flush`` is the time until it is durable. For Elasticsearch
a ``put`` is the bulk request itself.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from catalogd import __version__
from catalogd.document import FileDocument
from catalogd.store.base import Fingerprint, SearchQuery, SearchResult, Store
from catalogd.violations import Violation, ViolationState

#: Buckets of the store write histogram, in seconds (a batch of a few hundred
#: documents: milliseconds on SQLite, tens to hundreds on Elasticsearch, seconds when
#: it retries).
WRITE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Classes of extraction failures (the ``reason`` label), matched against the error
#: text in order; anything else is ``invalid`` (the file could be read but not parsed).
FAILURE_REASONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("timeout", ("timed out",)),
    ("memory", ("memory bound",)),
    ("not_hdf5", ("not an hdf5 file",)),
    ("reader_crashed", ("reader process",)),
    ("internal", ("internal error",)),
    ("unreadable", ("permission denied", "no such file", "input/output error", "cannot open")),
)
#: The reason of a whole batch that failed because the indexers could not be used.
INDEXERS_UNAVAILABLE = "indexers_unavailable"


def failure_reason(error: str | None) -> str:
    """The bounded class of an extraction error message."""
    text = (error or "").lower()
    for reason, needles in FAILURE_REASONS:
        if any(needle in text for needle in needles):
            return reason
    return "invalid"


class DaemonMetrics:
    """Every metric of ``catalogd run``; see the metrics list in docs/operations.md."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.info = Info("catalogd", "The running catalogd: version, event source.", registry=r)
        self.info.info({"version": __version__, "source": ""})
        self.ready = Gauge(
            "catalogd_ready", "1 when watching and the store is healthy, else 0.", registry=r
        )
        self.events = Counter(
            "catalogd_events_received",
            "Change notifications received, by source (fanotify, inotify; 'reconcile' "
            "counts the paths a reconcile or poll walk found changed).",
            ["source"],
            registry=r,
        )
        self.overflows = Counter(
            "catalogd_event_overflows",
            "Times the kernel's event queue overflowed (each triggers a rescan).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "catalogd_queue_depth",
            "Work waiting, by queue: events (not yet coalesced), pending (paths waiting for "
            "their quiet period), extract (batches waiting for a reader), in_flight (files "
            "being read).",
            ["queue"],
            registry=r,
        )
        self.files_indexed = Counter(
            "catalogd_files_indexed",
            "Documents written to the catalogue (with or without extracted metadata).",
            registry=r,
        )
        self.files_extracted = Counter(
            "catalogd_files_extracted",
            "Files whose metadata the indexers read (failures included).",
            registry=r,
        )
        self.files_deleted = Counter(
            "catalogd_files_deleted", "Documents removed because their file is gone.", registry=r
        )
        self.extraction_failures = Counter(
            "catalogd_extraction_failures",
            "Files whose metadata could not be read, by reason.",
            ["reason"],
            registry=r,
        )
        self.open_violations = Gauge(
            "catalogd_open_violations",
            "Open data-policy violations in the catalogue, by rule.",
            ["rule"],
            registry=r,
        )
        self.store_write = Histogram(
            "catalogd_store_write_duration_seconds",
            "Time of the daemon's store writes, by operation (put, delete, audit, flush).",
            ["operation"],
            buckets=WRITE_BUCKETS_S,
            registry=r,
        )
        self.store_errors = Counter(
            "catalogd_store_write_errors",
            "Store writes that raised an error, by operation.",
            ["operation"],
            registry=r,
        )
        self.spool = Gauge(
            "catalogd_spool_documents",
            "Writes held in the local spool while the store is unreachable.",
            registry=r,
        )
        self.spool_oldest = Gauge(
            "catalogd_spool_oldest_age_seconds",
            "Age of the oldest spooled write (0 when the spool is empty).",
            registry=r,
        )
        self.reconciles = Counter(
            "catalogd_reconciles",
            "Reconcile passes finished, by whether they were complete.",
            ["complete"],
            registry=r,
        )
        self.reconcile_duration = Gauge(
            "catalogd_last_reconcile_duration_seconds",
            "Duration of the last reconcile of the whole root (NaN before the first).",
            registry=r,
        )
        self.reconcile_finished = Gauge(
            "catalogd_last_reconcile_timestamp_seconds",
            "When the last reconcile of the whole root finished (Unix time; NaN before).",
            registry=r,
        )
        self.reconcile_age = Gauge(
            "catalogd_last_reconcile_age_seconds",
            "Seconds since the last reconcile of the whole root finished (NaN before).",
            registry=r,
        )
        self.started = Gauge(
            "catalogd_start_time_seconds", "When the daemon started (Unix time).", registry=r
        )
        self._reconciled_at = math.nan
        self.reconcile_duration.set(math.nan)
        self.reconcile_finished.set(math.nan)
        self.reconcile_age.set_function(self._reconcile_age)
        self._known_rules: set[str] = set()
        self._rules_lock = threading.Lock()

    def _reconcile_age(self) -> float:
        if math.isnan(self._reconciled_at):
            return math.nan
        return max(0.0, time.time() - self._reconciled_at)

    def set_source(self, source: str) -> None:
        self.info.info({"version": __version__, "source": source})

    def reconciled(self, *, duration_s: float, complete: bool, whole_root: bool) -> None:
        self.reconciles.labels(complete=str(complete).lower()).inc()
        if whole_root and complete:
            self._reconciled_at = time.time()
            self.reconcile_duration.set(duration_s)
            self.reconcile_finished.set(self._reconciled_at)

    def extraction_failed(self, error: str | None, count: int = 1) -> None:
        self.extraction_failures.labels(reason=failure_reason(error)).inc(count)

    def set_open_violations(self, by_rule: Mapping[str, int]) -> None:
        """The open violations per rule; rules seen before and now clean go to 0."""
        with self._rules_lock:
            self._known_rules |= set(by_rule)
            for rule in self._known_rules:
                self.open_violations.labels(rule=rule).set(by_rule.get(rule, 0))

    def set_store_health(self, health: Mapping[str, Any]) -> None:
        self.spool.set(float(health.get("spooled") or 0))
        self.spool_oldest.set(float(health.get("oldest_age_s") or 0.0))


def store_health(store: Store) -> dict[str, Any]:
    """A copy of ``store.health()`` (``{"state": "ok"}`` or degraded, with the spool)."""
    return dict(store.health())


class MeteredStore(Store):
    """``store``, with the time and failures of its writes recorded; reads pass through.

    Every public method of :class:`~catalogd.store.base.Store` is delegated explicitly
    (a test checks that none is left to the base class's default)."""

    def __init__(
        self, store: Store, metrics: DaemonMetrics, *, on_audit: Callable[[], None] | None = None
    ) -> None:
        self.inner = store
        self.metrics = metrics
        self.url = store.url
        self._on_audit = on_audit

    def _timed(self, operation: str, call: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            call()
        except BaseException:
            self.metrics.store_errors.labels(operation=operation).inc()
            raise
        finally:
            self.metrics.store_write.labels(operation=operation).observe(
                time.perf_counter() - started
            )

    def put(self, docs: Iterable[FileDocument]) -> None:
        batch = list(docs)
        self._timed("put", lambda: self.inner.put(batch))

    def delete(self, ids: Iterable[str]) -> None:
        batch = list(ids)
        self._timed("delete", lambda: self.inner.delete(batch))

    def record_audit(
        self,
        findings: Iterable[Violation],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
    ) -> None:
        batch = list(findings)
        self._timed(
            "audit",
            lambda: self.inner.record_audit(
                batch, scope=scope, seen_at=seen_at, recursive=recursive
            ),
        )
        if self._on_audit is not None:
            self._on_audit()

    def flush(self) -> None:
        self._timed("flush", self.inner.flush)

    def get(
        self,
        doc_id: str,
        *,
        groups: frozenset[str] | None = None,
        public_before: str | None = None,
    ) -> FileDocument | None:
        return self.inner.get(doc_id, groups=groups, public_before=public_before)

    def search(self, query: SearchQuery) -> SearchResult:
        return self.inner.search(query)

    def iter_documents(self, *, path_prefix: str | None = None) -> Iterator[FileDocument]:
        return self.inner.iter_documents(path_prefix=path_prefix)

    def fingerprints(self, *, path_prefix: str | None = None) -> Iterator[Fingerprint]:
        return self.inner.fingerprints(path_prefix=path_prefix)

    def count(self) -> int:
        return self.inner.count()

    def violations(
        self,
        *,
        state: ViolationState = ViolationState.OPEN,
        path_prefix: str | None = None,
    ) -> list[Violation]:
        return self.inner.violations(state=state, path_prefix=path_prefix)

    def health(self) -> dict[str, Any]:
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()
