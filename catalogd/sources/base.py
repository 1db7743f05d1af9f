"""The event-source interface and the reader thread every kernel source shares.

A source is built (which acquires its kernel resources, so building it is how one
learns whether it can work here), then :meth:`EventSource.start` ed: from the moment
``start()`` returns, every change under the root is reported into the queue given at
construction. :meth:`EventSource.stop` stops the reader thread within a bound and
releases every file descriptor; a source that was never started is released too.
"""

from __future__ import annotations

import abc
import logging
import os
import queue
import select
import threading
from types import TracebackType

from catalogd.errors import CatalogdError
from catalogd.events import Event, SourceFailed

log = logging.getLogger(__name__)

#: How long ``stop()`` waits for the reader thread before giving up.
STOP_TIMEOUT_S = 5.0
#: How often a reader blocked on a full consumer queue checks whether to stop.
PUT_RETRY_S = 0.1

EventQueue = queue.Queue[Event]


class SourceError(CatalogdError):
    """An event source could not be used or stopped."""


class SourceUnavailable(SourceError):
    """This kind of source cannot work here; the message says why (with the errno)."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class EventSource(abc.ABC):
    """Watches a directory tree and puts :data:`catalogd.events.Event` s into a queue.

    ``name`` is the kind of source (``"fanotify"``, ``"inotify"``); ``reason`` says why
    it was chosen (set by :func:`catalogd.sources.open_source`). If the consumer's queue
    is bounded and full, the reader waits; the kernel queue then fills and overflows,
    which is reported as an :class:`~catalogd.events.Overflow`: back-pressure, never
    unbounded memory in this process.
    """

    name: str = "abstract"

    def __init__(self, root: str, events: EventQueue, *, reason: str = "") -> None:
        self.root = os.path.realpath(root)
        self.reason = reason
        self._events = events
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Begin reporting. Returns once every change from now on will be seen."""
        if self._closed:
            raise SourceError(f"{self.name} source for {self.root} is stopped")
        if self._thread is not None:
            raise SourceError(f"{self.name} source for {self.root} is already started")
        self._prepare()
        self._thread = threading.Thread(
            target=self._run, name=f"catalogd-{self.name}-source", daemon=True
        )
        self._thread.start()
        log.info("%s source watching %s (%s)", self.name, self.root, self.reason)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the reader thread (within ``timeout`` seconds) and close every file
        descriptor. Idempotent. Events still in the kernel queue are dropped."""
        if self._closed:
            return
        self._stopping.set()
        if self._thread is not None:
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise SourceError(f"{self.name} source thread did not stop in {timeout} s")
        self._closed = True
        self._release()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EventSource:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} root={self.root!r} reason={self.reason!r}>"

    # -- what a kernel source implements ---------------------------------------------

    @abc.abstractmethod
    def fileno(self) -> int:
        """The descriptor to poll for events."""

    def _prepare(self) -> None:  # noqa: B027 - optional hook
        """Called by ``start()`` before the thread starts (e.g. to add watches)."""

    @abc.abstractmethod
    def _read(self) -> list[Event]:
        """Read what the kernel has (the descriptor is readable) and translate it."""

    def _idle(self) -> list[Event]:
        """Called when a poll timed out (see ``_poll_timeout_ms``)."""
        return []

    def _poll_timeout_ms(self) -> int | None:
        """How long to wait for the kernel; ``None``: until something happens."""
        return None

    @abc.abstractmethod
    def _release(self) -> None:
        """Close the kernel descriptors (the thread has stopped)."""

    # -- the reader thread -----------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopping.is_set():
                ready = poller.poll(self._poll_timeout_ms())
                if self._stopping.is_set():
                    return
                batch = self._read() if ready else self._idle()
                for event in batch:
                    if not self._emit(event):
                        return
        except Exception as exc:  # the thread must not die silently
            log.exception("%s source for %s failed", self.name, self.root)
            self._emit(SourceFailed(self.name, f"{type(exc).__name__}: {exc}"))

    def _emit(self, event: Event) -> bool:
        """Put ``event`` in the queue, waiting for room; False if told to stop first."""
        while True:
            try:
                self._events.put(event, timeout=PUT_RETRY_S)
                return True
            except queue.Full:
                if self._stopping.is_set():
                    return False
