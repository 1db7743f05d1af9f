"""The fanotify source: one mark on the whole file system, no per-directory watches.

``fanotify_init(FAN_REPORT_DFID_NAME)`` plus ``fanotify_mark(FAN_MARK_FILESYSTEM)``
(Linux 5.9+, CAP_SYS_ADMIN) reports creates, writes, closes, attribute changes,
deletes and renames anywhere on the root's file system, each as the *file handle of
the parent directory* plus the entry's name. Nothing has to be added when a directory
appears, so files created in a brand-new directory are never missed.

A directory handle is turned into a path with ``open_by_handle_at`` (CAP_DAC_READ_SEARCH,
on a descriptor of the root's mount) and ``/proc/self/fd``; the answers are kept in a
bounded cache, emptied whenever a directory under the root is renamed (a cached path
could be stale then; a deleted directory's entry stays right, as handles are not
reused, and lets late events in it still be named). The path is the directory's path
*now*, not when the event happened: every event is a hint to re-stat. Events outside
the root are dropped.

Renames come as one ``FAN_RENAME`` event with both ends (Linux 5.17+), so they are
reported as ``Moved`` without any pairing; on older kernels ``FAN_MOVED_FROM`` and
``FAN_MOVED_TO`` are reported unpaired. ``FAN_MARK_MOUNT`` is not a fallback: mount
marks do not support directory-entry events, so inotify is used instead.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator

from catalogd.events import Event, EventKind, Moved, Overflow, PathEvent
from catalogd.sources import _linux as k
from catalogd.sources.base import EventQueue, EventSource, SourceUnavailable

log = logging.getLogger(__name__)

NAME = "fanotify"
#: Bytes read from the fanotify descriptor at once.
READ_SIZE = 256 * 1024
#: Directory handles whose paths are remembered.
HANDLE_CACHE_SIZE = 65536
#: Tries of open_by_handle_at on errors other than "gone" (ENOMEM was seen under load).
RESOLVE_ATTEMPTS = 3
EVENT_MASK = (
    k.FAN_CREATE | k.FAN_MODIFY | k.FAN_CLOSE_WRITE | k.FAN_ATTRIB | k.FAN_DELETE | k.FAN_ONDIR
)
MOVE_MASK_RENAME = k.FAN_RENAME
MOVE_MASK_OLD = k.FAN_MOVED_FROM | k.FAN_MOVED_TO

_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO_HEADER = struct.Struct("=BBH")  # info_type, pad, len
_FSID_SIZE = 8
_HANDLE_HEADER = struct.Struct("=Ii")  # handle_bytes, handle_type
# In the order they are reported when the kernel merged several into one event.
_SIMPLE = (
    (k.FAN_CREATE, EventKind.CREATED),
    (k.FAN_MODIFY, EventKind.MODIFIED),
    (k.FAN_ATTRIB, EventKind.ATTRIB),
    (k.FAN_CLOSE_WRITE, EventKind.CLOSED_WRITE),
    (k.FAN_MOVED_FROM, EventKind.MOVED_FROM),
    (k.FAN_MOVED_TO, EventKind.MOVED_TO),
    (k.FAN_DELETE, EventKind.DELETED),
)
_NAME_RECORDS = (
    k.FAN_EVENT_INFO_TYPE_DFID_NAME,
    k.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    k.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
)


#: Information records of one event: info type -> (fsid + file handle, name). The name
#: is "." for a record without one (the directory itself).
Records = dict[int, tuple[bytes, str]]


def parse_events(data: bytes) -> Iterator[tuple[int, int, Records]]:
    """Split what a read of a ``FAN_REPORT_DFID_NAME`` group returned into
    ``(mask, fd, records)`` per event. Pure: touches no descriptor."""
    offset = 0
    end = len(data)
    while offset + _METADATA.size <= end:
        event_len, vers, _, metadata_len, mask, fd, _ = _METADATA.unpack_from(data, offset)
        if vers != k.FANOTIFY_METADATA_VERSION:
            raise ValueError(f"fanotify metadata version {vers}, expected 3")
        if event_len < metadata_len or offset + event_len > end:
            raise ValueError(f"truncated fanotify event at offset {offset}")
        records: Records = {}
        at = offset + metadata_len
        stop = offset + event_len
        while at + _INFO_HEADER.size <= stop:
            info_type, _, length = _INFO_HEADER.unpack_from(data, at)
            if length == 0:
                break
            if info_type in _NAME_RECORDS or info_type == k.FAN_EVENT_INFO_TYPE_DFID:
                hstart = at + _INFO_HEADER.size + _FSID_SIZE
                handle_bytes, _ = _HANDLE_HEADER.unpack_from(data, hstart)
                hend = hstart + _HANDLE_HEADER.size + handle_bytes
                key = data[at + _INFO_HEADER.size : hend]  # fsid + struct file_handle
                name = b"."
                if info_type in _NAME_RECORDS:
                    name = data[hend : at + length].split(b"\0", 1)[0]
                records[info_type] = (key, os.fsdecode(name))
            at += length
        yield mask, fd, records
        offset += event_len


class HandleCache:
    """A bounded, least-recently-used map from a directory's handle to its path."""

    def __init__(self, maxsize: int = HANDLE_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._map: OrderedDict[bytes, str] = OrderedDict()

    def get(self, key: bytes) -> str | None:
        path = self._map.get(key)
        if path is not None:
            self._map.move_to_end(key)
        return path

    def put(self, key: bytes, path: str) -> None:
        self._map[key] = path
        self._map.move_to_end(key)
        if len(self._map) > self.maxsize:
            self._map.popitem(last=False)

    def clear(self) -> None:
        self._map.clear()

    def __len__(self) -> int:
        return len(self._map)


def _errno_text(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


_HINTS = {
    errno.EPERM: "needs CAP_SYS_ADMIN",
    errno.EINVAL: "kernel too old for FAN_REPORT_DFID_NAME/FAN_MARK_FILESYSTEM (needs 5.9)",
    errno.ENOSYS: "kernel built without fanotify",
    errno.EXDEV: "file system with several fsids (e.g. a btrfs subvolume)",
    errno.EOPNOTSUPP: "file system cannot encode file handles",
    errno.ENODEV: "file system cannot encode file handles",
    errno.EMFILE: "too many fanotify groups (fs.fanotify.max_user_groups)",
}


def _unavailable(call: str, exc: OSError) -> SourceUnavailable:
    hint = _HINTS.get(exc.errno or 0, "")
    text = f"{call} failed: {_errno_text(exc)}" + (f"; {hint}" if hint else "")
    return SourceUnavailable(text, errno=exc.errno)


class FanotifySource(EventSource):
    """See the module docstring. Raises :class:`SourceUnavailable` (with the errno and
    the call that failed) when it cannot work here. ``unlimited_queue`` asks the kernel
    for an unbounded event queue (memory is charged to the daemon's cgroup) instead of
    ``fs.fanotify.max_queued_events``, whose overflow is reported as ``Overflow``."""

    name = NAME

    def __init__(
        self,
        root: str,
        events: EventQueue,
        *,
        reason: str = "",
        unlimited_queue: bool = False,
        cache_size: int = HANDLE_CACHE_SIZE,
    ) -> None:
        super().__init__(root, events, reason=reason)
        self._fd = -1
        self._mount_fd = -1
        self.cache = HandleCache(cache_size)
        self.pairs_renames = True
        #: Directory handles that could not be resolved (each led to an Overflow).
        self.unresolved = 0
        self._lost: str | None = None
        try:
            self._open(unlimited_queue)
        except BaseException:
            self._release()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._prefix = self.root.rstrip(os.sep) + os.sep

    def _open(self, unlimited_queue: bool) -> None:
        flags = k.FAN_CLASS_NOTIF | k.FAN_CLOEXEC | k.FAN_NONBLOCK | k.FAN_REPORT_DFID_NAME
        if unlimited_queue:
            flags |= k.FAN_UNLIMITED_QUEUE
        try:
            self._fd = k.fanotify_init(flags, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _unavailable("fanotify_init(FAN_REPORT_DFID_NAME)", exc) from exc
        mark = k.FAN_MARK_ADD | k.FAN_MARK_FILESYSTEM
        try:
            k.fanotify_mark(self._fd, mark, EVENT_MASK | MOVE_MASK_RENAME, self.root)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise _unavailable("fanotify_mark(FAN_MARK_FILESYSTEM)", exc) from exc
            try:  # before Linux 5.17: no FAN_RENAME
                k.fanotify_mark(self._fd, mark, EVENT_MASK | MOVE_MASK_OLD, self.root)
            except OSError as exc2:
                raise _unavailable("fanotify_mark(FAN_MARK_FILESYSTEM)", exc2) from exc2
            self.pairs_renames = False
        try:
            self._mount_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _unavailable(f"open({self.root})", exc) from exc
        try:  # can we turn handles back into paths (CAP_DAC_READ_SEARCH)?
            handle = k.name_to_handle_at(self.root)
            fd = k.open_by_handle_at(self._mount_fd, handle, os.O_PATH | os.O_CLOEXEC)
            os.close(fd)
        except OSError as exc:
            raise _unavailable("name_to_handle_at/open_by_handle_at on the root", exc) from exc

    def fileno(self) -> int:
        return self._fd

    def _release(self) -> None:
        for fd in (self._fd, self._mount_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._mount_fd = -1

    # -- reading ---------------------------------------------------------------------

    def _read(self) -> list[Event]:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return []
        out: list[Event] = []
        for mask, fd, records in parse_events(data):
            if fd >= 0:  # not expected with FID reporting; never leak it
                os.close(fd)
            self._handle(mask, records, out)
        if self._lost is not None:
            reason = f"open_by_handle_at failed ({self._lost}): events may be lost"
            log.warning("fanotify: %s; rescan of %s needed", reason, self.root)
            out.append(Overflow(self.root, NAME, reason))
            self._lost = None
        return out

    def _handle(self, mask: int, records: Records, out: list[Event]) -> None:
        if mask & k.FAN_Q_OVERFLOW:
            self.cache.clear()
            log.warning("fanotify: event queue overflowed; rescan of %s needed", self.root)
            out.append(Overflow(self.root, NAME, "fanotify event queue overflowed"))
            return
        is_dir = bool(mask & k.FAN_ONDIR)
        if mask & k.FAN_RENAME:
            old_full = self._full_path(records.get(k.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME))
            new_full = self._full_path(records.get(k.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME))
            old, new = self._in_root(old_full), self._in_root(new_full)
            if old is not None and new is not None:
                out.append(Moved(old, new, is_dir, NAME))
            elif old is not None:
                out.append(PathEvent(EventKind.MOVED_FROM, old, is_dir, NAME))
            elif new is not None:
                out.append(PathEvent(EventKind.MOVED_TO, new, is_dir, NAME))
            if is_dir and (old or new or old_full is None or new_full is None):
                # Cached paths at or below the directory are stale now. (Renames wholly
                # outside the root cannot change which paths are under it; deletions
                # leave cached paths right: handles are never reused.)
                self.cache.clear()
        record = records.get(k.FAN_EVENT_INFO_TYPE_DFID_NAME) or records.get(
            k.FAN_EVENT_INFO_TYPE_DFID
        )
        if mask & ~k.FAN_RENAME & ~k.FAN_ONDIR and record is not None:
            path = self._in_root(self._full_path(record))
            if path is not None:
                for bit, kind in _SIMPLE:
                    if mask & bit:
                        out.append(PathEvent(kind, path, is_dir, NAME))
            if is_dir and mask & (k.FAN_MOVED_FROM | k.FAN_MOVED_TO):
                self.cache.clear()  # before Linux 5.17: no FAN_RENAME, be careful

    def _in_root(self, path: str | None) -> str | None:
        """``path`` if it is the root or under it, else None."""
        if path is not None and (path == self.root or path.startswith(self._prefix)):
            return path
        return None

    def _full_path(self, record: tuple[bytes, str] | None) -> str | None:
        """The path of the entry a (directory handle, name) record names (under the
        root or not); None if the directory no longer exists and was not cached."""
        if record is None:
            return None
        key, name = record
        directory = self.cache.get(key)
        if directory is None:
            directory = self._resolve(key)
            if directory is None:
                return None
            self.cache.put(key, directory)
        return directory if name == "." else os.path.join(directory, name)

    def _resolve(self, key: bytes) -> str | None:
        handle = key[_FSID_SIZE:]
        flags = os.O_PATH | os.O_CLOEXEC
        for attempt in range(RESOLVE_ATTEMPTS):
            try:
                fd = k.open_by_handle_at(self._mount_fd, handle, flags)
                break
            except OSError as exc:
                if exc.errno in (errno.ESTALE, errno.ENOENT):
                    return None  # the directory is gone; so is what the event named
                if attempt + 1 == RESOLVE_ATTEMPTS:
                    # Cannot tell whether the event was under the root: never drop it
                    # silently. One Overflow per read batch says "rescan".
                    self.unresolved += 1
                    self._lost = _errno_text(exc)
                    return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.endswith(" (deleted)") and os.fstat(fd).st_nlink == 0:
                return None
            return path
        finally:
            os.close(fd)
