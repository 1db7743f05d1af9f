"""Coalescing: many events for one path become one piece of work, when it is due.

Pure: no I/O, and the clock is injected. Per path, what happened is merged into one
:class:`Work` (content may have changed, attributes only, gone, a whole subtree to look
at) with a deadline:

- a write (``CREATED``, ``MODIFIED``) starts or extends the *quiet period*: the path is
  due once nothing happened to it for ``quiet_period_s``;
- a close after writing (``CLOSED_WRITE``) and a rename into place (``MOVED_TO``,
  :class:`~catalogd.events.Moved`) cut it short: the writer is done, the path is due now;
- a delete (``DELETED``, ``MOVED_FROM``) is due now; for a directory, its subtree is gone;
- an attribute change (``ATTRIB``) alone is flagged ``attrib`` (the policy is checked
  again, nothing is re-extracted) and waits a quiet period, so ``chmod -R`` coalesces;
- a synthetic ``CREATED`` (found by listing a new directory) may never get its close:
  the quiet period decides, and the readiness check (:mod:`catalogd.daemon.readiness`)
  looks at the file itself.

Every event is a hint: the pipeline re-stats the path when the work is due.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from catalogd.events import EventKind, Moved, PathEvent

#: How long a path waits, by default, after its last event.
QUIET_PERIOD_S = 2.0


@dataclass(frozen=True, slots=True)
class Work:
    """What is to be done for one path. Flags are hints; the pipeline re-stats."""

    path: str
    #: The content may have changed (extract again if the file's fingerprint changed).
    content: bool = False
    #: Owner, group, mode or times changed: check the policy, do not re-extract.
    attrib: bool = False
    #: A delete or rename away was seen (if the path is still there, it is new).
    gone: bool = False
    #: A directory whose whole subtree must be compared with the catalogue (moved in,
    #: moved away or deleted: no events are sent for the entries inside).
    subtree: bool = False
    #: The writer closed the file (or renamed it into place): no need to wait.
    closed: bool = False
    is_dir: bool = False
    #: Clock time of the first event merged into this work.
    first_seen: float = 0.0
    #: How often the work was put back because the file was not ready.
    attempts: int = 0

    def merged(self, other: Work) -> Work:
        """This work and a later one for the same path, as one."""
        return Work(
            path=self.path,
            content=self.content or other.content,
            attrib=self.attrib or other.attrib,
            gone=self.gone or other.gone,
            subtree=self.subtree or other.subtree,
            # A write after the close reopens the file: only the later work knows.
            closed=other.closed,
            is_dir=other.is_dir,
            first_seen=min(self.first_seen, other.first_seen),
            attempts=max(self.attempts, other.attempts),
        )


class Coalescer:
    """Pending work by path, each with a deadline. Not thread-safe: one owner."""

    def __init__(
        self,
        *,
        quiet_period_s: float = QUIET_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet_period_s = quiet_period_s
        self.clock = clock
        self._pending: dict[str, tuple[Work, float]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def pending(self, path: str) -> Work | None:
        entry = self._pending.get(path)
        return entry[0] if entry else None

    # -- input -------------------------------------------------------------------------

    def add(self, event: PathEvent | Moved) -> None:
        """Merge one event into the pending work of the paths it names."""
        now = self.clock()
        quiet = now + self.quiet_period_s
        if isinstance(event, Moved):
            self._merge(
                Work(event.src, gone=True, subtree=event.is_dir, is_dir=event.is_dir), now, now
            )
            self._merge(
                Work(
                    event.dest, content=True, closed=True, subtree=event.is_dir, is_dir=event.is_dir
                ),
                now,
                now,
            )
            return
        path, is_dir, kind = event.path, event.is_dir, event.kind
        if kind in (EventKind.CREATED, EventKind.MODIFIED):
            self._merge(Work(path, content=True, is_dir=is_dir), now, quiet, extend=True)
        elif kind is EventKind.CLOSED_WRITE:
            self._merge(Work(path, content=True, closed=True, is_dir=is_dir), now, now)
        elif kind is EventKind.MOVED_TO:
            work = Work(path, content=True, closed=True, subtree=is_dir, is_dir=is_dir)
            self._merge(work, now, now)
        elif kind in (EventKind.DELETED, EventKind.MOVED_FROM):
            self._merge(Work(path, gone=True, subtree=is_dir, is_dir=is_dir), now, now)
        elif kind is EventKind.ATTRIB:
            self._merge(Work(path, attrib=True, is_dir=is_dir), now, quiet, extend=False)

    def add_work(self, work: Work, *, delay: float = 0.0) -> None:
        """Merge work that did not come from an event (a reconcile, a rescan), due after
        ``delay`` seconds (or sooner, if already due sooner)."""
        now = self.clock()
        self._merge(replace(work, first_seen=work.first_seen or now), now, now + delay)

    def defer(self, work: Work, delay: float) -> None:
        """Put back work that could not be done yet (the writer is not finished, or the
        path is being processed): due again after ``delay``, merged with anything newer."""
        now = self.clock()
        work = replace(work, attempts=work.attempts + 1)
        entry = self._pending.get(work.path)
        if entry is not None:
            newer, deadline = entry
            self._set(work.merged(newer), max(deadline, now + delay))
        else:
            self._set(work, now + delay)

    def _merge(self, work: Work, now: float, deadline: float, *, extend: bool = False) -> None:
        if not work.first_seen:
            work = replace(work, first_seen=now)
        entry = self._pending.get(work.path)
        if entry is None:
            self._set(work, deadline)
            return
        old, old_deadline = entry
        merged = old.merged(work)
        if work.closed:
            new_deadline = min(old_deadline, deadline)
        elif extend:
            # A new write: the quiet period starts again, and a close seen before no
            # longer says the content is final.
            new_deadline = max(old_deadline, deadline)
            merged = replace(merged, closed=False)
        else:
            # Attributes, deletes, rescans: never later than already due; a close seen
            # before still holds.
            new_deadline = min(old_deadline, deadline)
            merged = replace(merged, closed=old.closed or work.closed)
        self._set(merged, new_deadline)

    def _set(self, work: Work, deadline: float) -> None:
        self._pending[work.path] = (work, deadline)
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, work.path))

    # -- output ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The clock time the next work is due, or None when nothing is pending."""
        while self._heap:
            deadline, _, path = self._heap[0]
            entry = self._pending.get(path)
            if entry is not None and entry[1] == deadline:
                return deadline
            heapq.heappop(self._heap)  # stale: superseded or taken
        return None

    def due(self, limit: int | None = None, *, now: float | None = None) -> list[Work]:
        """Take the work that is due (at most ``limit``), earliest first."""
        now = self.clock() if now is None else now
        out: list[Work] = []
        while self._heap and (limit is None or len(out) < limit):
            deadline, _, path = self._heap[0]
            entry = self._pending.get(path)
            if entry is None or entry[1] != deadline:
                heapq.heappop(self._heap)
                continue
            if deadline > now:
                break
            heapq.heappop(self._heap)
            del self._pending[path]
            out.append(entry[0])
        return out

    def take_all(self) -> list[Work]:
        """Take everything pending, due or not (used when stopping)."""
        out = [work for work, _ in sorted(self._pending.values(), key=lambda e: e[1])]
        self._pending.clear()
        self._heap.clear()
        return out
