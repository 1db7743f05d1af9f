"""Helpers for tests and benchmarks of event sources (no pytest needed).

- :class:`Recorder` drains a source's queue until a condition over everything seen so
  far holds, or a deadline passes: the way to wait for events without sleeping.
- :func:`kernel_watch_fds` lists this process's inotify and fanotify descriptors, so a
  test can check that a stopped source closed its own.
- :data:`BURST_WRITER` is the code of a child process that creates files the way an
  acquisition does (open, write, close), for bursts that do not share our GIL.
"""

from __future__ import annotations

import os
import queue
import time
from collections import defaultdict
from collections.abc import Callable

from catalogd.events import Event, EventKind, Moved, Overflow, PathEvent, Unwatched

#: How long one ``get`` blocks while waiting for a condition.
GET_SLICE_S = 0.05


class Recorder:
    """Everything a queue delivered, indexed by path and kind."""

    def __init__(self, events: queue.Queue[Event]) -> None:
        self.queue = events
        self.all: list[Event] = []
        self.kinds: defaultdict[str, set[EventKind]] = defaultdict(set)
        self.synthetic: set[str] = set()
        self.counts: defaultdict[EventKind, int] = defaultdict(int)
        self.moves: list[Moved] = []
        self.overflows: list[Overflow] = []
        self.unwatched: list[Unwatched] = []

    def _record(self, event: Event) -> None:
        self.all.append(event)
        if isinstance(event, PathEvent):
            self.kinds[event.path].add(event.kind)
            self.counts[event.kind] += 1
            if event.synthetic:
                self.synthetic.add(event.path)
        elif isinstance(event, Moved):
            self.moves.append(event)
        elif isinstance(event, Overflow):
            self.overflows.append(event)
        elif isinstance(event, Unwatched):
            self.unwatched.append(event)

    def drain(self) -> None:
        """Record what is in the queue now, without waiting."""
        while True:
            try:
                self._record(self.queue.get_nowait())
            except queue.Empty:
                return

    def wait(self, condition: Callable[[Recorder], bool], timeout: float) -> bool:
        """Record events until ``condition(self)`` is true (True) or ``timeout``
        seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                event = self.queue.get(timeout=min(GET_SLICE_S, left))
            except queue.Empty:
                continue
            self._record(event)
            self.drain()
        return True

    def saw(self, path: str, kind: EventKind) -> bool:
        return kind in self.kinds.get(path, ())

    def since(self, index: int) -> list[Event]:
        return self.all[index:]


def all_complete(paths: list[str]) -> Callable[[Recorder], bool]:
    """A condition for :meth:`Recorder.wait`: every path was reported closed after
    writing, or found by listing a new directory (a synthetic create: its close may
    have come before the watch). Incremental, so it stays cheap for 50,000 paths."""
    remaining = set(paths)
    checked = 0

    def condition(recorder: Recorder) -> bool:
        nonlocal checked
        for event in recorder.all[checked:]:
            if isinstance(event, PathEvent) and (
                event.kind is EventKind.CLOSED_WRITE or event.synthetic
            ):
                remaining.discard(event.path)
        checked = len(recorder.all)
        return not remaining

    return condition


def kernel_watch_fds() -> list[str]:
    """This process's open inotify/fanotify descriptors, as ``fd:target``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "inotify" in target or "fanotify" in target:
            found.append(f"{fd}:{target}")
    return found


#: Run with ``python -c BURST_WRITER DIR N [SIZE]``: create DIR (it must not exist)
#: and write N files of SIZE bytes into it, each opened, written and closed.
BURST_WRITER = """
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
data = b"x" * (int(sys.argv[3]) if len(sys.argv) > 3 else 64)
os.mkdir(d)
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
for i in range(n):
    fd = os.open(os.path.join(d, "f%06d.h5" % i), flags, 0o640)
    os.write(fd, data)
    os.close(fd)
"""


def burst_paths(directory: str, n: int) -> list[str]:
    """The paths :data:`BURST_WRITER` creates."""
    return [os.path.join(directory, f"f{i:06d}.h5") for i in range(n)]
