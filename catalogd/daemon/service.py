"""The daemon: events → coalesce → pipeline → store, kept true to the disk.

One loop thread owns the coalescer and the pipeline and makes every decision; around
it:

- the **event source** (fanotify or inotify, :func:`catalogd.sources.open_source`) puts
  events into a bounded queue; when the loop falls behind, the source waits, the kernel
  queue fills and overflows, and the overflow becomes a rescan: back-pressure, never
  unbounded memory. The loop also stops reading events while ``queue_size`` paths are
  pending;
- **extraction workers** (:mod:`catalogd.daemon.extract`) read HDF5 files in indexer
  processes, from a bounded queue;
- one **reconcile thread** (:mod:`catalogd.daemon.reconcile`) walks subtrees: the root
  at start (catching up after a crash or a stop), every ``reconcile_interval_s``, after
  an overflow, for a directory moved in, and, every ``poll_interval_s``, subtrees that
  cannot be watched (or the whole root in poll-only mode).

:meth:`Daemon.run` blocks until :meth:`Daemon.request_stop` (SIGTERM); then the source
is stopped, what is due is finished, the workers get until ``stop_timeout_s`` and the
store is flushed. What was not finished is found by the reconcile at the next start.

Operations: the loop tells systemd how it is (:mod:`catalogd.daemon.notify`: ``READY=1``
once watching, ``STATUS=`` lines for the reconcile and a degraded store, ``WATCHDOG=1``
from the loop itself, ``STOPPING=1``), counts what it does in :mod:`catalogd.metrics`
(the store is wrapped in a :class:`~catalogd.metrics.MeteredStore` that times its
writes), and, given ``listen``, answers ``/healthz``, ``/readyz`` and ``/metrics``
(:mod:`catalogd.daemon.http`) from threads of its own.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from catalogd import logs
from catalogd.config import DaemonSettings, Settings
from catalogd.daemon import readiness
from catalogd.daemon.coalesce import Coalescer, Work
from catalogd.daemon.extract import Batch, Done, ExtractCounters, ExtractWorker
from catalogd.daemon.http import HealthListener, ListenerUnavailable
from catalogd.daemon.notify import Notifier
from catalogd.daemon.pipeline import Pipeline, StepKind
from catalogd.daemon.reconcile import ReconcileResult, confirm_gone, reconcile
from catalogd.errors import CatalogdError
from catalogd.events import Event, Moved, Overflow, PathEvent, SourceFailed, Unwatched
from catalogd.layout import LayoutConfig
from catalogd.metrics import INDEXERS_UNAVAILABLE, DaemonMetrics, MeteredStore, store_health
from catalogd.policy import make_policy
from catalogd.sources import EventSource, open_source
from catalogd.store.base import Fingerprint, Store
from catalogd.violations import Violation
from indexers.registry import Registry

log = logging.getLogger(__name__)

#: The loop's longest sleep when nothing is due (it wakes for events at once).
IDLE_WAIT_S = 0.25
#: Its sleep while workers or a reconcile may hand something back.
BUSY_WAIT_S = 0.02
#: Events taken from the queue per round, at most.
EVENTS_PER_ROUND = 5000
#: Files per extraction batch, at most.
EXTRACT_BATCH = 16
#: Batches waiting for the extraction workers, per worker.
EXTRACT_QUEUE_PER_WORKER = 4
#: Wait before a path that is being read is looked at again.
IN_FLIGHT_RETRY_S = 0.1
#: How often status.json is rewritten (when something changed).
STATUS_INTERVAL_S = 1.0
STATUS_FILE = "status.json"
#: /healthz fails when the loop has not turned for this long (it turns at least every
#: IDLE_WAIT_S; a store write that retries may hold it for tens of seconds).
HEALTHZ_STALE_S = 120.0
#: Open violations are counted again (for the metrics) this often when the audit
#: records changed, and at least every VIOLATIONS_FULL_REFRESH_S.
VIOLATIONS_REFRESH_S = 10.0
VIOLATIONS_FULL_REFRESH_S = 300.0

EventFilter = Callable[[Event], bool]


@dataclass
class DaemonStats:
    source: str = ""
    reason: str = ""
    root: str = ""
    started_at: float = 0.0
    watching: bool = False
    reconciled_at_start: bool = False
    events: int = 0
    overflows: int = 0
    unwatched: list[str] = field(default_factory=list)
    stored: int = 0
    extracted: int = 0
    extraction_failures: int = 0
    deleted: int = 0
    deferred: int = 0
    attrib_only: int = 0
    policy_checks: int = 0
    reconciles: int = 0
    last_reconcile: dict[str, Any] = field(default_factory=dict)
    pending: int = 0
    in_flight: int = 0
    stopped_cleanly: bool = False
    #: Where /healthz, /readyz and /metrics answer ("" when not listening).
    listen: str = ""


@dataclass(frozen=True, slots=True)
class _Request:
    root: str
    directories: bool = True


class Daemon:
    """``catalogd run``. Build it, then :meth:`run` (blocking) or :meth:`start`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        reload: Callable[[], Settings] | None = None,
        registry_factory: Callable[[], Registry] | None = None,
        event_filter: EventFilter | None = None,
        source_factory: Callable[[str, queue.Queue[Event]], EventSource] | None = None,
        notifier: Notifier | None = None,
        metrics: DaemonMetrics | None = None,
        listen: str | None = None,
    ) -> None:
        self.settings = settings
        self.config: DaemonSettings = settings.daemon
        #: Prometheus metrics (their own registry unless one is given).
        self.metrics = metrics if metrics is not None else DaemonMetrics()
        self.store: Store = MeteredStore(store, self.metrics, on_audit=self._audit_recorded)
        #: sd_notify (a no-op outside systemd); the loop pings its watchdog.
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        #: ``[daemon] listen`` for the HTTP listener (None or "": none).
        self._listen = listen
        self._listener: HealthListener | None = None
        self.layout: LayoutConfig = settings.layout_config()
        #: What this daemon watches, reconciles and owns: ``[watch] subtree`` (several
        #: daemons on disjoint subtrees share one catalogue), else the data root.
        self.root = settings.watch.watched()
        self._reload_settings = reload
        # Each extraction thread owns a registry; one reader process each, so the daemon
        # reads ``[daemon] extract_workers`` files at once, not that many times the pool.
        self._registry_factory = registry_factory or (
            lambda: Registry.from_entry_points(
                settings=self.settings.reading(self.layout, workers=1)
            )
        )
        #: A test hook: events for which it returns False are dropped (lost on purpose).
        self._event_filter = event_filter
        self._source_factory = source_factory
        self.events: queue.Queue[Event] = queue.Queue(maxsize=self.config.queue_size)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.stats = DaemonStats(root=self.root)
        self.counters = ExtractCounters()
        self.coalescer = Coalescer(quiet_period_s=self.config.quiet_period_s)
        self.pipeline = Pipeline(
            self.store,
            self.layout,
            make_policy(settings.policy, self.layout),
            hdf5_suffixes=settings.indexers.hdf5_suffixes,
            quiet_period_s=self.config.quiet_period_s,
            writer_timeout_s=self.config.writer_timeout_s,
        )
        self.source: EventSource | None = None
        self._in_flight: set[str] = set()
        self._backlog: collections.deque[Batch] = collections.deque()
        self._extract_q: queue.Queue[Batch | None] = queue.Queue(
            maxsize=self.config.extract_workers * EXTRACT_QUEUE_PER_WORKER
        )
        self._workers: list[ExtractWorker] = []
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._queued: set[_Request] = set()
        self._queued_lock = threading.Lock()
        self._reconciling = threading.Event()
        self._reconcile_stop = threading.Event()
        self._reconciler: threading.Thread | None = None
        self._polled: set[str] = set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_status: dict[str, Any] = {}
        self._tick = time.monotonic()
        #: /healthz fails when the loop has not turned for this long.
        self.healthz_stale_s = HEALTHZ_STALE_S
        self._stopping = False
        self._health: dict[str, Any] = {"state": "ok"}
        self._violations_dirty = False
        self._next_violations = 0.0
        self._reconcile_found = 0
        self._watch_queue_depths()

    # -- control -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop soon (safe from a signal handler)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the configuration soon (safe from a signal handler)."""
        self._reload.set()

    def start(self) -> None:
        """Run in a thread (tests, embedding); returns once the source is watching."""
        self._thread = threading.Thread(target=self._run_in_thread, name="catalogd-daemon")
        self._thread.start()
        while not self.started.wait(0.05):
            if not self._thread.is_alive():
                break
        if self._error is not None:
            raise self._error

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self._error = exc
            self.started.set()
            raise

    def stop(self) -> None:
        """Stop a daemon started with :meth:`start` and wait for it."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(self.config.stop_timeout_s + 10.0)
        if self._error is not None:
            raise self._error

    @property
    def busy(self) -> bool:
        """Something is pending, being read or being reconciled (approximate)."""
        return bool(
            len(self.coalescer)
            or self._in_flight
            or self._backlog
            or not self.events.empty()
            or not self._inbox.empty()
            or self._reconciling.is_set()
            or not self._requests.empty()
        )

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Watch, index and reconcile until :meth:`request_stop`."""
        self.stats.started_at = time.time()
        self.metrics.started.set(self.stats.started_at)
        self._open_listener()
        try:
            self._run()
        finally:
            if self._listener is not None:
                self._listener.close()
            self.notifier.close()

    def _run(self) -> None:
        open_now = self.store.violations(path_prefix=self.root)
        self.pipeline.open_violations = {v.path for v in open_now}
        self._count_violations(open_now)
        self._start_source()
        for i in range(self.config.extract_workers):
            worker = ExtractWorker(
                i,
                self._extract_q,
                self._on_done,
                self.store,
                self._registry_factory,
                self.counters,
            )
            worker.start()
            self._workers.append(worker)
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, name="catalogd-reconcile", daemon=True
        )
        self._reconciler.start()
        if self.config.reconcile_at_start or self.config.polling:
            self.request_reconcile(self.root)
        else:
            self.stats.reconciled_at_start = True
        now = time.monotonic()
        next_reconcile = self._next(now, self.config.reconcile_interval_s)
        next_poll = now + self.config.poll_interval_s
        next_status = now
        self.started.set()
        self._refresh_health(now)
        self.notifier.ready(self.status_line())
        try:
            while not self._stop.is_set():
                self._tick = time.monotonic()
                self.notifier.watchdog()
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                self._pump_events(self._wait_time())
                self._drain_inbox()
                self._dispatch()
                now = time.monotonic()
                if next_reconcile is not None and now >= next_reconcile:
                    self.request_reconcile(self.root)
                    next_reconcile = self._next(now, self.config.reconcile_interval_s)
                if now >= next_poll:
                    next_poll = now + self.config.poll_interval_s
                    for path in sorted(self._polled):
                        self.request_reconcile(path)
                if now >= next_status:
                    next_status = now + STATUS_INTERVAL_S
                    self._refresh_health(now)
                    self.write_status()
        finally:
            self._shutdown()

    @staticmethod
    def _next(now: float, interval: float) -> float | None:
        return now + interval if interval > 0 else None

    def _wait_time(self) -> float:
        if self._in_flight or self._reconciling.is_set() or self._backlog:
            wait = BUSY_WAIT_S
        else:
            wait = IDLE_WAIT_S
        deadline = self.coalescer.next_deadline()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        return wait

    def _start_source(self) -> None:
        if self.config.polling:
            self.stats.source = "poll"
            self.stats.reason = (
                "poll-only mode: the tree is rescanned every "
                f"{self.config.poll_interval_s:g} s (events are not trusted here)"
            )
            self._polled.add(self.root)
        else:
            prefer = self.config.source
            assert prefer != "poll"
            if self._source_factory is not None:
                self.source = self._source_factory(self.root, self.events)
            else:
                self.source = open_source(self.root, self.events, prefer=prefer)
            self.source.start()
            self.stats.source = self.source.name
            self.stats.reason = self.source.reason
        self.stats.watching = True
        self.metrics.set_source(self.stats.source)
        log.info(
            "catalogd run: watching %s with %s: %s", self.root, self.stats.source, self.stats.reason
        )

    def _pump_events(self, wait: float) -> None:
        if len(self.coalescer) >= self.config.queue_size:
            # Back-pressure: leave events in the bounded queue until work drains.
            time.sleep(min(wait, BUSY_WAIT_S))
            return
        try:
            event = self.events.get(timeout=wait) if wait > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        self._on_event(event)
        for _ in range(EVENTS_PER_ROUND):
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._on_event(event)

    def _on_event(self, event: Event) -> None:
        if self._event_filter is not None and not self._event_filter(event):
            return
        self.stats.events += 1
        self.metrics.events.labels(source=self.stats.source or "unknown").inc()
        if isinstance(event, PathEvent | Moved):
            self.coalescer.add(event)
        elif isinstance(event, Overflow):
            self.stats.overflows += 1
            self.metrics.overflows.inc()
            log.warning("events were lost (%s): rescanning %s", event.reason, self.root)
            self.request_reconcile(self.root)
        elif isinstance(event, Unwatched):
            log.warning(
                "%s cannot be watched (%s): polling it every %g s",
                event.path,
                event.reason,
                self.config.poll_interval_s,
            )
            self.stats.unwatched.append(event.path)
            self._polled.add(event.path)
            self.request_reconcile(event.path)
        elif isinstance(event, SourceFailed):
            log.error(
                "the %s source failed (%s): polling %s every %g s from now on",
                event.source,
                event.reason,
                self.root,
                self.config.poll_interval_s,
            )
            self.stats.reason = f"{event.source} failed ({event.reason}); polling"
            self._polled.add(self.root)
            self.request_reconcile(self.root)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "work":
                self._reconcile_found += len(payload)
                self.metrics.events.labels(source="reconcile").inc(len(payload))
                for work in payload:
                    self.coalescer.add_work(work)
            elif kind == "done":
                self._finish(payload)
            elif kind == "gone":
                self._delete_gone(payload)
            elif kind == "reconciled":
                self._reconciled(payload)

    def _finish(self, done: Done) -> None:
        self._in_flight.difference_update(done.paths)
        for doc in done.stored:
            self.pipeline.remember(doc)
            if doc.error is not None:
                self.metrics.extraction_failed(doc.error)
        self.stats.stored += len(done.stored)
        self.metrics.files_indexed.inc(len(done.stored))
        self.metrics.files_extracted.inc(len(done.stored))
        if not done.stored and done.failures:
            self.metrics.extraction_failures.labels(reason=INDEXERS_UNAVAILABLE).inc(done.failures)
        for work in done.again:
            self.coalescer.defer(work, self.config.quiet_period_s)

    def _delete_gone(self, gone: list[Fingerprint]) -> None:
        ids = [
            fp.id for fp in gone if fp.path not in self.coalescer and fp.path not in self._in_flight
        ]
        if ids:
            self.store.delete(ids)
            self.pipeline.forget(fp.path for fp in gone)
            for fp in gone:
                self.pipeline.resolve(fp.path, recursive=False)
            self.stats.deleted += len(ids)
            self.metrics.files_deleted.inc(len(ids))

    def _reconciled(self, result: ReconcileResult) -> None:
        self.stats.reconciles += 1
        self.stats.last_reconcile = {
            "root": result.root,
            "files": result.files,
            "directories": result.directories,
            "new": result.new,
            "changed": result.changed,
            "attrib": result.attrib,
            "gone": len(result.gone),
            "complete": result.complete,
            "errors": len(result.errors),
            "elapsed_s": round(result.elapsed_s, 3),
        }
        if result.root == self.root and result.complete:
            self.stats.reconciled_at_start = True
        self.metrics.reconciled(
            duration_s=result.elapsed_s,
            complete=result.complete,
            whole_root=result.root == self.root,
        )
        log.info("reconciled %s: %s", result.root, self.stats.last_reconcile)

    def _on_done(self, done: Done) -> None:
        self._inbox.put(("done", done))

    # -- dispatch ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._feed_workers()
        if self._backlog:
            return  # back-pressure: the workers are behind
        due = self.coalescer.due(self.config.batch_size)
        if not due:
            return
        locks = readiness.read_locks()
        docs = []
        extract: list[tuple[Work, Any]] = []
        for work in due:
            if work.path in self._in_flight:
                self.coalescer.defer(work, IN_FLIGHT_RETRY_S)
                continue
            step = self.pipeline.handle(work, locks=locks)
            if step.kind is StepKind.STORE:
                assert step.doc is not None
                docs.append(step.doc)
                self.pipeline.remember(step.doc)
            elif step.kind is StepKind.EXTRACT:
                extract.append((work, step.doc))
                self._in_flight.add(work.path)
            elif step.kind is StepKind.DELETE:
                self.store.delete(step.ids)
                self.pipeline.forget([work.path])
                self.stats.deleted += 1
                self.metrics.files_deleted.inc()
            elif step.kind is StepKind.DEFER:
                log.debug("%s not ready: %s", work.path, step.reason)
                self.coalescer.defer(work, step.delay)
            elif step.kind is StepKind.SUBTREE:
                self.request_reconcile(work.path)
        if docs:
            self.store.put(docs)
            self.stats.stored += len(docs)
            self.metrics.files_indexed.inc(len(docs))
        if extract:
            size = max(1, min(EXTRACT_BATCH, -(-len(extract) // len(self._workers))))
            for start in range(0, len(extract), size):
                self._backlog.append(Batch(tuple(extract[start : start + size])))
            self._feed_workers()
        ps = self.pipeline.stats
        self.stats.deferred, self.stats.attrib_only = ps.deferred, ps.attrib_only
        self.stats.policy_checks = ps.policy_checks

    def _feed_workers(self) -> None:
        while self._backlog:
            try:
                self._extract_q.put_nowait(self._backlog[0])
            except queue.Full:
                return
            self._backlog.popleft()

    # -- reconciliation ----------------------------------------------------------------

    def request_reconcile(self, root: str, *, directories: bool = True) -> None:
        """Compare the subtree at ``root`` with the store (in the reconcile thread)."""
        request = _Request(root, directories)
        with self._queued_lock:
            if request in self._queued:
                return
            self._queued.add(request)
        self._requests.put(request)

    def _reconcile_loop(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            with self._queued_lock:
                self._queued.discard(request)
            self._reconciling.set()
            try:
                self._reconcile_one(request)
            except CatalogdError as exc:  # a store outage, say: one clear line, retried later
                log.error("reconcile of %s failed: %s", request.root, exc)
            except Exception:
                log.exception("reconcile of %s failed", request.root)
            finally:
                self._reconciling.clear()

    def _reconcile_one(self, request: _Request) -> None:
        self.store.flush()
        known = list(self.store.fingerprints(path_prefix=request.root))
        result = reconcile(
            request.root,
            known,
            emit=lambda works: self._inbox.put(("work", works)),
            policy=self.pipeline.policy,
            directories=request.directories,
            processes=min(self.settings.scan.workers, os.cpu_count() or 1),  # as the scan
            cross_mounts=self.settings.scan.cross_mounts,
            stop=self._reconcile_stop,
        )
        if result.complete and result.gone:
            gone = confirm_gone(result.gone)
            if gone:
                self._inbox.put(("gone", gone))
        self._inbox.put(("reconciled", result))

    # -- reload, status, stop ----------------------------------------------------------

    def reload(self) -> None:
        """Apply a new configuration (SIGHUP): what can change while running does;
        the rest is logged as needing a restart."""
        if self._reload_settings is None:
            log.info("SIGHUP: no configuration file to reload")
            return
        try:
            new = self._reload_settings()
        except CatalogdError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc.message)
            return
        # New secrets (a rotated password) are masked before anything else is logged;
        # the log format changes at once.
        logs.apply_settings(new)
        old = self.settings
        restart = [
            name
            for name, a, b in (
                ("watch.root", old.watch.root, new.watch.root),
                ("watch.subtree", old.watch.subtree, new.watch.subtree),
                ("store.url", old.store.url, new.store.url),
                ("store.engine", old.store.engine, new.store.engine),
                ("daemon.source", old.daemon.source, new.daemon.source),
                ("daemon.poll_only", old.daemon.poll_only, new.daemon.poll_only),
                ("daemon.extract_workers", old.daemon.extract_workers, new.daemon.extract_workers),
                ("daemon.queue_size", old.daemon.queue_size, new.daemon.queue_size),
                ("daemon.listen", old.daemon.listen, new.daemon.listen),
                ("layout", old.layout, new.layout),
                ("indexers", old.indexers, new.indexers),
            )
            if a != b
        ]
        if restart:
            log.warning("SIGHUP: %s changed: takes effect at the next start", ", ".join(restart))
        self.settings = old.model_copy(
            update={"policy": new.policy, "daemon": new.daemon, "log": new.log}
        )
        self.config = self.settings.daemon.model_copy(
            update={
                "source": old.daemon.source,
                "poll_only": old.daemon.poll_only,
                "extract_workers": old.daemon.extract_workers,
                "queue_size": old.daemon.queue_size,
            }
        )
        self.coalescer.quiet_period_s = self.config.quiet_period_s
        self.pipeline.quiet_period_s = self.config.quiet_period_s
        self.pipeline.writer_timeout_s = self.config.writer_timeout_s
        self.pipeline.policy = make_policy(self.settings.policy, self.layout)
        logging.getLogger("catalogd").setLevel(self.settings.log.level)
        log.info("SIGHUP: configuration reloaded")

    # -- health, readiness, metrics ----------------------------------------------------

    def _open_listener(self) -> None:
        if not self._listen:
            return
        try:
            self._listener = HealthListener(
                self._listen, self.metrics.registry, health=self.healthz, ready=self.readyz
            )
        except ListenerUnavailable as exc:
            # A busy port must not keep the catalogue from being maintained.
            log.error("%s: running without /healthz, /readyz and /metrics", exc.message)
            return
        self._listener.start()
        self.stats.listen = self._listener.address
        log.info("health and metrics on http://%s (/healthz, /readyz, /metrics)", self.stats.listen)

    def _watch_queue_depths(self) -> None:
        depth = self.metrics.queue_depth
        depth.labels(queue="events").set_function(self.events.qsize)
        depth.labels(queue="pending").set_function(lambda: len(self.coalescer))
        depth.labels(queue="extract").set_function(
            lambda: len(self._backlog) + self._extract_q.qsize()
        )
        depth.labels(queue="in_flight").set_function(lambda: len(self._in_flight))

    def _audit_recorded(self) -> None:
        self._violations_dirty = True

    def _count_violations(self, open_now: list[Violation]) -> None:
        self.metrics.set_open_violations(collections.Counter(v.rule for v in open_now))

    def _refresh_health(self, now: float) -> None:
        """Read the store's health, count violations when due, tell systemd (loop)."""
        try:
            self._health = store_health(self.store)
        except CatalogdError as exc:
            self._health = {"state": "degraded", "error": exc.message}
        self.metrics.set_store_health(self._health)
        due = self._violations_dirty and now >= self._next_violations
        if due or now >= self._next_violations + VIOLATIONS_FULL_REFRESH_S:
            self._violations_dirty = False
            self._next_violations = now + VIOLATIONS_REFRESH_S
            try:
                self._count_violations(self.store.violations(path_prefix=self.root))
            except CatalogdError as exc:
                log.warning("cannot count the open violations: %s", exc.message)
        self.metrics.ready.set(1 if self.readyz()[0] else 0)
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        """One line for systemd's STATUS= (and ``systemctl status``)."""
        health = self._health
        if health.get("state", "ok") != "ok":
            text = f"store {health.get('state')}"
            if health.get("spooled") is not None:
                text += f": {health['spooled']} writes spooled"
            if health.get("oldest_age_s") is not None:
                text += f" (oldest {float(health['oldest_age_s']):.0f} s)"
            if health.get("error"):
                text += f"; {logs.REDACTOR(str(health['error']))}"
            return text
        where = f"watching {self.root} with {self.stats.source}"
        if not self.stats.reconciled_at_start:
            return f"{where}; reconciling: {self._reconcile_found} paths to look at found so far"
        return (
            f"{where}; {self.stats.stored} documents written, "
            f"{len(self.coalescer) + len(self._in_flight)} paths pending"
        )

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the loop turned within ``healthz_stale_s`` (from any thread)."""
        age = time.monotonic() - self._tick
        ok = age < self.healthz_stale_s or self.stopped.is_set()
        return ok, {"status": "ok" if ok else "stalled", "loop_age_s": round(age, 3)}

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: watching, not stopping, and the store healthy (from any thread)."""
        store = dict(self._health)
        if "error" in store:
            store["error"] = logs.REDACTOR(str(store["error"]))
        watching = self.stats.watching and not self._stopping
        ok = watching and store.get("state", "ok") == "ok"
        if ok:
            status = "ready"
        elif not watching:
            status = "stopping" if self._stopping else "starting"
        else:
            status = "degraded"
        body = {
            "status": status,
            "source": self.stats.source,
            "watching": watching,
            "reconciled_at_start": self.stats.reconciled_at_start,
            "reconciling": self._reconciling.is_set(),
            "pending": len(self.coalescer),
            "in_flight": len(self._in_flight),
            "store": store,
            "uptime_s": round(time.time() - self.stats.started_at, 3)
            if self.stats.started_at
            else 0.0,
        }
        return ok, body

    def write_status(self) -> None:
        """Write status.json into ``state_dir`` (atomically), if one is configured."""
        self.stats.pending = len(self.coalescer)
        self.stats.in_flight = len(self._in_flight)
        self.stats.extracted = self.counters.extracted
        self.stats.extraction_failures = self.counters.failures
        if self.config.state_dir is None:
            return
        data = asdict(self.stats)
        store = dict(self._health)  # the store's health: "ok", or degraded and spooling
        if "error" in store:
            store["error"] = logs.REDACTOR(str(store["error"]))
        data["store"] = store
        if data == self._last_status:
            return
        self._last_status = data
        data = {**data, "pid": os.getpid()}
        try:
            os.makedirs(self.config.state_dir, exist_ok=True)
            target = os.path.join(self.config.state_dir, STATUS_FILE)
            tmp = f"{target}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.config.stop_timeout_s
        self._stopping = True
        self.metrics.ready.set(0)
        self.notifier.stopping(
            f"stopping: finishing what is due (at most {self.config.stop_timeout_s:g} s)"
        )
        log.info("stopping: finishing what is due (at most %g s)", self.config.stop_timeout_s)
        if self.source is not None:
            try:
                self.source.stop()
            except CatalogdError as exc:
                log.error("%s", exc.message)
        self._reconcile_stop.set()
        self._requests.put(None)
        # What is already due (closed files, deletes) is finished; files still in their
        # quiet period are left to the reconcile at the next start.
        try:
            while True:
                self._on_event(self.events.get_nowait())
        except queue.Empty:
            pass
        while time.monotonic() < deadline:
            self._drain_inbox()
            self._dispatch()
            if not self._in_flight and not self._backlog:
                nxt = self.coalescer.next_deadline()
                if nxt is None or nxt > time.monotonic():
                    break
            time.sleep(BUSY_WAIT_S)
        for _ in self._workers:
            try:
                self._extract_q.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if worker.is_alive():
                log.warning(
                    "%s did not finish in time: its files are read at the next start", worker.name
                )
                worker.abort()
                worker.join(5.0)
        if self._reconciler is not None:
            self._reconciler.join(max(0.1, deadline - time.monotonic()))
        self._drain_inbox()
        try:
            self.store.flush()
        except CatalogdError as exc:
            log.error("flushing the store failed: %s", exc.message)
        self.stats.watching = False
        self.stats.stopped_cleanly = True
        self.write_status()
        self.stopped.set()
        log.info("stopped")
