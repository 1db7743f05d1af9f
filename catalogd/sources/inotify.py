"""A thin recursive inotify source: the fallback when fanotify cannot be used.

inotify watches one directory at a time, so this layer keeps one watch per directory
under the root and adds watches as directories appear. The rules that make it lose
nothing it could have seen:

- A new directory's watch is added *before* it is listed, and an event is synthesised
  for each entry the listing finds (files created between ``mkdir`` and the watch
  would otherwise never be reported). Subdirectories are handled the same way, all the
  way down.
- ``IN_MOVED_FROM``/``IN_MOVED_TO`` are paired by cookie into one ``Moved``; a
  watched directory that moves keeps its watches (their paths are rewritten); one
  that leaves the tree loses them; one that arrives is watched and listed as new.
- ``IN_Q_OVERFLOW`` (events lost): every directory is watched again, then an
  ``Overflow`` tells the consumer to rescan.
- ``ENOSPC`` from ``inotify_add_watch`` (the ``fs.inotify.max_user_watches`` limit)
  or ``EACCES``: the directory's subtree is not watched; an ``Unwatched`` event and a
  log warning tell the consumer to poll it.

inotify sees only changes made through this node's kernel: on NFS, GPFS, Lustre or
CephFS, writes from other nodes are invisible to it.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable

from catalogd.events import Event, EventKind, Moved, Overflow, PathEvent, Unwatched
from catalogd.sources import _linux as k
from catalogd.sources.base import EventQueue, EventSource, SourceUnavailable

log = logging.getLogger(__name__)

NAME = "inotify"
#: Bytes read from the inotify descriptor at once (whole events only).
READ_SIZE = 256 * 1024
#: How long an ``IN_MOVED_FROM`` waits for its ``IN_MOVED_TO`` in the next read.
MOVE_PAIR_WAIT_MS = 20
WATCH_MASK = (
    k.IN_CREATE
    | k.IN_MODIFY
    | k.IN_CLOSE_WRITE
    | k.IN_ATTRIB
    | k.IN_DELETE
    | k.IN_MOVED_FROM
    | k.IN_MOVED_TO
    | k.IN_DELETE_SELF
    | k.IN_MOVE_SELF
    | k.IN_ONLYDIR
    | k.IN_DONT_FOLLOW
    | k.IN_EXCL_UNLINK
)
MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"

_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len
_SIMPLE = (
    (k.IN_CREATE, EventKind.CREATED),
    (k.IN_MODIFY, EventKind.MODIFIED),
    (k.IN_ATTRIB, EventKind.ATTRIB),
    (k.IN_CLOSE_WRITE, EventKind.CLOSED_WRITE),
    (k.IN_DELETE, EventKind.DELETED),
)

AddWatch = Callable[[int, str, int], int]


def _watch_limit() -> str:
    try:
        with open(MAX_USER_WATCHES) as f:
            return f.read().strip()
    except OSError:
        return "?"


class InotifySource(EventSource):
    """See the module docstring. ``add_watch`` is injectable for tests (it defaults to
    the system call)."""

    name = NAME

    def __init__(
        self,
        root: str,
        events: EventQueue,
        *,
        reason: str = "",
        add_watch: AddWatch = k.inotify_add_watch,
    ) -> None:
        super().__init__(root, events, reason=reason)
        self._add_watch_call = add_watch
        try:
            self._fd = k.inotify_init1(k.IN_NONBLOCK | k.IN_CLOEXEC)
        except OSError as exc:
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise SourceUnavailable(
                f"inotify_init1: {errno.errorcode.get(exc.errno or 0, '?')} "
                f"({os.strerror(exc.errno or 0)})",
                errno=exc.errno,
            ) from exc
        self._paths: dict[int, str] = {}  # wd -> directory path
        self._wds: dict[str, int] = {}  # directory path -> wd
        #: Directories that could not be watched (their subtrees are polled).
        self.unwatched: set[str] = set()
        self._pending: tuple[int, str, bool] | None = None  # cookie, path, is_dir

    def fileno(self) -> int:
        return self._fd

    @property
    def watch_count(self) -> int:
        return len(self._paths)

    def _prepare(self) -> None:
        for event in self._watch_tree(self.root, synthesise=False):
            self._emit(event)  # only Unwatched events here

    def _release(self) -> None:
        os.close(self._fd)

    # -- watches ---------------------------------------------------------------------

    def _add_watch(self, path: str, out: list[Event]) -> bool:
        try:
            wd = self._add_watch_call(self._fd, path, WATCH_MASK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone or replaced already; its deletion is reported
            if exc.errno == errno.ENOSPC:
                reason = (
                    "inotify watch limit reached (fs.inotify.max_user_watches="
                    f"{_watch_limit()}); this subtree is polled"
                )
            else:
                reason = f"cannot watch: {os.strerror(exc.errno or 0)}; this subtree is polled"
            log.warning("inotify: %s: %s", path, reason)
            self.unwatched.add(path)
            out.append(Unwatched(path, reason, NAME))
            return False
        old = self._paths.get(wd)
        if old is not None and old != path and self._wds.get(old) == wd:
            del self._wds[old]
        self._paths[wd] = path
        self._wds[path] = wd
        self.unwatched.discard(path)
        return True

    def _watch_tree(self, top: str, *, synthesise: bool) -> list[Event]:
        """Watch ``top`` and every directory below it, each before it is listed; with
        ``synthesise``, a ``CREATED`` event for every entry found below ``top``."""
        out: list[Event] = []
        stack = [top]
        while stack:
            directory = stack.pop()
            if not self._add_watch(directory, out):
                continue
            try:
                listing = os.scandir(directory)
            except OSError:
                continue  # vanished (reported by its parent) or unreadable
            with listing:
                for entry in listing:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if synthesise:
                        out.append(
                            PathEvent(EventKind.CREATED, entry.path, is_dir, NAME, synthetic=True)
                        )
                    if is_dir:
                        stack.append(entry.path)
        return out

    def _forget_tree(self, top: str) -> None:
        """Drop the watches on ``top`` and below (it left the tree)."""
        prefix = top + os.sep
        for path in [p for p in self._wds if p == top or p.startswith(prefix)]:
            wd = self._wds.pop(path)
            self._paths.pop(wd, None)
            try:
                k.inotify_rm_watch(self._fd, wd)
            except OSError:
                pass  # already gone (IN_IGNORED on its way)
        self.unwatched = {p for p in self.unwatched if not (p == top or p.startswith(prefix))}

    def _rename_tree(self, src: str, dest: str) -> bool:
        """Rewrite the paths of watches below ``src`` to be below ``dest``. False if
        ``src`` was not watched."""
        if src not in self._wds:
            return False
        prefix = src + os.sep
        moved = [p for p in self._wds if p == src or p.startswith(prefix)]
        for path in moved:
            wd = self._wds.pop(path)
            new = dest + path[len(src) :]
            self._wds[new] = wd
            self._paths[wd] = new
        return True

    # -- reading ---------------------------------------------------------------------

    def _poll_timeout_ms(self) -> int | None:
        return MOVE_PAIR_WAIT_MS if self._pending is not None else None

    def _idle(self) -> list[Event]:
        out: list[Event] = []
        self._flush_pending(out)
        return out

    def _read(self) -> list[Event]:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return []
        out: list[Event] = []
        offset = 0
        end = len(data)
        unpack = _HEADER.unpack_from
        size = _HEADER.size
        while offset < end:
            wd, mask, cookie, length = unpack(data, offset)
            offset += size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            self._handle(wd, mask, cookie, name, out)
        return out

    def _handle(self, wd: int, mask: int, cookie: int, name: bytes, out: list[Event]) -> None:
        if mask & k.IN_Q_OVERFLOW:
            self._flush_pending(out)
            self._overflow(out)
            return
        if self._pending is not None and not (mask & k.IN_MOVED_TO and cookie == self._pending[0]):
            self._flush_pending(out)
        if mask & k.IN_IGNORED:
            path = self._paths.pop(wd, None)
            if path is not None and self._wds.get(path) == wd:
                del self._wds[path]
            return
        directory = self._paths.get(wd)
        if directory is None:
            return  # a watch already forgotten
        is_dir = bool(mask & k.IN_ISDIR)
        if not name:  # an event on the watched directory itself
            if directory == self.root and mask & (k.IN_DELETE_SELF | k.IN_MOVE_SELF):
                kind = EventKind.DELETED if mask & k.IN_DELETE_SELF else EventKind.MOVED_FROM
                out.append(PathEvent(kind, self.root, True, NAME))
            elif mask & k.IN_UNMOUNT:
                self._overflow(out)
            return
        path = os.path.join(directory, os.fsdecode(name))
        if mask & k.IN_MOVED_FROM:
            self._pending = (cookie, path, is_dir)
            return
        if mask & k.IN_MOVED_TO:
            if self._pending is not None:  # the pair (checked above)
                src = self._pending[1]
                self._pending = None
                out.append(Moved(src, path, is_dir, NAME))
                if is_dir and not self._rename_tree(src, path):
                    out.extend(self._watch_tree(path, synthesise=True))
                return
            out.append(PathEvent(EventKind.MOVED_TO, path, is_dir, NAME))
            if is_dir:
                out.extend(self._watch_tree(path, synthesise=True))
            return
        for bit, kind in _SIMPLE:
            if mask & bit:
                out.append(PathEvent(kind, path, is_dir, NAME))
        if is_dir and mask & k.IN_CREATE:
            out.extend(self._watch_tree(path, synthesise=True))

    def _flush_pending(self, out: list[Event]) -> None:
        if self._pending is None:
            return
        _, path, is_dir = self._pending
        self._pending = None
        out.append(PathEvent(EventKind.MOVED_FROM, path, is_dir, NAME))
        if is_dir:
            self._forget_tree(path)

    def _overflow(self, out: list[Event]) -> None:
        """Events were lost: watch every directory again, then ask for a rescan."""
        log.warning("inotify: event queue overflowed under %s; rescan needed", self.root)
        out.extend(self._watch_tree(self.root, synthesise=False))
        out.append(Overflow(self.root, NAME, "inotify event queue overflowed (IN_Q_OVERFLOW)"))
