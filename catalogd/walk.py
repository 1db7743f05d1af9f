"""A parallel tree walk: os.scandir and lstat in a small thread pool.

Yields the root and every entry below it, each with its ``lstat`` result. Symbolic
links are never followed (they are yielded as links). Directories on another file
system than the root's are yielded but not entered unless ``cross_mounts``. Entries
that vanish during the walk are skipped. A directory that cannot be listed is yielded a
second time, with the error (and its stat result when it has one), so callers can
report it; an entry that cannot be stat'ed is yielded with the error and no stat.
Order is not guaranteed.

Listing is I/O bound and releases the GIL, so a few threads keep several directory
reads in flight, which is what network and parallel file systems need.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_WORKERS = 4
#: How many entries a worker hands over at once (fewer queue operations).
CHUNK = 256

Scandir = Callable[[str], "os._ScandirIterator[str]"]
Lstat = Callable[[str], os.stat_result]


@dataclass(frozen=True, slots=True)
class WalkEntry:
    path: str
    stat: os.stat_result | None
    error: OSError | None
    is_dir: bool


def walk(
    root: str,
    *,
    workers: int = DEFAULT_WORKERS,
    cross_mounts: bool = False,
    scandir: Scandir = os.scandir,
    lstat: Lstat = os.lstat,
) -> Iterator[WalkEntry]:
    """Walk ``root`` (see the module docstring). Raises OSError if the root itself
    cannot be stat'ed."""
    root_stat = lstat(root)
    root_is_dir = stat.S_ISDIR(root_stat.st_mode)
    yield WalkEntry(root, root_stat, None, root_is_dir)
    if not root_is_dir:
        return
    walker = _Walker(
        workers=workers,
        root_dev=None if cross_mounts else root_stat.st_dev,
        scandir=scandir,
        lstat=lstat,
    )
    yield from walker.run(root)


class _Walker:
    def __init__(self, *, workers: int, root_dev: int | None, scandir: Scandir, lstat: Lstat):
        self._workers = max(1, workers)
        self._root_dev = root_dev
        self._scandir = scandir
        self._lstat = lstat
        self._dirs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._out: queue.Queue[list[WalkEntry] | None] = queue.Queue(maxsize=64)
        self._pending = 0  # directories queued or being listed
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, root: str) -> Iterator[WalkEntry]:
        self._pending = 1
        self._dirs.put(root)
        threads = [
            threading.Thread(target=self._work, name=f"catalogd-walk-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for thread in threads:
            thread.start()
        finished = 0
        try:
            while finished < self._workers:
                chunk = self._out.get()
                if chunk is None:
                    finished += 1
                    continue
                yield from chunk
        finally:
            self._stop.set()
            for _ in threads:
                self._dirs.put(None)
            # Unblock workers waiting to hand over output, then wait for them.
            while any(t.is_alive() for t in threads):
                try:
                    self._out.get(timeout=0.05)
                except queue.Empty:
                    pass
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                directory = self._dirs.get()
                if directory is None:
                    break
                try:
                    self._list(directory)
                finally:
                    with self._lock:
                        self._pending -= 1
                        done = self._pending == 0
                    if done:
                        for _ in range(self._workers):
                            self._dirs.put(None)
        finally:
            self._out.put(None)

    def _list(self, directory: str) -> None:
        chunk: list[WalkEntry] = []
        try:
            with self._scandir(directory) as entries:
                for entry in entries:
                    path = entry.path
                    try:
                        st = self._lstat(path)
                    except FileNotFoundError:
                        continue  # vanished since the listing
                    except OSError as exc:
                        chunk.append(WalkEntry(path, None, exc, False))
                        continue
                    is_dir = stat.S_ISDIR(st.st_mode)
                    chunk.append(WalkEntry(path, st, None, is_dir))
                    if is_dir and (self._root_dev is None or st.st_dev == self._root_dev):
                        with self._lock:
                            self._pending += 1
                        self._dirs.put(path)
                    if len(chunk) >= CHUNK:
                        self._out.put(chunk)
                        chunk = []
        except FileNotFoundError:
            pass  # the directory vanished: nothing below it to report
        except OSError as exc:
            try:
                st_dir: os.stat_result | None = self._lstat(directory)
            except OSError:
                st_dir = None
            chunk.append(WalkEntry(directory, st_dir, exc, True))
        if chunk:
            self._out.put(chunk)
